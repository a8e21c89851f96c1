"""Static per-image cost of a configuration: GFLOPs (including the reducer's own work) and final tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's counter knows the CUDA attention kernels; on CPU the dispatcher shows the composite op itself,
# which it would otherwise count as zero. A dispatch only ever sees one of the two, so nothing counts twice.
_EXTRA_FORMULAS = {
    torch.ops.aten.scaled_dot_product_attention: _sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
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
    return int(model.forward_features(image).shape[1])  # (1, N', C)
