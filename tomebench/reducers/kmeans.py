"""k-means token merging, the clustering baseline of the paper's Table 2.

Per block, the non-prefix tokens are clustered into (M - r) groups by a few iterations of batched k-means on the
same metric ToMe uses (cosine similarity of head-mean keys), and each group is merged by a size-weighted average.
Every cluster keeps the token it was seeded with (anchored k-means), so no cluster can empty and every block
keeps exactly N - r tokens, like every other reducer.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Clusters, Plan

MAX_ITERS = 100  # k-means on a few hundred tokens has long converged; more is a typo that would run for hours


def kmeans_assign(metric: Tensor, size: Tensor | None, k: int, iters: int) -> Tensor:
    """Cluster index of each token. metric: (B, M, C); size: (B, M, 1) or None -> (B, M) in [0, k).

    Seeds are k evenly spaced tokens; each seed stays in its own cluster, others go to the most similar centroid.
    """
    b, m, _ = metric.shape
    metric = metric / metric.norm(dim=-1, keepdim=True)
    weight = torch.ones_like(metric[..., :1]) if size is None else size.to(metric.dtype)  # (B, M, 1)
    seeds = torch.div(torch.arange(k, device=metric.device) * m, k, rounding_mode="floor")  # (k,)
    centroids = metric[:, seeds]  # (B, k, C)
    anchor = torch.full((m,), -1, device=metric.device, dtype=torch.long)
    anchor[seeds] = torch.arange(k, device=metric.device)
    anchored = anchor >= 0
    for step in range(iters + 1):
        assign = (metric @ centroids.transpose(-1, -2)).argmax(dim=-1)  # (B, M)
        assign = torch.where(anchored, anchor, assign)
        if step == iters:
            return assign
        sums = torch.zeros_like(centroids).scatter_add_(1, assign[..., None].expand_as(metric), metric * weight)
        centroids = sums / sums.norm(dim=-1, keepdim=True)  # every cluster holds its anchor: never empty
    return assign


@register(
    "kmeans",
    kind="merge",
    aliases=("k-means",),
    needs=("metric", "size"),
    source="the k-means clustering baseline of the ToMe paper's Table 2",
)
def kmeans(tokens: LayerTokens, r: int, iters: Annotated[int, Range(0, MAX_ITERS)] = 5) -> Plan:
    """k-means merging: cluster the non-prefix tokens into N - r groups (cosine of head-mean keys), `iters` steps."""
    p = tokens.num_prefix_tokens
    k = tokens.metric.shape[1] - p - r
    with torch.no_grad():
        size = None if tokens.size is None else tokens.size[:, p:]
        assign = kmeans_assign(tokens.metric[:, p:], size, k, iters)[..., None]  # (B, M, 1)
    return Clusters(assign, k, p)
