"""Token pruning baselines of the paper's Table 2: drop r tokens per block, randomly or by attention received.

Pruning removes the same number of tokens per block as ToMe (clamped alike to (N - prefix) // 2), so any
difference in speed or accuracy is the method's. Kept tokens keep their features and sizes; prefix tokens are
never dropped.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register, seeded_keys
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Keep, Plan

MAX_SEED = 2**31 - 1


def keep_highest(scores: Tensor, r: int, num_prefix_tokens: int) -> Plan:
    """Plan dropping the r non-prefix tokens with the lowest score (0 < r <= N - prefix).

    scores: (B, N - prefix) for the non-prefix tokens. The plan maps (B, N, C) to (B, N - r, C): prefix tokens
    first, then the kept tokens in their original order.
    """
    p = num_prefix_tokens
    n = scores.shape[1] + p
    with torch.no_grad():
        keep = scores.topk(n - p - r, dim=-1).indices.sort(dim=-1).values  # (B, M - r)
        index = torch.cat([torch.arange(p, device=keep.device).expand(keep.shape[0], p), keep + p], dim=1)
    return Keep(index[..., None])  # (B, N - r, 1)


@register(
    "prune",
    kind="prune",
    aliases=("random-prune",),
    needs=(),
    source="the random-pruning baseline of the ToMe paper's Table 2",
)
def random_prune(tokens: LayerTokens, r: int, seed: Annotated[int, Range(0, MAX_SEED)] = 0) -> Plan:
    """Random pruning: drop r random non-prefix tokens per block (one seeded draw per block, shared by the batch)."""
    metric = tokens.metric
    b, n = metric.shape[:2]
    p = tokens.num_prefix_tokens
    # One draw per block, shared by every image and the same on every device (see seeded_keys): an image loses
    # the same tokens whatever its batch. (The paper's baseline drew per image; for any one image it is the same
    # random pruning.)
    scores = seeded_keys(seed * 100_003 + tokens.layer, n, metric.device)[p:]  # (N - p,)
    return keep_highest(scores.expand(b, n - p), r, p)


def _needs_cls(options: dict, layout: Layout) -> str | None:
    if options["score"] == "cls" and not layout.has_cls:
        return "attn-prune score=cls needs a model with a cls token; use score=mean or auto"
    return None


@register(
    "attn-prune",
    kind="prune",
    aliases=("attention-prune",),
    needs=("cls_attention",),
    refuses=_needs_cls,
    source="the attention-pruning baseline of the ToMe paper's Table 2",
)
def attention_prune(tokens: LayerTokens, r: int, score: Literal["auto", "cls", "mean"] = "auto") -> Plan:
    """Attention pruning: drop the r tokens the cls token attends to least (no cls token: least attention received).

    score: "cls", "mean" (attention received, averaged over all queries: eager N x N) or "auto" (cls if present).
    """
    use_cls = score == "cls" or (score == "auto" and tokens.cls_attention is not None)
    received = tokens.cls_attention() if use_cls else tokens.mean_attention()  # (B, N)
    return keep_highest(received[:, tokens.num_prefix_tokens :], r, tokens.num_prefix_tokens)
