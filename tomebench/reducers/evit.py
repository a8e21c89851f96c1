"""EViT (Liang et al., ICLR 2022, "Not All Patches are What You Need"), as its authors released it
(youweiliang/evit, `evit.py`), used off the shelf.

At a few blocks (3, 6 and 9 in the authors' DeiT models), after the attention residual and before the MLP, the
tokens the cls token attends to most (attention averaged over heads) are kept, ceil(keep_rate x (N - 1)) of them,
in descending order of that attention, and the rest (the inattentive tokens) are fused into one token appended
last: their sum weighted by the cls token's attention to each (not normalised). The fused token's size is not
tracked and EViT runs without proportional attention. Only the cls token is protected: a distillation or
register token is ranked like a patch (`protect_prefix` keeps them all, an extension).

The block loop's budget r is the net number of tokens a block removes: with fusion, r + 1 tokens leave and one
fused token joins.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Fuse, Keep, Plan

LOCATIONS = (3, 6, 9)  # the authors' `drop_loc` for DeiT-S and DeiT-B (deit_*_patch16_shrink_base)


def protected(num_prefix_tokens: int, protect_prefix: bool) -> int:
    """How many leading tokens never compete: the cls token (the authors'), or every prefix token."""
    return num_prefix_tokens if protect_prefix else min(num_prefix_tokens, 1)


def removed(num_tokens: int, keep_rate: float, fuse: bool, guarded: int) -> int:
    """The tokens one reducing block removes, net: of the N - guarded ranked tokens ceil(keep_rate x (N - guarded))
    stay (the authors' `left_tokens`), the rest leave and, fused, come back as one token. One token left over
    would come back as itself times its attention: that block is skipped instead."""
    ranked = num_tokens - guarded
    pruned = ranked - math.ceil(keep_rate * ranked)
    return max(pruned - 1, 0) if fuse else pruned


def _budget(options: dict, layout: Layout) -> tuple[int, ...]:
    """r per block: `removed` at each location (blocks beyond the model's depth do not exist), 0 elsewhere. The
    token counts are static (they do not depend on the image), so they are planned here once."""
    n = layout.num_tokens
    guarded = protected(layout.num_prefix_tokens, options["protect_prefix"])
    rs = []
    for block in range(layout.depth):
        r = removed(n, options["keep_rate"], options["fuse"], guarded) if block in options["locations"] else 0
        rs.append(r)
        n -= r
    return tuple(rs)


def _most(num_tokens: int, num_prefix_tokens: int) -> int:
    """Down to one token after the prefix tokens: one kept, or (fused) the fused token alone."""
    return max(num_tokens - num_prefix_tokens - 1, 0)


def _needs_cls(options: dict, layout: Layout) -> str | None:
    if not layout.has_cls:
        return "evit ranks tokens by the cls token's attention, and this model has no cls token"
    return None


@register(
    "evit",
    kind="hybrid",
    needs=("cls_attention",),
    knob="keep_rate",
    prop_attn=False,
    budget=_budget,
    most=_most,
    refuses=_needs_cls,
    source="youweiliang/evit@5ca95a7 evit.py Attention.forward, Block.forward, deit_small_patch16_shrink_base; "
    "helpers.py complement_idx",
)
def evit(
    tokens: LayerTokens,
    r: int,
    keep_rate: Annotated[float, Range(0.01, 1.0)] = 0.7,
    locations: Annotated[tuple[int, ...], Range(0, None)] = LOCATIONS,
    fuse: bool = True,
    protect_prefix: bool = False,
) -> Plan:
    """EViT: at blocks 3, 6, 9 keep the tokens the cls token attends to most, fuse the rest into one token.

    keep_rate: the share of tokens kept at each location (the budget: `r` follows from it); locations: the blocks
    that reduce (the authors' 3, 6, 9; blocks beyond the model's depth are skipped); fuse: fuse the inattentive
    tokens into one (the authors' `--fuse_token`, on in their best models), else drop them; protect_prefix: keep
    distillation and register tokens in front too (extension; the authors protect only the cls token).
    Plan: (B, N, C) -> (B, N - r, C) laid out as [protected tokens, kept tokens by descending cls attention, the
    fused token].
    """
    q = protected(tokens.num_prefix_tokens, protect_prefix)
    n = tokens.metric.shape[1]
    ranked = n - q
    pruned = min(r + 1 if fuse else r, ranked)
    left = ranked - pruned  # the authors' left_tokens
    with torch.no_grad():
        scores = tokens.cls_attention()[:, q:]  # (B, N - q): attention[:, :, 0, q:] averaged over heads
        b = scores.shape[0]
        top = scores.topk(left, dim=1, largest=True, sorted=True).indices  # (B, left), most attended first
        guard = torch.arange(q, device=top.device).expand(b, q)
        index = torch.cat([guard, top + q], dim=1)[..., None]  # (B, q + left, 1)
        if not fuse:
            return Keep(index)
        # The complement of `top` in token order (the authors' complement_idx): rank the kept ones last.
        order = torch.arange(ranked, device=top.device).expand(b, ranked).scatter(1, top, ranked)
        rest = order.sort(dim=1).values[:, :pruned]  # (B, pruned)
        weight = scores.gather(1, rest)  # (B, pruned): the cls token's attention to each fused token
    return Fuse(index, (rest + q)[..., None], weight[..., None])
