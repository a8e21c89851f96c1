"""What a reducer returns: a typed plan for one block, computed once and applied to every tensor laid out like the
tokens (features, sizes, sources).

A plan says which tokens are kept and which are combined, and how. `plan(x, mode)` maps a (B, N, C) tensor to
(B, N', C), combined rows reduced by `mode` ("sum", "mean", "amax", or "keep": the destination row as it was);
`plan.apply(x, size, source)` carries the block's tokens through it: features by the plan's `combine` rule (a
size-weighted average by default), sizes summed, sources united. The block loop only ever calls `apply`, so a new
kind of plan (a fused token, a prune-then-merge) is a new class here, not a branch in the loop.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

# How the features of combined tokens merge: a size-weighted average (ToMe), a plain average, max pool, or keep
# the destination token as it was (its partner is dropped).
COMBINE_MODES = {"mean": "mean", "max": "amax", "keep": "keep"}


class Plan:
    """Base of every plan. Subclasses implement `__call__`; `combines` False marks a plan that only drops tokens."""

    combines: ClassVar[bool] = True
    combine: str = "weighted"

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        """(B, N, C) -> (B, N', C)."""
        raise NotImplementedError

    def attend(self, probs: Tensor) -> Tensor:
        """The block's attention probabilities (B, H, N, N) fused alongside the tokens, (B, H, N', N'): what a
        reducer acting before attention (MCTF's one-step-ahead fusion) multiplies with the fused tokens' values."""
        raise NotImplementedError(f"{type(self).__name__} does not fuse an attention matrix")

    def apply(
        self, x: Tensor, size: Tensor | None, source: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Tokens x (B, N, C), sizes (B, N, 1) or None (all ones), sources (B, N, N0) or None -> the same after the
        plan. A plan that only drops tokens leaves sizes None, so later blocks' attention stays unbiased."""
        if not self.combines:
            return self(x), None if size is None else self(size), None if source is None else self(source, "amax")
        if size is None:
            size = torch.ones_like(x[..., :1])
        if self.combine == "weighted":
            x = self(x * size, "sum")
            size = self(size, "sum")
            x = x / size
        else:  # plain average, max pool or keep one; sizes still add up, for proportional attention
            x = self(x, COMBINE_MODES[self.combine])
            size = self(size, "sum")
        if source is not None:
            source = self(source, "amax")
        return x, size, source


class _Identity(Plan):
    """Nothing to do: every tensor passes through (what a block with r = 0 runs)."""

    combines: ClassVar[bool] = False

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        return x

    def attend(self, probs: Tensor) -> Tensor:
        return probs

    def apply(self, x, size, source):
        return x, size, source


IDENTITY: Plan = _Identity()


@dataclass(frozen=True, eq=False)
class Keep(Plan):
    """Pruning: keep the rows `index` (B, N', 1) of every tensor, drop the rest."""

    index: Tensor
    combines: ClassVar[bool] = False

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        return x.gather(dim=1, index=self.index.expand(-1, -1, x.shape[-1]))


@dataclass(frozen=True, eq=False)
class Fuse(Plan):
    """Keep the rows `index` (B, K, 1) in that order and fuse the rows `rest` (B, M, 1) into one token appended
    last: their sum weighted by `weight` (B, M, 1), not an average (EViT's inattentive-token fusion).

    The fused token counts as one token: sizes are not created (None stays None, so attention gets no bias);
    where sizes were already tracked, kept rows keep theirs and the fused token's is the sum of its members'.
    Sources are united, so a traced map still shows which patches the fused token holds."""

    index: Tensor
    rest: Tensor
    weight: Tensor

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        c = x.shape[-1]
        kept = x.gather(dim=1, index=self.index.expand(-1, -1, c))  # (B, K, C)
        others = x.gather(dim=1, index=self.rest.expand(-1, -1, c))  # (B, M, C)
        if mode == "weighted":
            fused = (others * self.weight.to(x.dtype)).sum(dim=1, keepdim=True)
        elif mode == "amax":
            fused = others.amax(dim=1, keepdim=True)
        else:
            fused = others.sum(dim=1, keepdim=True) / (others.shape[1] if mode == "mean" else 1)
        return torch.cat([kept, fused], dim=1)  # (B, K + 1, C)

    def apply(self, x, size, source):
        return (
            self(x, "weighted"),
            None if size is None else self(size, "sum"),
            None if source is None else self(source, "amax"),
        )


@dataclass(frozen=True, eq=False)
class Split:
    """How bipartite matching cuts (B, N, C) tokens into sets A and B.

    partition: "alternating" (even / odd positions of the whole sequence, prefix tokens included),
    "alternating-patches" (of the non-prefix tokens), "sequential" (first / second half of the non-prefix
    tokens, A ending at `split_at`) or "indexed" (the positions a_pos, b_pos). prefix_in_a / prefix_in_b: how
    many prefix tokens each set holds (alternating only)."""

    partition: str
    num_prefix: int
    prefix_in_a: int = 0
    prefix_in_b: int = 0
    split_at: int = 0
    a_pos: Tensor | None = None
    b_pos: Tensor | None = None

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, C) -> A (B, Na, C), B (B, Nb, C); views where the partition allows it, no copy."""
        p = self.num_prefix
        if self.partition == "alternating":
            return x[:, ::2], x[:, 1::2]
        if self.partition == "alternating-patches":
            return x[:, p::2], x[:, p + 1 :: 2]
        if self.partition == "sequential":
            return x[:, p : self.split_at], x[:, self.split_at :]
        return x[:, self.a_pos], x[:, self.b_pos]


@dataclass(frozen=True, eq=False)
class Bipartite(Plan):
    """Bipartite merging (ToMe): the A tokens `src_idx` (B, r, 1) merge into their B partners `dst_idx` (B, r, 1);
    the A tokens `unm_idx` (B, Na - r - prefix_in_a, 1) stay. Output layout: [the prefix tokens, unmerged A, B
    without its prefix tokens]."""

    split: Split
    unm_idx: Tensor
    src_idx: Tensor
    dst_idx: Tensor
    combine: str = "weighted"

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        src, dst = self.split(x)
        batch, _, c = src.shape
        r = self.src_idx.shape[1]
        unm = src.gather(dim=1, index=self.unm_idx.expand(batch, -1, c))  # (B, Na - r - pa, C)
        if mode != "keep":  # keep one: the B token stays as it was, its A partner is dropped
            src = src.gather(dim=1, index=self.src_idx.expand(batch, r, c))
            dst = dst.scatter_reduce(1, self.dst_idx.expand(batch, r, c), src, reduce=mode)
        return torch.cat([x[:, : self.split.num_prefix], unm, dst[:, self.split.prefix_in_b :]], dim=1)


@dataclass(frozen=True, eq=False)
class BipartitePrune(Plan):
    """Bipartite pruning (ToFu's early blocks): the matched A tokens `match.src_idx` (B, r, 1) are dropped and
    their B partners stay as they were; (B, N, C) -> (B, N - r, C) in `match`'s layout. A pure prune: kept rows
    are exact copies, sizes and sources of the kept tokens pass unchanged (None stays None), the dropped tokens'
    patches leave the map."""

    match: Bipartite
    combines: ClassVar[bool] = False

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        return self.match(x, "keep")


@dataclass(frozen=True, eq=False)
class Mlerp(Plan):
    """MLERP merging (ToFu, Kim et al. WACV 2024) on a bipartite match, (B, N, C) -> (B, N - r, C) in `match`'s
    layout: each B token and the A tokens matched to it become one token whose direction is their average and
    whose norm is the largest of theirs,

        MLERP(x_1..x_n) = m / ||m|| * max_i ||x_i||,   m = sum_i s_i x_i / sum_i s_i   (s_i: sizes),

    so a merge never shrinks a token's norm the way a plain average does. Prefix and unmatched tokens pass exactly;
    sizes add up, sources unite.

    port: PiToMe's port instead (`algo/tofu/merge.py`, mode "tofu"): m is the unweighted mean, and it is divided by
    the norm of the original B token rather than by ||m||, for every B token (an unmatched one becomes
    x / ||x|| * ||x||, one rounding); sizes are not tracked (a given size passes as a prune's would)."""

    match: Bipartite
    port: bool = False
    combine: ClassVar[str] = "mlerp"  # neither ToMe's weighted sum nor a scatter mode: `apply` does it

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        return self.match(x, mode)

    def apply(self, x, size, source):
        m = self.match
        kept = m(x, "keep")  # (B, N', C) every output row as it was before merging
        norm = x.norm(dim=-1, keepdim=True)  # (B, N, 1)
        top = m(norm, "amax")  # (B, N', 1) the largest norm in each group
        if self.port:
            mean = m(x, "mean")  # (B, N', C) plain mean of a B token and its A partners (scatter_reduce "mean")
            merged = mean / m(norm, "keep") * top  # divided by the B token's own norm, as the port does
            size = None if size is None else m(size, "keep")
        else:
            weight = torch.ones_like(x[..., :1]) if size is None else size
            mean = m(x * weight, "sum") / m(weight, "sum")  # (B, N', C) size-weighted average direction
            merged = mean / mean.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny) * top
            joined = m(torch.ones_like(weight), "sum") > 1  # (B, N', 1) rows that received a token
            merged = torch.where(joined, merged, kept)
            size = m(weight, "sum")
        first_b = m.split.num_prefix + m.unm_idx.shape[1]  # prefix and unmatched A rows stay exact
        x = torch.cat([kept[:, :first_b], merged[:, first_b:]], dim=1)
        source = None if source is None else m(source, "amax")
        return x, size, source


@dataclass(frozen=True, eq=False)
class Clusters(Plan):
    """Clustering: each non-prefix token joins cluster `assign` (B, M, 1) in [0, k); the output is [prefix
    tokens, cluster 0, ..., cluster k - 1], each cluster the combination of its members."""

    assign: Tensor
    k: int
    num_prefix: int

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        p = self.num_prefix
        prefix, rest = x[:, :p], x[:, p:]
        out = rest.new_zeros(rest.shape[0], self.k, rest.shape[-1])
        out = out.scatter_reduce(1, self.assign.expand_as(rest), rest, reduce=mode, include_self=False)
        return torch.cat([prefix, out], dim=1)


@dataclass(frozen=True, eq=False)
class PerImage(Plan):
    """One of two plans per image: `first` where `choose` (B,) is true, `second` elsewhere (PPT's pooling or
    pruning). Both must leave as many tokens. Both run on the whole batch and `torch.where` picks each image's
    rows, so the choice never leaves the device (no host synchronisation, no data-dependent shapes)."""

    choose: Tensor
    first: Plan
    second: Plan

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        return torch.where(self.choose[:, None, None], self.first(x, mode), self.second(x, mode))

    def apply(self, x, size, source):
        (xa, size_a, source_a), (xb, size_b, source_b) = (
            self.first.apply(x, size, source),
            self.second.apply(x, size, source),
        )
        pick = self.choose[:, None, None]  # (B, 1, 1)
        if size_a is not None or size_b is not None:  # one plan combined tokens: sizes for all, ones where None
            size_a = torch.ones_like(xa[..., :1]) if size_a is None else size_a
            size_b = torch.ones_like(xb[..., :1]) if size_b is None else size_b
            size = torch.where(pick, size_a, size_b)
        source = None if source is None else torch.where(pick, source_a, source_b)
        return torch.where(pick, xa, xb), size, source


@dataclass(frozen=True, eq=False)
class PruneMerge(Plan):
    """Keep some rows in a given order, merge some others into them, drop the rest (DiffRate: prune, then merge).

    keep: (B, M, 1) the rows kept, in output order (prefix tokens first); src: (B, S, 1) the rows merged away;
    dst: (B, S, 1) the output position in [0, M) each of them joins; weight: (B, S, 1) a factor on the merged
    rows' sizes before they are added (DiffRate's similarity), or None. Rows in neither keep nor src are dropped.
    Features combine by a plain mean of a kept row and the rows joining it (`combine` "mean", as DiffRate's
    `scatter_reduce(reduce="mean")`) or size-weighted ("weighted", as ToMe's and PiToMe's `merge_wavg`); sizes
    add up, the merged ones scaled by `weight`."""

    keep: Tensor
    src: Tensor
    dst: Tensor
    weight: Tensor | None = None
    combine: str = "mean"

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        c = x.shape[-1]
        out = x.gather(dim=1, index=self.keep.expand(-1, -1, c))  # (B, M, C)
        if mode == "keep" or self.src.shape[1] == 0:
            return out
        src = x.gather(dim=1, index=self.src.expand(-1, -1, c))  # (B, S, C)
        return out.scatter_reduce(1, self.dst.expand(-1, -1, c), src, reduce=mode)  # include_self: the kept row too

    def apply(self, x, size, source):
        if self.src.shape[1] == 0:  # nothing merged: a pure prune keeps sizes as they were (None stays None)
            return (
                self(x, "keep"),
                None if size is None else self(size, "keep"),
                None if source is None else self(source, "keep"),
            )
        if size is None:
            size = torch.ones_like(x[..., :1])
        merged = size.gather(dim=1, index=self.src)  # (B, S, 1)
        if self.weight is not None:
            merged = merged * self.weight
        new_size = size.gather(dim=1, index=self.keep).scatter_add(1, self.dst, merged)  # (B, M, 1)
        if self.combine == "weighted":
            x = self(x * size, "sum") / new_size
        else:
            x = self(x, COMBINE_MODES[self.combine])
        size = new_size
        if source is not None:
            source = self(source, "amax")
        return x, size, source


@dataclass(frozen=True, eq=False)
class Bidirectional(Plan):
    """Bidirectional bipartite merging (MCTF): A (even positions) into B (odd), then B into the A tokens left.

    Step 1: the A tokens `src_idx` (B, r1, 1) merge into their B partners `dst_idx` (B, r1, 1); the A tokens
    `unm_idx` (B, Na - r1, 1) stay (A prefix tokens among them, first). Step 2: the non-prefix B tokens `src2_idx`
    (B, r2, 1) (indices into B) merge into `dst2_idx` (B, r2, 1), positions in the A tokens left; `unm2_idx` (B,
    Nb - pb - r2, 1) stay. Output: [prefix tokens, the A tokens left (non-prefix), the B tokens left (non-prefix)].
    Without step 2 (`src2_idx` None): [prefix tokens, the A tokens left, B without its prefix tokens].

    pooling, how merged tokens combine (MCTF's `merge_wavg`): "attention" weighs each token by the attention it
    receives x its size over the largest size (`weight`, (B, N, 1)); "size" by its size; "max" max-pools; "mean"
    averages. Sizes add up either way. `attend` fuses the block's attention matrix alongside: key columns summed,
    query rows pooled the same way as the tokens."""

    num_prefix: int
    prefix_in_a: int
    unm_idx: Tensor
    src_idx: Tensor
    dst_idx: Tensor
    src2_idx: Tensor | None
    dst2_idx: Tensor | None
    unm2_idx: Tensor | None
    pooling: str = "attention"
    attn_m: Tensor | None = None  # (B, N, 1) attention each token receives, for pooling "attention"
    size: Tensor | None = None  # (B, N, 1) the sizes before this merge, for `attend` (None: all ones)
    fuse_attention: bool = True  # False: `attend` gives None, the block attends over the fused tokens afresh

    @property
    def combine(self) -> str:
        """ "weighted" (by size, ToMe's rule) for pooling "size"; else the pooling's own name."""
        return "weighted" if self.pooling == "size" else self.pooling

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        """(B, N, C) -> (B, N - r, C), merged rows reduced by `mode` ("sum", "amax", "mean")."""
        a, b = x[:, ::2], x[:, 1::2]
        batch, _, c = x.shape
        p, pa = self.num_prefix, self.prefix_in_a
        pb = p - pa
        unm = a.gather(1, self.unm_idx.expand(batch, -1, c))  # (B, Na - r1, C)
        src = a.gather(1, self.src_idx.expand(batch, -1, c))  # (B, r1, C)
        dst = b.scatter_reduce(1, self.dst_idx.expand(batch, -1, c), src, reduce=mode)  # (B, Nb, C)
        if self.src2_idx is None:
            return torch.cat([x[:, :p], unm[:, pa:], dst[:, pb:]], dim=1)
        src2 = dst.gather(1, self.src2_idx.expand(batch, -1, c))  # (B, r2, C)
        unm2 = dst.gather(1, self.unm2_idx.expand(batch, -1, c))  # (B, Nb - pb - r2, C)
        dst2 = unm.scatter_reduce(1, self.dst2_idx.expand(batch, -1, c), src2, reduce=mode)  # (B, Na - r1, C)
        return torch.cat([x[:, :p], dst2[:, pa:], unm2], dim=1)

    def apply(self, x, size, source):
        if size is None:
            size = torch.ones_like(x[..., :1])
        if self.pooling == "attention":
            # merge_wavg, pooling_type 1: x * attn_m * (size / size_max) summed, over the same weights summed
            ratio = size / size.amax(dim=-2, keepdim=True)
            merged = self(x * self.attn_m * ratio, "sum") / self(self.attn_m * ratio, "sum")
        elif self.pooling == "size":
            merged = self(x * size, "sum") / self(size, "sum")
        elif self.pooling == "max":
            merged = self(x, "amax")
        else:  # mean
            merged = self(x, "sum") / self(torch.ones_like(size), "sum")
        # Prefix tokens are never merged: put back exactly (pooling them through w * x / w is off by a rounding).
        merged = torch.cat([x[:, : self.num_prefix], merged[:, self.num_prefix :].to(x.dtype)], dim=1)
        source = None if source is None else self(source, "amax")
        return merged, self(size, "sum"), source

    def attend(self, probs: Tensor) -> Tensor | None:
        """(B, H, N, N) -> (B, H, N', N'): key columns summed, then query rows pooled as the tokens are (with the
        sizes before this merge, as the authors' `merge_wavg` does); None when the plan fuses the tokens only."""
        if not self.fuse_attention:
            return None
        b, h, n, _ = probs.shape
        cols = self(probs.permute(0, 3, 1, 2).reshape(b, n, h * n), "sum")  # (B, N', H * Nq)
        k = cols.shape[1]
        cols = cols.reshape(b, k, h, n).permute(0, 2, 3, 1)  # (B, H, Nq, N')

        def rows(t: Tensor, mode: str) -> Tensor:  # (B, H, Nq, N') -> (B, H, N', N'), query rows merged
            out = self(t.permute(0, 2, 1, 3).reshape(b, n, h * k), mode)  # (B, N', H * N')
            return out.reshape(b, k, h, k).permute(0, 2, 1, 3)

        size = torch.ones_like(probs[:, 0, :, :1]) if self.size is None else self.size.to(probs.dtype)  # (B, N, 1)
        if self.pooling == "max":
            return rows(cols, "amax")
        if self.pooling == "mean":
            return rows(cols, "sum") / self(torch.ones_like(size), "sum")[:, None]
        if self.pooling == "size":
            return rows(cols * size[:, None], "sum") / self(size, "sum")[:, None]
        ratio = size / size.amax(dim=-2, keepdim=True)
        return rows(cols * self.attn_m[:, None] * ratio[:, None], "sum") / self(self.attn_m * ratio, "sum")[:, None]


def no_autocast(device: str) -> contextlib.AbstractContextManager:
    """Autocast switched off on `device` where it is on (a product that must keep its float32), else nothing: the
    meta device (the FLOP count's) has no autocast at all."""
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


@dataclass(frozen=True, eq=False)
class Resample(Plan):
    """A linear resampling of the non-prefix tokens: [prefix tokens, matrix @ the other tokens], matrix (M, T).

    Every output token mixes all T input tokens, so none stands for a countable set of patches: sizes that were
    implicit (None) stay so (no token weighs more than another, as in the DCT port, which tracks no sizes); given
    sizes are spread evenly over the M tokens (their total is kept); each output token's source is the union of
    the inputs' sources. The product runs in float32 (float64 for float64 tokens) with autocast off, as the authors
    run their DCT in float32, and comes back in the tokens' own dtype."""

    matrix: Tensor
    num_prefix: int

    def __call__(self, x: Tensor, mode: str = "sum") -> Tensor:
        p = self.num_prefix
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        with no_autocast(x.device.type):
            rest = self.matrix.to(work) @ x[:, p:].to(work)  # (B, M, C)
        return torch.cat([x[:, :p], rest.to(x.dtype)], dim=1)

    def apply(self, x, size, source):
        p, m = self.num_prefix, self.matrix.shape[0]
        x = self(x)
        if size is not None:
            spread = size[:, p:].sum(dim=1, keepdim=True) / m  # (B, 1, 1)
            size = torch.cat([size[:, :p], spread.expand(-1, m, -1)], dim=1)
        if source is not None:
            union = source[:, p:].amax(dim=1, keepdim=True)  # (B, 1, N0)
            source = torch.cat([source[:, :p], union.expand(-1, m, -1)], dim=1)
        return x, size, source


def merge_tokens(
    plan: Plan, x: Tensor, size: Tensor | None, source: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Apply a plan to features, sizes and sources, with sizes made explicit (all ones when None).

    x: (B, N, C); size: (B, N, 1) or None for all ones; source: (B, N, N0) 0/1 map to input tokens, or None.
    Returns x (B, N', C), size (B, N', 1), source (B, N', N0) or None."""
    x, size, source = plan.apply(x, size, source)
    if size is None:
        size = torch.ones_like(x[..., :1])
    return x, size, source
