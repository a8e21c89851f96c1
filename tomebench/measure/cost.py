"""Static per-image cost of a configuration: GFLOPs (including the reducer's own work), the tokens each block
leaves and which attention ran."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from tomebench.adapters import adapter_for
from tomebench.patch import depth, forward_with_state, is_patched, num_input_tokens, tokens_after_blocks


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flops(
    query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs
) -> int:
    """nn.MultiheadAttention's fused inference path (torchvision's ViT runs it when unpatched): the packed q/k/v
    projection, attention, and the output projection. query (B, N, C)."""
    b, n, c = query_shape
    d = c // num_heads
    heads = (b, num_heads, n, d)
    return 2 * b * n * c * 3 * c + sdpa_flop_count(heads, heads, heads) + 2 * b * n * c * c


# torch's counter knows the CUDA attention kernels; on CPU the dispatcher shows the composite op itself,
# which it would otherwise count as zero. A dispatch only ever sees one of the two, so nothing counts twice.
_EXTRA_FORMULAS = {
    torch.ops.aten.scaled_dot_product_attention: _sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
    torch.ops.aten._native_multi_head_attention: _native_mha_flops,
}


@torch.inference_mode()
def count_gflops(model: nn.Module, image: Tensor) -> float:
    """GFLOPs of one forward on `image` (1, 3, H, W), counted by torch's flop counter.

    The counter sees every matmul and attention call, including ToMe's similarity matmul. FLOPs are
    multiply-adds x 2 (timm's benchmark reports GMACs, half of this).
    """
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        model(image)
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def final_tokens(model: nn.Module, image: Tensor) -> int:
    """Tokens leaving the last block for `image` (1, 3, H, W), measured by running the model."""
    return int(tokens_after_blocks(model, image).shape[1])  # (1, N', C)


@torch.inference_mode()
def token_trace(model: nn.Module, image: Tensor) -> tuple[tuple[int, ...], str]:
    """(tokens after each block, the attention that ran: "fused" or "eager") for `image` (1, 3, H, W), measured by
    running the model: the budget a configuration really spent, not the one it asked for."""
    if not is_patched(model):
        return (num_input_tokens(model),) * depth(model), adapter_for(model).attn_impl(model)
    _, state = forward_with_state(model, image)
    return state.tokens, "eager" if state.eager else "fused"
