"""DCT token reduction: low-pass resampling of the token sequence with an orthonormal DCT after every block's MLP,
as PiToMe ports the Fourier Transformer's spectral filter to ViTs (He et al., NeurIPS 2023, "Fourier Transformer:
Fast Long Range Modeling by Removing Sequence Redundancy with FFT Operator"; hchautran/PiToMe `algo/dct`).

Per block (the port's `DCTBlock.forward`, then `dc_transform`): the T non-prefix tokens are taken to the frequency
domain along the token axis (DCT-II, orthonormal), the lowest ceil(T * ratio) coefficients kept, and taken back
with the orthonormal inverse of that shorter length. The whole step is linear in the tokens, so it is one (M, T)
matrix, M = ceil(T * ratio): tokens' = idct_M(dct_T(tokens)[:M]) = D_M^T D_T[:M] tokens, where D_n is the n x n
orthonormal DCT-II matrix. tomebench applies that matrix (a matmul, which torch's FLOP counter counts and
torch.compile traces) instead of the port's FFT route; the two agree to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Plan, Resample, no_autocast


def dct_matrix(n: int, dtype: torch.dtype, device: torch.device | str | None = None) -> Tensor:
    """(n, n) orthonormal DCT-II: D[k, i] = s_k cos(pi (2i + 1) k / 2n), s_0 = sqrt(1/n), s_k = sqrt(2/n); D^T is
    its inverse (what `norm='ortho'` means in the authors' `dct` / `idct`)."""
    k = torch.arange(n, dtype=dtype, device=device)[:, None]  # (n, 1) frequency
    i = torch.arange(n, dtype=dtype, device=device)[None, :]  # (1, n) token position
    scale = torch.full((n, 1), math.sqrt(2 / n), dtype=dtype, device=device)
    scale[0] = math.sqrt(1 / n)  # the DC row
    return scale * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))


def lowpass(t: int, m: int, dtype: torch.dtype, device: torch.device | str | None = None) -> Tensor:
    """(m, t) the low-pass resampling of t tokens to m: the DCT of length t, its m lowest coefficients, the inverse
    DCT of length m (m <= t)."""
    with no_autocast(torch.device(device or "cpu").type):  # built in `dtype`, never autocast's lower precision
        return dct_matrix(m, dtype, device).T @ dct_matrix(t, dtype, device)[:m]


def kept(t: int, ratio: float) -> int:
    """The tokens the port keeps of t: ceil(t * ratio), in Python floats as the port computes it; ratio 1 (or
    more) leaves the block alone (its `if ratio < 1.0`)."""
    return math.ceil(t * ratio) if ratio < 1.0 else t


def _budget(options: dict, layout: Layout) -> tuple[int, ...]:
    """The tokens each block removes: the port applies the same ratio after every block to what is left."""
    t = layout.num_tokens - layout.num_prefix_tokens
    removed = []
    for _ in range(layout.depth):
        m = kept(t, options["ratio"])
        removed.append(t - m)
        t = m
    return tuple(removed)


def _most(n: int, p: int) -> int:
    """At least one non-prefix token is left (ceil of a positive ratio never keeps fewer)."""
    return max(n - p - 1, 0)


@register(
    "dct",
    kind="resample",
    acts="after-mlp",
    needs=("x",),
    knob="ratio",
    prop_attn=False,
    budget=_budget,
    most=_most,
    source="hchautran/PiToMe@550b5de algo/dct/merge.py dc_transform; algo/dct/patch/timm.py DCTBlock "
    "(after LUMIA-Group/FourierTransformer@cba1dc2 Summarization/transformer_dct/transformer_encoder.py dc_transform)",
)
def dct(tokens: LayerTokens, r: int, ratio: Annotated[float, Range(0.01, 1.0)] = 0.9) -> Plan:
    """DCT low-pass resampling after the MLP: the T non-prefix tokens become their ceil(T * ratio) lowest DCT terms.

    ratio is the knob: the budget (`_budget`) turns it into the r each block removes, r = T - ceil(T * ratio), so
    the plan only needs r: the T non-prefix tokens of x (B, N, C) become T - r, prefix tokens untouched in front.
    """
    x = tokens.x if tokens.x is not None else tokens.metric
    p = tokens.num_prefix_tokens
    t = x.shape[1] - p
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # the authors' DCT runs in float32
    return Resample(lowpass(t, t - r, work, x.device), p)
