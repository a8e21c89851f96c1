"""Registered model families. Importing this package registers the built-in ones; a family is added by adding
one adapter module here (and importing it below), touching nothing else."""

from tomebench.adapters import timm as _timm  # noqa: F401  (registers "timm")
from tomebench.adapters import torchvision as _torchvision  # noqa: F401  (registers "torchvision", alias "tv")
from tomebench.adapters import transformers as _transformers  # noqa: F401  (registers "transformers", alias "hf")
from tomebench.adapters.base import ADAPTERS, Adapter, LoadedModel, PatchedForward, adapter_for

__all__ = ["ADAPTERS", "Adapter", "LoadedModel", "PatchedForward", "adapter_for"]
