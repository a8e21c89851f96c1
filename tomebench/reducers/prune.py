"""Token pruning baselines of the paper's Table 2: drop r tokens per block, randomly or by attention received.

Pruning removes the same number of tokens per block as ToMe (clamped alike to (N - prefix) // 2), so any
difference in speed or accuracy is the method's. Kept tokens keep their features and sizes; prefix tokens are
never dropped.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tomebench.errors import UsageError
from tomebench.reducers.base import REDUCERS, LayerTokens, Merge, do_nothing, max_r, seeded_keys


def keep_highest(scores: Tensor, r: int, num_prefix_tokens: int) -> Merge:
    """Plan dropping the r non-prefix tokens with the lowest score.

    scores: (B, N - prefix) for the non-prefix tokens. The Merge maps (B, N, C) to (B, N - r, C): prefix tokens
    first, then the kept tokens in their original order.
    """
    p = num_prefix_tokens
    n = scores.shape[1] + p
    r = min(r, max_r(n, p))
    if r <= 0:
        return do_nothing
    with torch.no_grad():
        keep = scores.topk(n - p - r, dim=-1).indices.sort(dim=-1).values  # (B, M - r)
        index = torch.cat([torch.arange(p, device=keep.device).expand(keep.shape[0], p), keep + p], dim=1)
        index = index[..., None]  # (B, N - r, 1)

    def merge(x: Tensor, mode: str = "sum") -> Tensor:
        return x.gather(dim=1, index=index.expand(-1, -1, x.shape[-1]))

    merge.prunes_only = True  # merge_tokens: nothing is combined, so all-one sizes stay implicit
    return merge


@REDUCERS.register("prune", aliases=("random-prune",))
def random_prune(tokens: LayerTokens, r: int, seed: int = 0) -> Merge:
    """Random pruning: drop r random non-prefix tokens per block (one seeded draw per block, shared by the batch)."""
    metric = tokens.metric
    b, n = metric.shape[:2]
    p = tokens.num_prefix_tokens
    # One draw per block, shared by every image and the same on every device (see seeded_keys): an image loses
    # the same tokens whatever its batch. (The paper's baseline drew per image; for any one image it is the same
    # random pruning.)
    scores = seeded_keys(seed * 100_003 + tokens.layer, n, metric.device)[p:]  # (N - p,)
    return keep_highest(scores.expand(b, n - p), r, p)


@REDUCERS.register("attn-prune", aliases=("attention-prune",))
def attention_prune(tokens: LayerTokens, r: int, score: Literal["auto", "cls", "mean"] = "auto") -> Merge:
    """Attention pruning: drop the r tokens the cls token attends to least (no cls token: least attention received).

    score: "cls", "mean" (attention received, averaged over all queries: eager N x N) or "auto" (cls if present).
    """
    if score not in ("auto", "cls", "mean"):
        raise UsageError(f"attn-prune score must be auto, cls or mean, got {score!r}")
    if score == "cls" and tokens.cls_attention is None:
        raise UsageError("attn-prune score=cls needs a model with a cls token; use score=mean or auto")
    use_cls = score == "cls" or (score == "auto" and tokens.cls_attention is not None)
    received = tokens.cls_attention() if use_cls else tokens.mean_attention()  # (B, N)
    return keep_highest(received[:, tokens.num_prefix_tokens :], r, tokens.num_prefix_tokens)
