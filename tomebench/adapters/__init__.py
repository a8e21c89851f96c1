"""Registered model families: every folder of this package is one family (its `surgery` and its `family` module
register themselves when imported), so a family is added by adding one folder, touching nothing else."""

from tomebench.adapters.base import ADAPTERS, FAMILIES, Adapter, Family, LoadedModel, PatchedForward, adapter_for
from tomebench.registry import import_submodules

import_submodules(__name__, __path__, skip=("base",))

__all__ = ["ADAPTERS", "FAMILIES", "Adapter", "Family", "LoadedModel", "PatchedForward", "adapter_for"]
