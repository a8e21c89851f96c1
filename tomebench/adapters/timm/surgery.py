"""timm's VisionTransformer (ViT, DeiT, DeiT-III, registers, MAP and average-pool heads): the surgery.

Follows timm >= 1.0 `Block` / `Attention`: LayerScale (ls1/ls2), drop-path, q/k norm, the attention output norm
and gate where present; `num_prefix_tokens` covers cls, distillation and register tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import ADAPTERS, Adapter, PatchedForward, loaded_class, weighted_mean
from tomebench.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn


class _TimmForward(PatchedForward):
    """timm's forward and forward_features, reducing tokens; masks cannot follow a shrinking sequence."""

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        return self._tome_tokens(x)[0]

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        return self._tome_logits(x)


def _refuse_masks(attn_mask: Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise NotImplementedError("token reduction changes the sequence, so attention masks cannot be applied")


class TimmAdapter(Adapter):
    def handles(self, cls: type) -> bool:
        base = loaded_class("timm.models.vision_transformer", "VisionTransformer")
        return base is not None and issubclass(cls, base)

    def check(self, model: nn.Module) -> None:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        for i, block in enumerate(model.blocks):
            if not isinstance(block, Block) or not isinstance(block.attn, Attention):
                raise UsageError(
                    f"block {i} is a {type(block).__name__} with {type(getattr(block, 'attn', None)).__name__}; "
                    "tomebench supports timm's standard pre-norm Block with Attention."
                )

    def forward_mixin(self, model_class: type) -> type:
        return _TimmForward

    def blocks(self, model: nn.Module) -> nn.Module:
        return model.blocks

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))

    def has_cls(self, model: nn.Module) -> bool:
        return getattr(model, "cls_token", None) is not None  # timm puts it first among the prefix tokens

    def grid_size(self, model: nn.Module) -> tuple[int, int]:
        return tuple(model.patch_embed.grid_size)

    def num_classes(self, model: nn.Module) -> int:
        return int(getattr(model, "num_classes", 0) or 0)

    def default_prop_attn(self, model: nn.Module) -> bool:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        names = f"{cfg.get('architecture', '')}.{cfg.get('tag', '')}".lower()
        return "mae" not in names

    def embed(self, model: nn.Module, images: Tensor, **kwargs: Any) -> Tensor:
        x = model.patch_embed(images)
        x = model._pos_embed(x)  # (B, N, C), prefix tokens first
        x = model.patch_drop(x)
        return model.norm_pre(x)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attn

    def attn_input(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.norm1(x)

    def qkv(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv.unbind(0)
        return attn.q_norm(q), attn.k_norm(k), v

    def queries_keys(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
        from torch.nn.functional import linear

        b, n, _ = h.shape
        d = attn.num_heads * attn.head_dim
        weight, bias = attn.qkv.weight[: 2 * d], None if attn.qkv.bias is None else attn.qkv.bias[: 2 * d]
        qk = linear(h, weight, bias).reshape(b, n, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = qk.unbind(0)  # (B, H, N, D) each
        return attn.q_norm(q), attn.k_norm(k)

    def values(self, attn: nn.Module, h: Tensor) -> Tensor:
        from torch.nn.functional import linear

        b, n, _ = h.shape
        d = attn.num_heads * attn.head_dim
        weight, bias = attn.qkv.weight[2 * d :], None if attn.qkv.bias is None else attn.qkv.bias[2 * d :]
        return linear(h, weight, bias).reshape(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, N, D)

    def attn_scale(self, attn: nn.Module) -> float:
        return getattr(attn, "scale", attn.head_dim**-0.5)

    def attn_dropout(self, attn: nn.Module) -> float:
        return attn.attn_drop.p if attn.training else 0.0

    def attn_output(self, attn: nn.Module, out: Tensor, h: Tensor) -> Tensor:
        norm = getattr(attn, "norm", None)  # timm's optional attention-output norm (scale_norm); Identity when off
        if norm is not None:
            out = norm(out)
        gate = getattr(attn, "gate", None)
        if gate is not None:
            out = out * gate(h).sigmoid()
        return attn.proj_drop(attn.proj(out))

    def attn_residual(self, block: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        return x + block.drop_path1(block.ls1(out))

    def mlp_residual(self, block: nn.Module, x: Tensor) -> Tensor:
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def final_norm(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.norm(x)

    def head(self, model: nn.Module, x: Tensor, size: Tensor | None) -> Tensor:
        """Average pooling weighs tokens by size; token and MAP (attention-pool) heads run timm's own head."""
        pooling = getattr(model, "global_pool", "token")
        if size is None or getattr(model, "attn_pool", None) is not None or pooling not in ("avg", "avgmax"):
            return model.forward_head(x)
        if not getattr(model, "pool_include_prefix", False):
            p = self.num_prefix_tokens(model)
            x, size = x[:, p:], size[:, p:]
        pooled = weighted_mean(x, size)  # (B, C)
        if pooling == "avgmax":
            pooled = 0.5 * (x.amax(dim=1) + pooled)
        return model.head(model.head_drop(model.fc_norm(pooled)))

    def architecture(self, model: nn.Module) -> str:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return str(cfg.get("architecture", ""))

    def attn_impl(self, model: nn.Module) -> str:
        return "fused" if all(getattr(block.attn, "fused_attn", False) for block in model.blocks) else "eager"


TIMM = ADAPTERS.register("timm", description="timm VisionTransformer")(TimmAdapter())
