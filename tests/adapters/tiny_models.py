"""A tiny torchvision ViT registered with torchvision's model registry under a `vit_*` name, as a user's own
architecture would be."""

from __future__ import annotations

import torchvision
from torchvision.models._api import register_model  # the decorator torchvision registers its own builders with
from torchvision.models.vision_transformer import VisionTransformer

TV_NAME = "vit_tomebench_test"


def _tiny_tv(weights=None, progress=True, **kwargs) -> VisionTransformer:
    """32 px in 4 px patches (64 patches + cls), depth 4, width 32: full r = 16."""
    args = dict(image_size=32, patch_size=4, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    return VisionTransformer(**{**args, **kwargs})


if TV_NAME not in torchvision.models.list_models():
    register_model(TV_NAME)(_tiny_tv)
