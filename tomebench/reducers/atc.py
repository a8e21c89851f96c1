"""ATC, Agglomerative Token Clustering (Haurum et al., ECCV 2024, "Agglomerative Token Clustering"), as its
authors released it off the shelf (JoakimHaurum/ATC, `SSLBackbone_setup/token_reduc`).

In every block, between attention and MLP (ToMe's place, on ToMe's metric: the keys averaged over heads), the
non-prefix tokens are clustered bottom-up: each starts as its own cluster, and the closest two clusters (distance
1 - cosine similarity) merge, their distance to every other cluster updated by the linkage (single: the minimum,
complete: the maximum, average: the mean over all pairs of members), until the block's clusters are left. Each
cluster becomes one token, the size-weighted average of its members; sizes add up and proportional attention is on.

The authors run scikit-learn's `AgglomerativeClustering` per image on the host. Here the same greedy merging runs
batched on the device (no host synchronisation, no data-dependent shape): r steps, each an argmin over the (M, M)
distances and a Lance-Williams update of one row and column, so a block costs r x O(M^2). Its partitions equal
scikit-learn's (scipy's `linkage` underneath): the upper triangle of the distances is taken (scikit-learn reads
X[i, j] for i < j), and the merging arithmetic runs in float64 as scipy's does.

The authors' count: `num_clusters = T - r` is computed with the cls token among the T tokens, and the cls token
is then left out of the clustering, so a block with a cls token removes r - 1 tokens, not r. That is the default
here (the `spend` declaration below asks each block for r - 1 of its r, whatever the schedule); `exact_r` removes r.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.plans import Clusters, Plan, no_autocast

Linkage = Literal["average", "single", "complete"]  # the authors' --linkage choices; "average" their default


def distances(metric: Tensor, num_prefix: int) -> Tensor:
    """(B, N, C) keys -> (B, M, M) cosine distances 1 - cos between the M = N - P non-prefix tokens.

    Computed over all N tokens and then cut, as the authors do (a BLAS kernel's rounding may depend on the shape),
    in float32 (float64 for float64 keys) with autocast off: the authors' model runs in float32, and a half
    precision distance would tie tokens the float32 one tells apart."""
    work = torch.float64 if metric.dtype == torch.float64 else torch.float32
    with no_autocast(metric.device.type):
        metric = metric.to(work)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric @ metric.transpose(-1, -2)  # (B, N, N)
    return 1 - scores[:, num_prefix:, num_prefix:]


def agglomerate(distance: Tensor, k: int, linkage: str = "average") -> Tensor:
    """Greedy agglomerative clustering of each image's M points into k clusters: (B, M, M) distances -> (B, M)
    cluster index in [0, k), clusters numbered by their first point.

    Only the upper triangle is read (distance[:, i, j], i < j), as scikit-learn passes it to scipy; merging runs in
    float64. Each step merges the closest pair of clusters; on an exact tie the pair first in row-major order (the
    lowest i, then the lowest j) merges, and the survivor keeps the lower index. scipy's nearest-neighbour chain
    breaks ties its own way, so on exactly tied distances (duplicate tokens) the partitions can differ; without
    ties they are the same.
    """
    b, m, _ = distance.shape
    device = distance.device
    positions = torch.arange(m, device=device)
    upper = positions[:, None] < positions[None, :]  # (M, M)
    d = distance.to(torch.float64)
    d = torch.where(upper, d, d.transpose(1, 2))  # symmetric from the upper triangle
    d = d.masked_fill(~upper & ~upper.T, float("inf"))  # no point is its own neighbour; a fresh tensor, ours
    never = torch.full((b, 1, m), float("inf"), dtype=torch.float64, device=device)  # a retired cluster's row
    size = torch.ones(b, m, dtype=torch.float64, device=device)  # points per cluster (not tokens' sizes: sklearn's)
    label = positions.expand(b, m)  # each point's cluster, named by the cluster's lowest point
    for _ in range(m - k):
        pair = d.flatten(1).argmin(dim=1)  # (B,): symmetric, so the first of a pair in row-major order is i < j
        i, j = pair // m, pair % m
        rows = d.gather(1, torch.stack([i, j], dim=1)[:, :, None].expand(b, 2, m))  # (B, 2, M)
        if linkage == "single":
            new = rows.amin(dim=1)
        elif linkage == "complete":
            new = rows.amax(dim=1)
        else:  # scipy's _average: (size_x * d_xi + size_y * d_yi) / (size_x + size_y), in that order
            size_i, size_j = size.gather(1, i[:, None]), size.gather(1, j[:, None])  # (B, 1)
            new = (size_i * rows[:, 0] + size_j * rows[:, 1]) / (size_i + size_j)
            size = size.scatter(1, i[:, None], size_i + size_j)
        merged = (positions == i[:, None]) | (positions == j[:, None])  # (B, M)
        new = new.masked_fill(merged, float("inf"))  # (B, M): i's new distances; i and j are no neighbours of i
        # One row and one column each, in place: O(M) per step, so the argmin is the only O(M^2) work.
        at_i, at_j = i[:, None, None].expand(b, 1, m), j[:, None, None].expand(b, 1, m)
        d.scatter_(1, at_i, new[:, None, :]).scatter_(2, at_i.transpose(1, 2), new[:, :, None])
        d.scatter_(1, at_j, never).scatter_(2, at_j.transpose(1, 2), never.transpose(1, 2))  # cluster j retired
        label = torch.where(label == j[:, None], i[:, None], label)
    root = label == positions  # (B, M): the clusters left, each named by its lowest point
    rank = root.long().cumsum(dim=1) - 1  # (B, M)
    return rank.gather(1, label)


def most(num_tokens: int, num_prefix_tokens: int) -> int:
    """Down to one cluster: the authors clamp r to T - protected (cls counted), which leaves at least one."""
    return max(num_tokens - num_prefix_tokens - 1, 0)


def _spend(requested: tuple[int, ...], options: dict, layout: Layout) -> tuple[int, ...]:
    """r - 1 of each block's r where there is a cls token (the authors' T - r clusters, the cls token among the T
    but not clustered), r without one or with `exact_r`; whatever schedule gave the r."""
    less = 0 if options["exact_r"] or not layout.has_cls else 1
    return tuple(max(r - less, 0) if r > 0 else 0 for r in requested)


@register(
    "atc",
    kind="merge",
    needs=("metric",),
    most=most,
    spend=_spend,
    source="JoakimHaurum/ATC@227c94b SSLBackbone_setup/token_reduc/merge.py agglomerative_clustering, merge_wavg; "
    "patch/timm.py ToMeBlock, ToMeAttention, apply_patch (prop_attn on); validate_ots_sslbackbone.py "
    "(--linkage average, --r-sched constant)",
)
def atc(tokens: LayerTokens, r: int, linkage: Linkage = "average", exact_r: bool = False) -> Plan:
    """ATC: agglomerative clustering of the non-prefix tokens (1 - cosine of head-mean keys), size-weighted merge.

    r: the tokens this block removes (`spend` already took the authors' one off where there is a cls token);
    linkage: how the distance of a merged cluster is updated ("average", the authors' default; "single",
    "complete"); exact_r: remove r per block even with a cls token (the authors' count removes r - 1; read by
    `spend`, not here). Plan: (B, N, C) -> (B, N - r, C) laid out [prefix tokens, clusters by their first token].
    """
    p = tokens.num_prefix_tokens
    k = tokens.metric.shape[1] - p - r
    with torch.no_grad():
        assign = agglomerate(distances(tokens.metric, p), k, linkage)[..., None]  # (B, M, 1)
    return Clusters(assign, k, p)
