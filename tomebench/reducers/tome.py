"""Bipartite soft matching, the token merging of ToMe (Bolya et al., ICLR 2023, Sec. 3)."""

from __future__ import annotations

import torch
from torch import Tensor

from tomebench.reducers.base import REDUCERS, LayerTokens, Merge, do_nothing, max_r


def bipartite_soft_matching(metric: Tensor, r: int, num_prefix_tokens: int) -> Merge:
    """Plan the merge of the r most similar (A, B) token pairs.

    metric: (B, N, C). Non-prefix tokens are split alternately into A (even) and B (odd); each A token is
    linked to its most similar B token by cosine similarity; the r strongest links are merged into their B
    token. r is clamped to what the layer allows, (N - prefix) // 2. The Merge maps (B, N, C) to
    (B, N - r, C) laid out as [prefix, unmerged A, B]: prefix tokens stay untouched and in front.
    """
    p = num_prefix_tokens
    r = min(r, max_r(metric.shape[1], p))
    if r <= 0:
        return do_nothing

    with torch.no_grad():
        metric = metric[:, p:]
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]  # (B, Na, C), (B, Nb, C)
        scores = a @ b.transpose(-1, -2)  # (B, Na, Nb)
        node_max, node_idx = scores.max(dim=-1)  # (B, Na): best B partner of each A token
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]  # (B, Na, 1)
        unm_idx = edge_idx[:, r:]  # A tokens that stay
        src_idx = edge_idx[:, :r]  # A tokens merged away
        dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)  # (B, r, 1) their B partners

    def merge(x: Tensor, mode: str = "sum") -> Tensor:
        prefix, x = x[:, :p], x[:, p:]
        src, dst = x[:, ::2], x[:, 1::2]
        n, na, c = src.shape
        unm = src.gather(dim=1, index=unm_idx.expand(n, na - r, c))
        src = src.gather(dim=1, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([prefix, unm, dst], dim=1)

    return merge


@REDUCERS.register("tome", aliases=("bipartite",))
def tome(tokens: LayerTokens, r: int) -> Merge:
    """Token Merging: bipartite soft matching on head-mean keys, size-weighted merge (the paper's default)."""
    return bipartite_soft_matching(tokens.metric, r, tokens.num_prefix_tokens)


@REDUCERS.register("none")
def none(tokens: LayerTokens, r: int) -> Merge:
    """No reduction: the unpatched model's token flow (the speedup baseline)."""
    return do_nothing
