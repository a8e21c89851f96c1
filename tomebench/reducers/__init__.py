"""Registered token reducers. Importing this package registers the built-in ones."""

from tomebench.reducers import kmeans as _kmeans  # noqa: F401  (registers "kmeans")
from tomebench.reducers import prune as _prune  # noqa: F401  (registers "prune", "attn-prune")
from tomebench.reducers import tome as _tome  # noqa: F401  (registers "tome", "none")
from tomebench.reducers.base import REDUCERS, LayerTokens, Merge, Reducer, do_nothing, max_r, merge_tokens

__all__ = ["REDUCERS", "LayerTokens", "Merge", "Reducer", "do_nothing", "max_r", "merge_tokens"]
