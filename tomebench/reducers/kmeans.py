"""k-means token merging, the clustering baseline of the paper's Table 2.

Per block, the non-prefix tokens are clustered into (M - r) groups by a few iterations of batched k-means on the
same metric ToMe uses (cosine similarity of head-mean keys), and each group is merged by a size-weighted average.
Every cluster keeps the token it was seeded with (anchored k-means), so no cluster can empty and every block
keeps exactly N - r tokens, like every other reducer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tomebench.errors import UsageError
from tomebench.reducers.base import REDUCERS, LayerTokens, Merge, do_nothing, max_r


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


@REDUCERS.register("kmeans", aliases=("k-means",))
def kmeans(tokens: LayerTokens, r: int, iters: int = 5) -> Merge:
    """k-means merging: cluster the non-prefix tokens into N - r groups (cosine of head-mean keys), `iters` steps."""
    if not isinstance(iters, int) or iters < 0:
        raise UsageError(f"kmeans iters must be a whole number >= 0, got {iters!r}")
    p = tokens.num_prefix_tokens
    n = tokens.metric.shape[1]
    r = min(r, max_r(n, p))
    if r <= 0:
        return do_nothing
    k = n - p - r
    with torch.no_grad():
        size = None if tokens.size is None else tokens.size[:, p:]
        assign = kmeans_assign(tokens.metric[:, p:], size, k, iters)[..., None]  # (B, M, 1)

    def merge(x: Tensor, mode: str = "sum") -> Tensor:
        prefix, rest = x[:, :p], x[:, p:]
        out = rest.new_zeros(rest.shape[0], k, rest.shape[-1])
        out = out.scatter_reduce(1, assign.expand_as(rest), rest, reduce=mode, include_self=False)
        return torch.cat([prefix, out], dim=1)

    return merge
