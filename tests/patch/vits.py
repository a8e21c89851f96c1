"""Small random-weight timm models of every layout the loop must handle (cls, distillation, registers, no prefix,
LayerScale, q/k norms, MAP pooling, gated attention), with weights that make a dropped branch show."""

from __future__ import annotations

import timm
import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer

IMG = 64  # 4 x 4 patches of 16 px: 16 patch tokens + prefix


def build(name: str, seed: int = 0, **kwargs) -> VisionTransformer:
    """A small random-weight timm model in eval mode; LayerScale gammas and norm affines made non-trivial."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "gamma", None), torch.nn.Parameter):
                module.gamma.uniform_(-1.5, 1.5)  # far from 1e-5 init, so a dropped LayerScale shows
            if isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def images(model: VisionTransformer, batch: int = 2, seed: int = 1) -> torch.Tensor:
    h, w = model.patch_embed.img_size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


class GatedAttention(Attention):
    """timm Attention with its optional sigmoid output gate switched on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, gated=True, **kwargs)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


MODELS = {
    "vit_cls": ("test_vit", dict(img_size=IMG)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=IMG, depth=2)),
    "deit3_layerscale": ("deit3_small_patch16_224", dict(img_size=IMG, depth=2)),
    "vit2_registers_avg": ("test_vit2", dict(img_size=IMG)),
    "vit_avg_no_prefix": ("test_vit", dict(img_size=IMG, class_token=False, global_pool="avg")),
    "vit_avgmax_regs": ("test_vit", dict(img_size=IMG, reg_tokens=2, global_pool="avgmax")),
    "vit3_map_pool": ("test_vit3", dict(img_size=IMG)),
    "vit_qk_norm": ("test_vit", dict(img_size=IMG, qk_norm=True)),
    "vit_attn_out_norm": ("test_vit", dict(img_size=IMG, scale_attn_norm=True, init_values=0.1)),
    "vit_gated_attn": ("test_vit", dict(img_size=IMG, attn_layer=GatedAttention)),
}
