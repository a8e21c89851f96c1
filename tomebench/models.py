"""The one place that turns a model name (any family) into a model and its data config.

`NAME` is a timm name or alias (the default family), `tv:NAME` a torchvision ViT, `hf:NAME` a transformers ViT or
DeiT; the prefix picks the family's adapter, which loads the model with its weights and its own preprocessing.
Weights come from each library's hub loading, or from a local file with `checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from tomebench.adapters import ADAPTERS, Adapter, LoadedModel
from tomebench.adapters.timm import ALIASES, resolve_name
from tomebench.errors import UsageError

__all__ = ["ALIASES", "LoadedModel", "create", "describe", "family", "resolve_name"]


def family(name: str) -> tuple[Adapter, str]:
    """(the family's adapter, the name without its prefix). No prefix: timm. `tv:` and `hf:` are aliases of the
    torchvision and transformers families; an unknown prefix is a UsageError."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return ADAPTERS.get("timm"), name
    for entry in ADAPTERS:
        if prefix in (entry.name, *entry.aliases):
            return entry.obj, rest
    prefixes = ", ".join(f"{entry.obj.prefix}:" for entry in ADAPTERS if entry.obj.prefix)
    raise UsageError(f"unknown model family {prefix!r} in {name!r}; use a timm name or one of {prefixes}")


def create(name: str, pretrained: bool = True, checkpoint: Path | None = None, **model_kwargs) -> LoadedModel:
    """Build the model in eval mode. checkpoint: a local weights file to load instead of the hub; model_kwargs go
    to the family's constructor (timm.create_model, the torchvision builder, the transformers config)."""
    adapter, rest = family(name)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint file not found: {checkpoint}")
    return adapter.load(rest, pretrained, checkpoint, **model_kwargs)


def describe(name: str, from_checkpoint: bool = False) -> tuple[str, int]:
    """(the `model` a run of `name` writes in its rows, the input size), without building anything."""
    adapter, rest = family(name)
    return adapter.describe(rest, from_checkpoint)
