"""Registered token reducers: every module of this package (one file per reducer) and the plug-ins of the
`tomebench.reducers` entry point group register themselves when this package is imported.

A plug-in is a module in any installed package that registers a plan function, named in that package's metadata:

    [project.entry-points."tomebench.reducers"]
    my_reducer = "my_package.my_reducer"
"""

from tomebench.reducers.base import (
    REDUCERS,
    LayerTokens,
    Layout,
    ReducerSpec,
    max_r,
    reducer_spec,
    register,
    seeded_keys,
)
from tomebench.reducers.plans import (
    IDENTITY,
    Bipartite,
    BipartitePrune,
    Clusters,
    Fuse,
    Keep,
    Mlerp,
    PerImage,
    Plan,
    PruneMerge,
    Resample,
    Split,
    merge_tokens,
)
from tomebench.registry import import_submodules, load_plugins

ENTRY_POINTS = "tomebench.reducers"

import_submodules(__name__, __path__, skip=("base", "plans", "options"))
PLUGIN_ERRORS = load_plugins(ENTRY_POINTS)

__all__ = [
    "IDENTITY",
    "REDUCERS",
    "Bipartite",
    "BipartitePrune",
    "Clusters",
    "Fuse",
    "Keep",
    "LayerTokens",
    "Layout",
    "Mlerp",
    "PerImage",
    "Plan",
    "PruneMerge",
    "ReducerSpec",
    "Resample",
    "Split",
    "max_r",
    "merge_tokens",
    "reducer_spec",
    "register",
    "seeded_keys",
]
