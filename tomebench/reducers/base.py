"""The reducer contract: what a reducer declares when it registers, what it sees of one block, and the budget.

A reducer is a pure function `fn(tokens: LayerTokens, r: int, **options) -> Plan`, registered with
`@register(name, kind=..., acts=..., needs=..., ...)`. The registration is its spec: what kind of reduction it
is, where in the block it acts, what it reads, its native budget knob, its default proportional attention and
where its rules come from. The function holds only its maths: the block loop (`tomebench.patch`) clamps the
budget to what the block's tokens allow, skips a block with nothing to remove, and applies the returned plan to
features, sizes and sources. Options are read from the function's signature (`tomebench.reducers.options`) and
checked once, when a configuration is planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from tomebench.errors import UsageError
from tomebench.reducers.options import Option, canonical, options_of, validate
from tomebench.reducers.plans import IDENTITY, Plan
from tomebench.registry import Registry

# resample: every output token is a linear combination of all the input tokens (DCT's low-pass resampling), so no
# token stands for a countable set of patches.
Kind = Literal["merge", "prune", "hybrid", "resample", "none"]
# Where in a block the reducer acts: between attention and MLP (ToMe), before attention (MCTF's one-step-ahead
# fusion), after the MLP (DCT).
Site = Literal["attention-mlp", "before-attention", "after-mlp"]
SITES: tuple[str, ...] = ("attention-mlp", "before-attention", "after-mlp")
# What a reducer may read of a block (LayerTokens): the head-mean keys; the cls token's attention row (one 1 x N
# row per head, so the block's attention stays fused); the full attention matrix (eager); q/k/v per head; the
# block's input tokens; sizes.
NEEDS = frozenset({"metric", "cls_attention", "attention", "qkv", "x", "size"})


@dataclass(frozen=True)
class LayerTokens:
    """What a reducer may look at in one block. Prefix tokens (cls, distillation, registers) come first.

    metric: (B, N, C) similarity features, by default the keys averaged over heads.
    size: (B, N, 1) how many input patches each token stands for; None while no token was merged.
    layer: the block's index, so seeded reducers draw different numbers in different blocks; depth: the blocks.
    cls_attention: computes (B, N), the attention the cls token pays each token in this block (mean over heads,
        proportional attention applied); None when the model has no cls token. One (1 x N) row per head, so the
        block's own attention stays a fused SDPA call.
    mean_attention: computes (B, N), the attention each token receives, averaged over heads and queries. Needs
        the full (N x N) attention, so it is eager; for models without a cls token.
    features: features(kind, heads) computes (B, N, C') other similarity features: kind "k", "q", "v" (per head,
        heads "mean" averaged -> C' = D or "concat" -> C' = H * D) or "x" (the block's input tokens, C' = C).
    attention: computes the full attention probabilities (B, H, N, N) of this block (eager).
    x: (B, N, C) the tokens the plan will be applied to (after the attention residual, or the block's output for
        a reducer acting after the MLP).
    These are computed only when a reducer calls them.
    """

    metric: Tensor
    size: Tensor | None
    num_prefix_tokens: int
    layer: int = 0
    cls_attention: Callable[[], Tensor] | None = None
    mean_attention: Callable[[], Tensor] | None = None
    features: Callable[[str, str], Tensor] | None = None
    attention: Callable[[], Tensor] | None = None
    x: Tensor | None = None
    depth: int = 0


@dataclass(frozen=True)
class Layout:
    """The token layout of a model at its configured input size, as a reducer's `refuses` check sees it."""

    num_tokens: int  # entering the first block, prefix tokens included
    num_prefix_tokens: int
    depth: int
    has_cls: bool = True
    architecture: str = ""  # the model's architecture name where its family has one (timm: deit_small_patch16_224)


def max_r(num_tokens: int, num_prefix_tokens: int) -> int:
    """The most tokens one layer can remove: bipartite matching pairs at most half the non-prefix tokens."""
    return max(num_tokens - num_prefix_tokens, 0) // 2


