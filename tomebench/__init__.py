"""tomebench: what token reduction (Token Merging and friends) really buys a Vision Transformer (timm, torchvision,
transformers).

    import timm, tomebench
    model = timm.create_model("vit_base_patch16_224", pretrained=True)
    tomebench.patch(model, reducer="tome", r=16)   # in place; returns the model
    tomebench.unpatch(model)                       # exactly the original again

The API is imported on first use, so `import tomebench` (and with it every `tomebench` command, `--help` included)
does not pay for importing torch and timm. The demo ViT is registered with timm as soon as both are loaded: now, if
timm already is, else on first use of the API (`import tomebench.demo.model` registers it explicitly).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.2.0"

# name -> module that defines it; importing that module is what costs (torch, timm).
_API = {
    "patch": "tomebench.patch",
    "unpatch": "tomebench.patch",
    "forward_with_state": "tomebench.patch",
    "REDUCERS": "tomebench.reducers",
}

__all__ = ["REDUCERS", "forward_with_state", "patch", "unpatch", "__version__"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'tomebench' has no attribute {name!r}")
    importlib.import_module("tomebench.demo.model")  # registers the demo ViT with timm
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps `tomebench.patch` the function: importing the submodule `tomebench.patch` would otherwise bind the
    module to that name on the package (an eager `from tomebench.patch import patch` used to rebind it)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
if "timm" in sys.modules:
    importlib.import_module("tomebench.demo.model")
