"""Bipartite soft matching, the token merging of ToMe (Bolya et al., ICLR 2023, Sec. 3), with the design choices
the paper ablates (its Table 1) as options; the defaults are the paper's.

Every option keeps the token budget (r merges per block, clamped to (N - prefix) // 2), so differences in speed
and accuracy come from the option itself.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tomebench.reducers.base import REDUCERS, LayerTokens, Merge, do_nothing, max_r

Features = Literal["k", "q", "v", "x"]
Distance = Literal["cosine", "dot", "euclidean"]
Heads = Literal["mean", "concat"]
Combine = Literal["weighted", "mean", "max", "keep"]
Partition = Literal["alternating", "sequential", "random"]


def similarity(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """(B, Na, C), (B, Nb, C) -> (B, Na, Nb) scores, higher is more alike."""
    if distance == "cosine":
        a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    if distance in ("cosine", "dot"):
        return a @ b.transpose(-1, -2)
    # euclidean: the nearest B token is the most alike; squared distance ranks the same and skips the sqrt.
    a, b = a.float(), b.float()
    return -(a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + b.pow(2).sum(-1)[:, None, :])


def partition_indices(n: int, partition: str, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Positions (among the n non-prefix tokens) of set A and set B; A gets the extra token when n is odd.

    alternating: A = even, B = odd positions (the paper's); sequential: A = first half, B = second half;
    random: a random split drawn from generator, each set kept in token order.
    """
    na = (n + 1) // 2
    device = generator.device if generator is not None else None
    if partition == "alternating":
        order = torch.cat([torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)])
    elif partition == "sequential":
        order = torch.arange(n, device=device)
    else:
        # Drawn where the generator lives (the tokens' device), so a GPU run needs no host-to-device copy per block.
        order = torch.randperm(n, generator=generator, device=device)
        order = torch.cat([order[:na].sort().values, order[na:].sort().values])
    return order[:na], order[na:]


def bipartite_soft_matching(
    metric: Tensor,
    r: int,
    num_prefix_tokens: int,
    distance: str = "cosine",
    partition: str = "alternating",
    combine: str = "weighted",
    generator: torch.Generator | None = None,
) -> Merge:
    """Plan the merge of the r most similar (A, B) token pairs.

    metric: (B, N, C). Non-prefix tokens are split into sets A and B (alternately by default); each A token is
    linked to its most similar B token (cosine similarity by default); the r strongest links are merged into
    their B token. r is clamped to what the layer allows, (N - prefix) // 2. The Merge maps (B, N, C) to
    (B, N - r, C) laid out as [prefix, unmerged A, B]: prefix tokens stay untouched and in front. Its `combine`
    attribute tells merge_tokens how merged features combine (size-weighted average by default).
    """
    p = num_prefix_tokens
    r = min(r, max_r(metric.shape[1], p))
    if r <= 0:
        return do_nothing
    n = metric.shape[1] - p
    na = (n + 1) // 2
    a_pos, b_pos = partition_indices(n, partition, generator) if partition == "random" else (None, None)

    def split(x: Tensor) -> tuple[Tensor, Tensor]:
        # Alternating and sequential splits are views (no copy, nothing to move to the device); random gathers.
        if partition == "alternating":
            return x[:, ::2], x[:, 1::2]
        if partition == "sequential":
            return x[:, :na], x[:, na:]
        return x[:, a_pos], x[:, b_pos]

    with torch.no_grad():
        a, b = split(metric[:, p:])  # (B, Na, C), (B, Nb, C)
        scores = similarity(a, b, distance)  # (B, Na, Nb)
        node_max, node_idx = scores.max(dim=-1)  # (B, Na): best B partner of each A token
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]  # (B, Na, 1)
        unm_idx = edge_idx[:, r:]  # A tokens that stay
        src_idx = edge_idx[:, :r]  # A tokens merged away
        dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)  # (B, r, 1) their B partners

    def merge(x: Tensor, mode: str = "sum") -> Tensor:
        prefix, x = x[:, :p], x[:, p:]
        src, dst = split(x)
        batch, na, c = src.shape
        unm = src.gather(dim=1, index=unm_idx.expand(batch, na - r, c))
        if mode != "keep":  # keep one: the B token stays as it was, its A partner is dropped
            src = src.gather(dim=1, index=src_idx.expand(batch, r, c))
            dst = dst.scatter_reduce(1, dst_idx.expand(batch, r, c), src, reduce=mode)
        return torch.cat([prefix, unm, dst], dim=1)

    merge.combine = combine
    return merge


@REDUCERS.register("tome", aliases=("bipartite",))
def tome(
    tokens: LayerTokens,
    r: int,
    features: Features = "k",
    distance: Distance = "cosine",
    heads: Heads = "mean",
    combine: Combine = "weighted",
    partition: Partition = "alternating",
    seed: int = 0,
) -> Merge:
    """Token Merging: bipartite soft matching on head-mean keys, size-weighted merge (the paper's default).

    features: what similarity is measured on (keys, queries, values, or the block input x); heads: per-head
    features averaged or concatenated; distance: cosine, dot product or (negative) euclidean; combine: size-
    weighted average, plain average, max pool, or keep one; partition of the non-prefix tokens into A and B:
    alternating, sequential halves, or random (drawn per block from seed).
    """
    default = features == "k" and heads == "mean"
    metric = tokens.metric if default or tokens.features is None else tokens.features(features, heads)
    generator = None
    if partition == "random":
        generator = torch.Generator(device=tokens.metric.device).manual_seed(seed * 1000 + tokens.layer)
    return bipartite_soft_matching(metric, r, tokens.num_prefix_tokens, distance, partition, combine, generator)


@REDUCERS.register("none")
def none(tokens: LayerTokens, r: int) -> Merge:
    """No reduction: the unpatched model's token flow (the speedup baseline)."""
    return do_nothing