@dataclass(frozen=True)
class ReducerSpec:
    """A registered reducer: its plan function and what it declares. Calling the spec is what the block loop does:
    the budget clamped to what the tokens allow (`most`), nothing computed when there is nothing to remove."""

    name: str
    plan: Callable[..., Plan]
    kind: Kind
    acts: Site = "attention-mlp"
    needs: frozenset[str] = frozenset({"metric"})
    knob: str = "r"  # the native budget knob: "r" (tokens per block), or an option name (keep_rate, ratio, ...)
    prop_attn: bool = True  # the authors' default; the model's own default (off for MAE) still applies on top
    description: str = ""
    source: str = ""  # where its rules come from: the authors' repository and commit, or the paper
    options: tuple[Option, ...] = field(default=())
    most: Callable[[int, int], int] = max_r  # (tokens, prefix tokens) -> the most one block can remove
    # (options, layout) -> why these options cannot run on this model (one line), or None; asked once, when a
    # configuration is planned, so a configuration that cannot run fails before anything is timed.
    refuses: Callable[[dict, Layout], str | None] | None = None
    # (options, layout) -> the tokens each block is asked to remove, for a reducer whose budget is its own knob (a
    # keep rate at some blocks, a ratio, a released schedule) rather than r spread by a schedule; None: r. A
    # reducer whose knob is r but that spends it its own way (PPT: r at each of a few blocks) takes r as well:
    # (options, layout, r) -> the same.
    budget: Callable[..., tuple[int, ...]] | None = None
    # layout -> the values a discrete knob can take on this model (a released schedule's targets), for --match
    grid: Callable[[Layout], tuple] | None = None
    # (options, layout) -> one dict per block of the plan function's keyword-only arguments, for a reducer whose
    # blocks differ by more than their r (a released schedule that prunes, then merges, its own amounts per block).
    # Decided once, when a configuration is planned; keyword-only parameters are never user options.
    per_block: Callable[[dict, Layout], tuple[dict, ...]] | None = None
    # (options, layout) -> which blocks reduce at all (one bool per block), for a reducer whose authors switch it
    # on in some blocks only (MCTF's activate_layer); the others are asked for r = 0. None: every block.
    active: Callable[[dict, Layout], tuple[bool, ...]] | None = None
    # options -> where the reducer acts, for one whose options move it (MCTF without one-step-ahead merges after
    # the MLP); None: always `acts`.
    site: Callable[[dict], Site] | None = None
    # (the r each block is asked for, options, layout) -> what the reducer removes of it, for one whose authors
    # count their r their own way (ATC removes r - 1 where there is a cls token). Applied after the schedule and
    # `active`, so schedules and per-block lists still work; None: r as asked.
    spend: Callable[[tuple[int, ...], dict, Layout], tuple[int, ...]] | None = None

    def where(self, options: dict) -> Site:
        """Where in the block the reducer acts with these (checked) options."""
        return self.acts if self.site is None else self.site(self.defaults() | options)

    def __call__(self, tokens: LayerTokens, r: int, **options: object) -> Plan:
        r = min(r, self.most(tokens.metric.shape[1], tokens.num_prefix_tokens))
        if r <= 0:
            return IDENTITY
        return self.plan(tokens, r, **options)

    def check(self, options: dict, layout: Layout | None = None) -> dict:
        """The options, checked against the declaration (UsageError on an unknown key or a bad value) and, given
        the model's layout, against what that model can run."""
        checked = validate(self.name, self.options, options)
        if layout is not None and self.refuses is not None:
            reason = self.refuses(self.defaults() | checked, layout)
            if reason:
                raise UsageError(reason)
        return checked

    def canonical(self, options: dict) -> tuple[tuple[str, object], ...]:
        """Checked options without defaults and inert ones, sorted: a row's identity. A reducer whose budget is an
        option keeps that option even at its default, so every row says which value it ran."""
        checked = self.check(options)
        if self.knob != "r":
            checked = {self.knob: self.defaults().get(self.knob)} | checked
        return canonical(self.options, checked, keep=() if self.knob == "r" else (self.knob,))

    def requested(self, r: int | tuple[int, ...], schedule, options: dict, layout: Layout) -> tuple[int, ...]:
        """The tokens each block is asked to remove (before the loop's clamp): the reducer's own budget from its
        knob, or r spread over the blocks by `schedule` (a `Schedule`)."""
        if self.budget is not None and self.knob != "r":
            return tuple(self.budget(self.defaults() | options, layout))
        if self.budget is not None:
            if isinstance(r, tuple):
                raise UsageError(f"reducer {self.name} spends r its own way, block by block: give one r, not a list")
            return tuple(self.budget(self.defaults() | options, layout, r))
        requested = r if isinstance(r, tuple) else schedule.per_layer(r, layout.depth)
        return self.only_active(requested, options, layout)

    def only_active(self, requested: tuple[int, ...], options: dict, layout: Layout) -> tuple[int, ...]:
        """The requested r of every block as the reducer spends it (`spend`), 0 in the blocks it does not act in
        (`active`)."""
        full = self.defaults() | options
        if self.active is not None:
            on = self.active(full, layout)
            requested = tuple(v if active else 0 for v, active in zip(requested, on))
        if self.spend is not None:
            requested = self.spend(tuple(requested), full, layout)
        return tuple(requested)

    def blocks(self, options: dict, layout: Layout) -> tuple[dict, ...]:
        """The per-block keyword-only arguments of the plan function (one dict per block; empty dicts when the
        reducer declares none)."""
        if self.per_block is None:
            return ({},) * layout.depth
        blocks = tuple(self.per_block(self.defaults() | options, layout))
        if len(blocks) != layout.depth:
            raise ValueError(f"reducer {self.name}: per_block gave {len(blocks)} blocks for a model of {layout.depth}")
        return blocks

    def defaults(self) -> dict[str, object]:
        return {option.name: option.default for option in self.options}


