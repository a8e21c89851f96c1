"""Per-layer merging schedules (how many tokens each block removes) and r value ranges from the CLI."""

from __future__ import annotations

import math
import numbers
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from tomebench.errors import UsageError

SCHEDULES = ("constant", "decreasing", "increasing")
# "inflection:T", T in [-1, 1]: the authors' (r, inflection) schedule, -1 decreasing, 0 constant, 1 increasing.
INFLECTION = "inflection"
# "inflection-exact:T": the same shape with the total held at exactly r x depth (tomebench's own variant).
INFLECTION_EXACT = "inflection-exact"


@dataclass(frozen=True)
class Schedule:
    """How a sweep's r spreads over the blocks, parsed once from what the user typed (the authors' `parse_r` idea).

    kind "inflection": the authors' (r, inflection) line with slope T in [-1, 1] (constant T = 0, decreasing -1,
    increasing 1); "inflection-exact": the same line with the total held at exactly r x depth; "explicit": one r
    per block, `blocks`. `label` is how the CSV's schedule column writes it, and parses back to the same value.
    """

    kind: str = INFLECTION
    slope: Fraction = Fraction(0)
    blocks: tuple[int, ...] = ()
    text: str = ""  # T exactly as given ("-0.5"), so the label never rounds what was measured

    @property
    def explicit(self) -> bool:
        return self.kind == EXPLICIT

    @property
    def label(self) -> str:
        if self.explicit:
            return ",".join(str(v) for v in self.blocks)
        if self.kind == INFLECTION and self.slope in NAMED_SLOPES:
            return NAMED_SLOPES[self.slope]
        return f"{self.kind}:{self.text or _decimal(self.slope)}"

    def per_layer(self, r: int, depth: int) -> tuple[int, ...]:
        """The requested r of each of `depth` blocks (an explicit schedule ignores r)."""
        return layer_schedule(self.blocks if self.explicit else r, depth, self)

    def __str__(self) -> str:
        return self.label


NAMED_SLOPES = {Fraction(0): "constant", Fraction(-1): "decreasing", Fraction(1): "increasing"}
EXPLICIT = "explicit"
CONSTANT = Schedule()


