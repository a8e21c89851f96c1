"""The demo ViT, registered with timm as `tomebench_demo_vit.digits`, weights bundled in the package.

Registering it with timm means the demo goes through exactly the path a real model takes: `timm.create_model`
builds it, loads the pretrained file named in its pretrained cfg, and `resolve_data_config` reads its
preprocessing from that cfg.
"""

from __future__ import annotations

from pathlib import Path

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from tomebench.demo import ARCHITECTURE, NAME  # noqa: F401  (NAME: re-exported)

WEIGHTS = Path(__file__).with_name("demo_vit.safetensors")

# 32x32 input in 4x4 patches: 64 patch tokens + 1 class token = 65 tokens, so r up to 8 per layer over 8 blocks.
DEMO_VIT_KWARGS = dict(
    img_size=32,
    patch_size=4,
    in_chans=3,
    num_classes=10,
    embed_dim=64,
    depth=8,
    num_heads=4,
    mlp_ratio=2.0,
    class_token=True,
    global_pool="token",
)

# The 8x8 digits are upsampled to 32x32 by timm's eval transform; crop_pct=1 keeps the whole digit.
DEMO_DATA_CFG = dict(
    input_size=(3, 32, 32),
    interpolation="bicubic",
    crop_pct=1.0,
    crop_mode="center",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)

# timm's register_model reads this module-level name to learn the pretrained tag.
default_cfgs = generate_default_cfgs(
    {
        NAME: dict(
            file=str(WEIGHTS),
            num_classes=10,
            first_conv="patch_embed.proj",
            classifier="head",
            license="apache-2.0",
            **DEMO_DATA_CFG,
        )
    }
)


@register_model
def tomebench_demo_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Depth-8, width-64 ViT for 32x32 digits (about 0.29 M parameters), trained by `tomebench train-demo`."""
    return build_model_with_cfg(
        VisionTransformer,
        ARCHITECTURE,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **{**DEMO_VIT_KWARGS, **kwargs},
    )
