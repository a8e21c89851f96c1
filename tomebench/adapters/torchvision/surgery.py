"""torchvision's VisionTransformer (vit_b_16 ... vit_h_14): the surgery.

`EncoderBlock` is pre-norm (ln_1, nn.MultiheadAttention with one packed in-projection, dropout, ln_2, MLP); the
class token is the one prefix token and the head reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import ADAPTERS, Adapter, PatchedForward, loaded_class
from tomebench.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn


class _TorchvisionForward(PatchedForward):
    def forward(self, x: Tensor) -> Tensor:
        return self._tome_logits(x)


class TorchvisionAdapter(Adapter):
    def handles(self, cls: type) -> bool:
        base = loaded_class("torchvision.models.vision_transformer", "VisionTransformer")
        return base is not None and issubclass(cls, base)

    def check(self, model: nn.Module) -> None:
        from torch import nn
        from torchvision.models.vision_transformer import EncoderBlock

        for i, block in enumerate(self.blocks(model)):
            attn = getattr(block, "self_attention", None)
            packed = isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.bias_k is None
            if not isinstance(block, EncoderBlock) or not packed or attn.add_zero_attn or not attn.batch_first:
                raise UsageError(
                    f"block {i} is a {type(block).__name__}; tomebench supports torchvision's "
                    "EncoderBlock with a batch-first nn.MultiheadAttention"
                )

    def forward_mixin(self, model_class: type) -> type:
        return _TorchvisionForward

    def blocks(self, model: nn.Module) -> nn.Module:
        return model.encoder.layers

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 1  # the class token

    def grid_size(self, model: nn.Module) -> tuple[int, int]:
        side = model.image_size // model.patch_size
        return side, side

    def num_classes(self, model: nn.Module) -> int:
        return int(model.num_classes)

    def embed(self, model: nn.Module, images: Tensor, **kwargs: Any) -> Tensor:
        import torch

        x = model._process_input(images)  # (B, N - 1, C)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N, C), class token first
        return model.encoder.dropout(x + model.encoder.pos_embedding)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.self_attention

    def attn_input(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.ln_1(x)

    def qkv(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = h.shape
        heads = attn.num_heads
        from torch.nn.functional import linear

        packed = linear(h, attn.in_proj_weight, attn.in_proj_bias)  # (B, N, 3C): q, k, v in order
        qkv = packed.reshape(b, n, 3, heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        return qkv.unbind(0)

    def queries_keys(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
        from torch.nn.functional import linear

        b, n, c = h.shape
        bias = None if attn.in_proj_bias is None else attn.in_proj_bias[: 2 * c]
        qk = linear(h, attn.in_proj_weight[: 2 * c], bias)  # (B, N, 2C): q, k
        q, k = qk.reshape(b, n, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k

    def values(self, attn: nn.Module, h: Tensor) -> Tensor:
        from torch.nn.functional import linear

        b, n, c = h.shape
        bias = None if attn.in_proj_bias is None else attn.in_proj_bias[2 * c :]
        v = linear(h, attn.in_proj_weight[2 * c :], bias)  # (B, N, C)
        return v.reshape(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, H, N, D)

    def attn_scale(self, attn: nn.Module) -> float:
        return attn.head_dim**-0.5

    def attn_dropout(self, attn: nn.Module) -> float:
        return attn.dropout if attn.training else 0.0

    def attn_output(self, attn: nn.Module, out: Tensor, h: Tensor) -> Tensor:
        return attn.out_proj(out)

    def attn_residual(self, block: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        return x + block.dropout(out)

    def mlp_residual(self, block: nn.Module, x: Tensor) -> Tensor:
        return x + block.mlp(block.ln_2(x))

    def final_norm(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.encoder.ln(x)

    def head(self, model: nn.Module, x: Tensor, size: Tensor | None) -> Tensor:
        return model.heads(x[:, 0])  # the class token; merging never moves it


TORCHVISION = ADAPTERS.register("torchvision", aliases=("tv",), description="torchvision VisionTransformer")(
    TorchvisionAdapter()
)