def _decimal(value: Fraction | str) -> str:
    """T as a plain decimal, exactly: "0.50" -> "0.5", ".333" -> "0.333", a Fraction with a finite expansion alike."""
    if isinstance(value, Fraction):
        value = str(Decimal(value.numerator) / Decimal(value.denominator))
    text = format(Decimal(value).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def layer_schedule(r: int | Sequence[int], depth: int, schedule: str | Schedule = "constant") -> tuple[int, ...]:
    """The requested r of each of `depth` blocks.

    `r` is tokens per layer (an int) or an explicit per-layer list of exactly `depth` values. "constant" removes r
    in every block. The others are the authors' (r, inflection) schedule (facebookresearch/ToMe `parse_r`), with
    their sign: "decreasing" is inflection -1 (2r in the first block down to 0 in the last), "increasing" +1 (0 up
    to 2r), "inflection:T" anything between. Block i removes int(lo + (hi - lo) * i / (depth - 1)) with
    lo = int(r (1 - T)), hi = 2r - lo: truncated, so the total can fall a few tokens short of r x depth (ViT-B,
    r = 16, decreasing: 187 instead of 192). "inflection-exact:T" is the same line with the total held at exactly
    r x depth (floors, the remainder to the largest fractional parts).
    """
    if not isinstance(r, numbers.Integral):
        values = tuple(int(v) for v in r)
        if len(values) != depth:
            raise UsageError(
                f"the schedule lists {len(values)} layers but the model has {depth} blocks: give one r per block"
                + (
                    f" (pad with zeros: {','.join(map(str, values + (0,) * (depth - len(values))))})."
                    if len(values) < depth
                    else "."
                )
            )
        if any(v < 0 for v in values):
            raise UsageError(f"r must be >= 0 in every layer, got {list(values)}.")
        return values
    r = int(r)
    if r < 0:
        raise UsageError(f"r must be >= 0, got {r}.")
    parsed = schedule if isinstance(schedule, Schedule) else parse_schedule(schedule)
    if parsed.explicit:
        raise UsageError(f"the schedule {parsed.label} lists one r per block; it takes no separate r")
    if parsed.kind == INFLECTION_EXACT:
        return _exact_inflection(r, depth, parsed.slope)
    if parsed.slope == 0:
        return (r,) * depth
    return _authors_inflection(r, depth, float(parsed.slope))


def _authors_inflection(r: int, depth: int, inflect: float) -> tuple[int, ...]:
    """The authors' per-block r for (r, inflect), in the same float arithmetic so truncation matches exactly."""
    lo = int(r * (1.0 - inflect))
    hi = 2 * r - lo
    if depth == 1:  # the authors' formula divides by depth - 1; its first block is lo
        return (lo,)
    step = (hi - lo) / (depth - 1)
    return tuple(int(lo + step * i) for i in range(depth))


def _exact_inflection(r: int, depth: int, slope: Fraction) -> tuple[int, ...]:
    """The inflection line with its total held at exactly r x depth, in exact fractions; stays monotonic."""
    if slope == 0 or depth == 1:
        return (r,) * depth
    span = depth - 1
    # Block i ideally removes r (1 + T (2i - (d - 1)) / (d - 1)): 0 .. 2r for T = 1, 2r .. 0 for T = -1.
    ideal = [r * (1 + slope * Fraction(2 * i - span, span)) for i in range(depth)]
    values = [math.floor(v) for v in ideal]
    remainder = r * depth - sum(values)
    # Ties go to the blocks that should remove more: the later ones when increasing, the earlier when decreasing.
    by_fraction = sorted(range(depth), key=lambda i: (-(ideal[i] - values[i]), -i if slope > 0 else i))
    for i in by_fraction[:remainder]:
        values[i] += 1
    return tuple(values)


# (tokens, prefix tokens) -> the most one block can remove; a reducer declares its own (reducers/base.py `most`).
Most = Callable[[int, int], int]


def bipartite_most(num_tokens: int, num_prefix_tokens: int) -> int:
    """The paper's clamp: bipartite matching pairs at most half the non-prefix tokens, (N - prefix) // 2."""
    return max(num_tokens - num_prefix_tokens, 0) // 2


def effective_schedule(
    rs: Sequence[int], num_tokens: int, num_prefix_tokens: int, most: Most = bipartite_most
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What the schedule really removes: each layer's r clamped to `most` of the tokens it gets ((N - prefix) // 2
    unless a reducer allows more or less).

    Returns (effective r per layer, tokens after each layer).
    """
    effective, tokens = [], []
    n = num_tokens
    for r in rs:
        r_eff = min(r, most(n, num_prefix_tokens))
        n -= r_eff
        effective.append(r_eff)
        tokens.append(n)
    return tuple(effective), tuple(tokens)


# Longest inflection value accepted: T is a number in [-1, 1], and a longer text is a typo, not a schedule.
MAX_SLOPE_TEXT = 32


def parse_schedule(text: str | Schedule) -> Schedule:
    """What the user typed (CLI, TOML, API) as a Schedule: a named one, "inflection:T", "inflection-exact:T", or
    an explicit per-layer list "16,12,8"."""
    if isinstance(text, Schedule):
        return text
    if not isinstance(text, str):
        raise UsageError(f"a schedule is text such as constant, decreasing or 16,12,8; got {text!r}")
    spec = text.strip()
    named = {label: slope for slope, label in NAMED_SLOPES.items()}
    if spec in named:
        return Schedule(INFLECTION, named[spec])
    if re.fullmatch(r"\d{1,6}(\s*,\s*\d{1,6})*", spec):
        return Schedule(EXPLICIT, blocks=tuple(int(v) for v in spec.split(",")))
    head, sep, value = spec.partition(":")
    head, value = head.strip(), value.strip()
    if head in (INFLECTION, INFLECTION_EXACT):
        slope = None
        if sep and len(value) <= MAX_SLOPE_TEXT and re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", value):
            slope = Fraction(value)
        if slope is None or not -1 <= slope <= 1:
            raise UsageError(
                f"bad schedule {text!r}: write {head}:T with T a number between -1 (decreasing) and 1 "
                "(increasing), e.g. inflection:-0.5"
            )
        if head == INFLECTION and slope in NAMED_SLOPES:
            return Schedule(INFLECTION, slope)
        return Schedule(head, slope, text=_decimal(value))
    raise UsageError(
        f"bad schedule {text!r}: use one of {', '.join(SCHEDULES)}, inflection:T or inflection-exact:T "
        "(T in [-1, 1]) or a per-layer list like 16,12,8."
    )


def schedule_label(schedule: str | Schedule | Sequence[int]) -> str:
    """How a schedule is written in the CSV."""
    if isinstance(schedule, Schedule):
        return schedule.label
    return schedule if isinstance(schedule, str) else ",".join(str(v) for v in schedule)


def parse_r_values(text: str) -> list[int]:
    """Parse an r specification: "16", "0,8,16", "0..24" (inclusive) or "0..24:4" (with a step)."""
    return list(_parse_r(text))


# A range longer than this stays a lazy `range`: no model has this many distinct r, and 0..10**13 must not
# allocate a list before the sweep caps it at what the model can do (`distinct_r`).
LAZY_RANGE = 10_000
# No ViT has 10^15 tokens; beyond this a range's length would not even fit in a C integer (len() overflows).
MAX_R = 10**15


def parse_r_spec(text: str) -> tuple[int, ...] | range:
    """parse_r_values for a sweep plan: a tuple, or a `range` when the range is long (see LAZY_RANGE)."""
    values = _parse_r(text)
    return values if isinstance(values, range) and len(values) > LAZY_RANGE else tuple(values)


def _parse_r(text: str) -> range | list[int]:
    spec = text.strip()
    m = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)(?:\s*:\s*(\d+))?", spec)
    if m:
        start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if max(start, stop) > MAX_R:
            raise UsageError(
                f"bad r range {text!r}: r is tokens per block, at most {MAX_R} here (any r above the "
                "model's tokens is capped to what it can do)"
            )
        if step == 0:
            raise UsageError(f"bad r range {text!r}: the step must be >= 1, as in 0..24:4.")
        if stop < start:
            raise UsageError(f"bad r range {text!r}: the end is below the start; write it as {stop}..{start}.")
        return range(start, stop + 1, step)
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        values = [int(v) for v in spec.split(",")]
        if max(values) > MAX_R:
            raise UsageError(f"bad r {text!r}: r is tokens per block, at most {MAX_R} here")
        return list(dict.fromkeys(values))
    if re.fullmatch(r"-\d+", spec) or re.search(r"(^|,)\s*-\d", spec):
        raise UsageError(f"bad r {text!r}: r counts tokens removed per layer and must be >= 0.")
    raise UsageError(f"bad r {text!r}: use a number (16), a list (0,8,16) or a range (0..24 or 0..24:4).")


def saturation_r(
    schedule: str | Schedule,
    depth: int,
    num_tokens: int,
    num_prefix_tokens: int,
    most: Most = bipartite_most,
    slack: int = 0,
) -> int:
    """An r from which a named schedule removes the same tokens in every block whatever r is (an upper bound on
    the smallest such r; `distinct_r` measures below it exactly).

    A block removes at most M = (N - prefix) // 2 tokens. Block i's share of r is c_i = 1 + T (2i - (d - 1)) /
    (d - 1) (the authors' line; their formula truncates twice, so it asks for more than r c_i - 2; the exact
    variant for at least floor(r c_i)); a block whose share is 0 always asks for 0. Once r c_i - 2 >= M for every
    positive c_i, every block asks for M or more, and the effective schedule no longer changes. `most` is the
    reducer's own M (tokens only fall, so its value on the input is the bound for every block); `slack` is what the
    reducer keeps back of each block's r (ATC's authors spend r - 1: slack 1).
    """
    most = most(num_tokens, num_prefix_tokens) + slack
    parsed = parse_schedule(schedule)
    kind, slope = parsed.kind, parsed.slope
    if depth == 1:
        shares = [Fraction(1) if kind == INFLECTION_EXACT or slope == 0 else 1 - slope]
    else:
        shares = [1 + slope * Fraction(2 * i - (depth - 1), depth - 1) for i in range(depth)]
    positive = [c for c in shares if c > 0]
    if not positive:
        return 0
    return math.ceil((most + 2) / min(positive))


def distinct_r(
    r_values: Sequence[int],
    schedule: str | Schedule,
    depth: int,
    num_tokens: int,
    num_prefix_tokens: int,
    most: Most = bipartite_most,
    spend: Callable[[tuple[int, ...]], tuple[int, ...]] | None = None,
) -> tuple[list[int], int]:
    """The r values whose effective per-block schedules differ, first of each kept, in the order given; and the
    saturation r above which all are one. Looks at no more than the values up to the saturation r (plus the
    first above it), so a range of 10**13 costs nothing.

    `most` and `spend` are a reducer's: the most a block can remove, and what it removes of each block's requested
    r (blocks it skips, its authors' own count); both must grow with r, as every registered reducer's do."""
    schedule = parse_schedule(schedule)
    spend = spend or tuple
    cap = saturation_r(schedule, depth, num_tokens, num_prefix_tokens, most)
    asked = layer_schedule(cap, depth, schedule)
    slack = max((a - s for a, s in zip(asked, spend(asked)) if a > 0), default=0)
    if slack > 0:  # it keeps some of each r back: the bound must ask for that much more
        cap = saturation_r(schedule, depth, num_tokens, num_prefix_tokens, most, slack)
    if isinstance(r_values, range) and r_values.step > 0:
        below = max(0, min(len(r_values), (cap - r_values.start) // r_values.step + 1))
        candidates: Sequence[int] = r_values[: below + 1]
    else:
        candidates = r_values

    def key(r: int) -> tuple[int, ...]:
        return effective_schedule(spend(layer_schedule(r, depth, schedule)), num_tokens, num_prefix_tokens, most)[0]

    saturated = key(cap)
    # Requests grow with r in every block, so the r values that reach the saturated schedule are all those from
    # some r on: find the first one, so that what is reported is exact, not the bound.
    low, high = 0, cap
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if key(middle) == saturated else (middle + 1, high)
    cap = low
    kept, seen = [], set()
    for r in candidates:
        key_r = saturated if r >= cap else key(r)
        if key_r not in seen:
            seen.add(key_r)
            kept.append(r)
    return kept, cap


def full_r(num_tokens: int, num_prefix_tokens: int, depth: int) -> int:
    """The largest constant r worth sweeping: the one that spends every non-prefix token over the blocks.

    (196 patches, 12 blocks) -> 16, the paper's r for ViT-B/16 and DeiT; (196, 24) -> 8 for ViT-L/16.
    """
    return max(num_tokens - num_prefix_tokens, 0) // max(depth, 1)


def sample_schedules(
    n: int,
    depth: int,
    num_tokens: int,
    num_prefix_tokens: int,
    totals: tuple[int, int],
    seed: int = 0,
    exclude: Sequence[Sequence[int]] = (),
) -> list[tuple[int, ...]]:
    """n distinct random per-block schedules (the paper's schedule search, its Figure 2).

    Each draws a total number of removed tokens uniformly from `totals` (inclusive), splits it over the blocks
    with random weights (a flat Dirichlet: exponential draws, normalised) rounded to integers that keep the total,
    and is then clamped block by block to what the tokens allow, (N - prefix) // 2, so every schedule is one the
    model really runs. Schedules equal to one in `exclude` are skipped. The same seed gives the same schedules.
    """
    lo, hi = totals
    rng = random.Random(seed)
    seen = {tuple(s) for s in exclude}
    schedules: list[tuple[int, ...]] = []
    for _ in range(100 * n):
        if len(schedules) == n:
            break
        total = rng.randint(lo, hi)
        weights = [rng.expovariate(1.0) for _ in range(depth)]
        ideal = [total * w / sum(weights) for w in weights]
        values = [math.floor(v) for v in ideal]
        for i in sorted(range(depth), key=lambda i: values[i] - ideal[i])[: total - sum(values)]:
            values[i] += 1  # the remainder to the largest fractional parts: the total stays exact
        schedule, _ = effective_schedule(values, num_tokens, num_prefix_tokens)
        if schedule not in seen:
            seen.add(schedule)
            schedules.append(schedule)
    return schedules
