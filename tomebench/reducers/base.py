"""The reducer interface: what a reducer sees of one block, and how its plan is applied to tokens.

A reducer is a pure function `fn(tokens: LayerTokens, r: int, **options) -> Merge`. It decides, under
`no_grad`, which tokens to combine or drop and returns a `Merge` closure that applies that plan to any
(B, N, C) tensor laid out like the tokens (features, sizes, sources). Merging and pruning share this one
interface, so every reducer removes exactly the same number of tokens per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from tomebench.registry import Registry


class Merge(Protocol):
    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        """(B, N, C) -> (B, N - r, C); `mode` is how combined tokens reduce ("sum", "mean", "amax")."""
        ...


@dataclass(frozen=True)
class LayerTokens:
    """What a reducer may look at in one block. Prefix tokens (cls, distillation, registers) come first.

    metric: (B, N, C) similarity features, by default the keys averaged over heads.
    size: (B, N, 1) how many input patches each token stands for; None while no token was merged.
    layer: the block's index, so seeded reducers draw different numbers in different blocks.
    cls_attention: computes (B, N), the attention the cls token pays each token in this block (mean over heads,
        proportional attention applied); None when the model has no cls token. One (1 x N) row per head, so the
        block's own attention stays a fused SDPA call.
    mean_attention: computes (B, N), the attention each token receives, averaged over heads and queries. Needs
        the full (N x N) attention, so it is eager; for models without a cls token.
    features: features(kind, heads) computes (B, N, C') other similarity features: kind "k", "q", "v" (per head,
        heads "mean" averaged -> C' = D or "concat" -> C' = H * D) or "x" (the block's input tokens, C' = C).
    These are computed only when a reducer calls them.
    """

    metric: Tensor
    size: Tensor | None
    num_prefix_tokens: int
    layer: int = 0
    cls_attention: Callable[[], Tensor] | None = None
    mean_attention: Callable[[], Tensor] | None = None
    features: Callable[[str, str], Tensor] | None = None


Reducer = Callable[..., Merge]

REDUCERS: Registry[Reducer] = Registry("reducer")


def do_nothing(x: Tensor, mode: str = "sum") -> Tensor:
    """The Merge of a layer that removes nothing."""
    return x


_MASK32 = 0xFFFFFFFF


def _hash32(x):
    """A bijective 32-bit integer hash (two xorshift-multiply rounds); works on Python ints and int64 tensors. Every
    intermediate stays below 2^60, so int64 never overflows and right shifts are on non-negative numbers."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def seeded_keys(seed: int, n: int, device: torch.device | str | None = None) -> Tensor:
    """(n,) distinct pseudo-random int64 keys for positions 0..n-1, a function of (seed, n) alone.

    Seeded reducers draw once per block and share the draw across the batch, so an image's tokens never depend on
    its place in the batch. The keys come from a counter-based hash rather than a stateful generator: integer
    arithmetic is exact, so every device draws the same keys, and torch.compile traces it without a graph break.
    Ranking the keys gives a random order (no ties: the hash is a bijection).
    """
    key = _hash32(int(seed) & _MASK32)
    return _hash32((torch.arange(n, device=device, dtype=torch.int64) + key) & _MASK32)


def max_r(num_tokens: int, num_prefix_tokens: int) -> int:
    """The most tokens one layer can remove: bipartite matching pairs at most half the non-prefix tokens."""
    return max(num_tokens - num_prefix_tokens, 0) // 2


def merge_tokens(
    merge: Merge, x: Tensor, size: Tensor | None, source: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Apply a plan to features (size-weighted average, unless the plan's `combine` says otherwise), sizes (sum)
    and sources (union).

    x: (B, N, C); size: (B, N, 1) or None for all ones; source: (B, N, N0) 0/1 map to input tokens, or None.
    Returns x (B, N - r, C), size (B, N - r, 1), source (B, N - r, N0) or None. For a pruning plan (a gather)
    this reduces to keeping the selected rows unchanged.
    """
    if size is None:
        size = torch.ones_like(x[..., :1])
    combine = getattr(merge, "combine", "weighted")  # tome's ablation options; every other plan is weighted
    if combine == "weighted":
        x = merge(x * size, "sum")
        size = merge(size, "sum")
        x = x / size
    else:  # plain average, max pool or keep one; sizes still add up, for proportional attention
        x = merge(x, {"mean": "mean", "max": "amax", "keep": "keep"}[combine])
        size = merge(size, "sum")
    if source is not None:
        source = merge(source, "amax")
    return x, size, source
