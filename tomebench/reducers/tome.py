"""Bipartite soft matching, the token merging of ToMe (Bolya et al., ICLR 2023, Sec. 3), with the design choices
the paper ablates (its Table 1) as options. The defaults reproduce the authors' released implementation
(facebookresearch/ToMe, `tome.merge.bipartite_soft_matching`): the same tokens merged, in the same output order.

Every option keeps the token budget (r merges per block, clamped to (N - prefix) // 2), so differences in speed
and accuracy come from the option itself.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, max_r, register, seeded_keys
from tomebench.reducers.options import Applies, Range
from tomebench.reducers.plans import IDENTITY, Bipartite, Plan, Split

Features = Literal["k", "q", "v", "x"]
Distance = Literal["cosine", "dot", "euclidean"]
Heads = Literal["mean", "concat"]
Combine = Literal["weighted", "mean", "max", "keep"]
Partition = Literal["alternating", "alternating-patches", "sequential", "random"]
MAX_SEED = 2**31 - 1


def similarity(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """(B, Na, C), (B, Nb, C) -> (B, Na, Nb) scores, higher is more alike."""
    if distance == "cosine":
        a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    if distance in ("cosine", "dot"):
        return a @ b.transpose(-1, -2)
    # euclidean: the nearest B token is the most alike; squared distance ranks the same and skips the sqrt.
    a, b = a.float(), b.float()
    return -(a.pow(2).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + b.pow(2).sum(-1)[:, None, :])


def partition_indices(
    n: int, partition: str, seed: int = 0, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Positions (among n tokens) of set A and set B, each in token order; A gets the extra token when n is odd.

    alternating: A = even, B = odd positions; sequential: A = first half, B = second half; random: a random split
    drawn from `seed` (one draw shared by every image of the batch, so a row never depends on batching).
    """
    na = (n + 1) // 2
    if partition in ("alternating", "alternating-patches"):
        order = torch.cat([torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)])
    elif partition == "sequential":
        order = torch.arange(n, device=device)
    else:
        order = seeded_keys(seed, n, device).argsort()  # a random permutation, the same on every device
        order = torch.cat([order[:na].sort().values, order[na:].sort().values])
    return order[:na], order[na:]


def make_split(num_tokens: int, p: int, partition: str, seed: int, device: torch.device) -> Split:
    """How to cut (B, N, C) tokens into sets A and B, and how many prefix tokens each set holds.

    "alternating" is the authors' split: A and B alternate over the whole sequence, prefix tokens included (the
    cls token is A's first token, a distillation token B's first), and the prefix tokens are protected by their
    scores instead. The other partitions split only the N - p non-prefix tokens. Alternating and sequential
    splits are views (no copy); random gathers.
    """
    if partition == "alternating":
        return Split(partition, p, prefix_in_a=(p + 1) // 2, prefix_in_b=p // 2)
    if partition == "alternating-patches":
        return Split(partition, p)
    n = num_tokens - p
    if partition == "sequential":
        return Split(partition, p, split_at=p + (n + 1) // 2)
    a_pos, b_pos = (pos + p for pos in partition_indices(n, partition, seed, device))
    return Split("indexed", p, a_pos=a_pos, b_pos=b_pos)


def bipartite_soft_matching(
    metric: Tensor,
    r: int,
    num_prefix_tokens: int,
    distance: str = "cosine",
    partition: str = "alternating",
    combine: str = "weighted",
    seed: int = 0,
) -> Plan:
    """Plan the merge of the r most similar (A, B) token pairs, as the authors' `bipartite_soft_matching` does.

    metric: (B, N, C). Tokens are split into sets A and B (by default alternating over the whole sequence, the
    authors' split); each A token is linked to its most similar B token (cosine similarity by default); the r
    strongest links are merged into their B token. Prefix tokens are never merged: an A prefix token's row of
    the scores is -inf (it is never merged away), a B prefix token's column is -inf (nothing merges into it).
    r is clamped to (N - prefix) // 2.

    The plan maps (B, N, C) to (B, N - r, C) laid out as [prefix tokens in order, unmerged A, B]. With prefix
    tokens the unmerged A tokens are put back in token order (the authors sort them to keep the cls token
    first, and so every later block sees the same alternation); without any they stay in descending-score order,
    as in the authors' code. `alternating-patches` (tomebench 0.1's split, over the non-prefix tokens only)
    never restores the order. `combine` is how merged features combine.
    """
    p = num_prefix_tokens
    r = min(r, max_r(metric.shape[1], p))
    if r <= 0:
        return IDENTITY
    split = make_split(metric.shape[1], p, partition, seed, metric.device)
    pa = split.prefix_in_a
    in_order = p > 0 and partition != "alternating-patches"

    with torch.no_grad():
        a, b = split(metric)  # (B, Na, C), (B, Nb, C)
        scores = similarity(a, b, distance)  # (B, Na, Nb)
        if pa:
            scores[:, :pa, :] = -math.inf  # prefix tokens in A are never merged away
        if split.prefix_in_b:
            scores[:, :, : split.prefix_in_b] = -math.inf  # nothing merges into a prefix token in B
        node_max, node_idx = scores.max(dim=-1)  # (B, Na): best B partner of each A token
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]  # (B, Na, 1)
        unm_idx = edge_idx[:, r:]  # A tokens that stay
        src_idx = edge_idx[:, :r]  # A tokens merged away
        dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)  # (B, r, 1) their B partners
        if in_order:
            # Sorted, the A prefix tokens (the lowest positions, never merged) lead; they are taken from x itself.
            unm_idx = unm_idx.sort(dim=1).values[:, pa:]
    return Bipartite(split, unm_idx, src_idx, dst_idx, combine)


@register(
    "tome",
    kind="merge",
    aliases=("bipartite",),
    needs=("metric", "qkv", "x"),
    source="facebookresearch/ToMe@af95e4b tome/merge.py bipartite_soft_matching; tome/patch/timm.py",
)
def tome(
    tokens: LayerTokens,
    r: int,
    features: Features = "k",
    distance: Distance = "cosine",
    heads: Heads = "mean",
    combine: Combine = "weighted",
    partition: Partition = "alternating",
    seed: Annotated[int, Range(0, MAX_SEED), Applies(partition="random")] = 0,
) -> Plan:
    """Token Merging: bipartite soft matching on head-mean keys, size-weighted merge (the paper's default).

    features: what similarity is measured on (keys, queries, values, or the block input x); heads: per-head
    features averaged or concatenated; distance: cosine, dot product or (negative) euclidean; combine: size-
    weighted average, plain average, max pool, or keep one; partition into A and B: alternating over the whole
    sequence with prefix tokens protected (the authors'), alternating over the non-prefix tokens only
    (alternating-patches), sequential halves or random (one split per block drawn from seed) of the non-prefix
    tokens.
    """
    default = features == "k" and heads == "mean"
    metric = tokens.metric if default or tokens.features is None else tokens.features(features, heads)
    return bipartite_soft_matching(
        metric, r, tokens.num_prefix_tokens, distance, partition, combine, seed * 1000 + tokens.layer
    )
