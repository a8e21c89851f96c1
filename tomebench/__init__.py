"""tomebench: what token reduction (Token Merging and friends) really buys a Vision Transformer (timm, torchvision,
transformers).

    import timm, tomebench
    model = timm.create_model("vit_base_patch16_224", pretrained=True)
    tomebench.patch(model, reducer="tome", r=16)   # in place; returns the model
    tomebench.unpatch(model)                       # exactly the original again
"""

from tomebench.demo import model as _demo_model  # noqa: F401  (registers the demo ViT with timm)
from tomebench.patch import forward_with_state, patch, unpatch
from tomebench.reducers import REDUCERS

__version__ = "0.2.0"

__all__ = ["REDUCERS", "forward_with_state", "patch", "unpatch", "__version__"]