REDUCERS: Registry[ReducerSpec] = Registry("reducer")


def reducer_spec(
    name: str,
    fn: Callable[..., Plan],
    *,
    kind: Kind,
    acts: Site = "attention-mlp",
    needs: tuple[str, ...] = ("metric",),
    knob: str = "r",
    prop_attn: bool = True,
    source: str = "",
    most: Callable[[int, int], int] = max_r,
    refuses: Callable[[dict, Layout], str | None] | None = None,
    budget: Callable[..., tuple[int, ...]] | None = None,
    grid: Callable[[Layout], tuple] | None = None,
    per_block: Callable[[dict, Layout], tuple[dict, ...]] | None = None,
    active: Callable[[dict, Layout], tuple[bool, ...]] | None = None,
    site: Callable[[dict], Site] | None = None,
    spend: Callable[[tuple[int, ...], dict, Layout], tuple[int, ...]] | None = None,
) -> ReducerSpec:
    """The spec of a plan function `fn(tokens, r, **options) -> Plan`, its options read from its signature. Not
    registered: `register` does that; a spec can also be passed to `patch` as it is."""
    if acts not in SITES:
        raise ValueError(f"reducer {name!r}: acts must be one of {', '.join(SITES)}, got {acts!r}")
    if knob != "r" and budget is None:
        raise ValueError(f"reducer {name!r}: a knob other than r needs a budget function")
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"reducer {name!r}: unknown needs {sorted(unknown)}; choose from {sorted(NEEDS)}")
    lines = (fn.__doc__ or "").strip().splitlines()
    return ReducerSpec(
        name,
        fn,
        kind,
        acts=acts,
        needs=frozenset(needs),
        knob=knob,
        prop_attn=prop_attn,
        description=lines[0] if lines else "",
        source=source,
        options=tuple(options_of(fn)),
        most=most,
        refuses=refuses,
        budget=budget,
        grid=grid,
        per_block=per_block,
        active=active,
        site=site,
        spend=spend,
    )


def register(name: str, *, aliases: tuple[str, ...] = (), **declared) -> Callable[[Callable[..., Plan]], Callable]:
    """Register a plan function as a reducer (see `reducer_spec` for what it declares); returns the function."""

    def add(fn: Callable[..., Plan]) -> Callable[..., Plan]:
        spec = reducer_spec(name, fn, **declared)
        REDUCERS.register(name, aliases=aliases, description=spec.description)(spec)
        return fn

    return add


_MASK32 = 0xFFFFFFFF


def _hash32(x):
    """A bijective 32-bit integer hash (two xorshift-multiply rounds); works on Python ints and int64 tensors. Every
    intermediate stays below 2^60, so int64 never overflows and right shifts are on non-negative numbers."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def seeded_keys(seed: int, n: int, device: torch.device | str | None = None) -> Tensor:
    """(n,) distinct pseudo-random int64 keys for positions 0..n-1, a function of (seed, n) alone.

    Seeded reducers draw once per block and share the draw across the batch, so an image's tokens never depend on
    its place in the batch. The keys come from a counter-based hash rather than a stateful generator: integer
    arithmetic is exact, so every device draws the same keys, and torch.compile traces it without a graph break.
    Ranking the keys gives a random order (no ties: the hash is a bijection).
    """
    key = _hash32(int(seed) & _MASK32)
    return _hash32((torch.arange(n, device=device, dtype=torch.int64) + key) & _MASK32)
