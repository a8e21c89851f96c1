"""Per-layer merging schedules (how many tokens each block removes) and r value ranges from the CLI."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from fractions import Fraction

from tomebench.errors import UsageError

SCHEDULES = ("constant", "decreasing", "increasing")
INFLECTION = "inflection"  # written "inflection:T", T in [-1, 1]: -1 increasing, 0 constant, 1 decreasing


def layer_schedule(r: int | Sequence[int], depth: int, schedule: str = "constant") -> tuple[int, ...]:
    """The requested r of each of `depth` blocks.

    `r` is tokens per layer (an int) or an explicit per-layer list (shorter lists are padded with 0).
    "constant" removes r in every block; "decreasing" goes linearly from 2r in the first block to 0 in the
    last, "increasing" from 0 to 2r, and "inflection:T" interpolates linearly between them (T = 1 is decreasing,
    0 constant, -1 increasing). All keep the total at r * depth (the same budget as constant), exactly: each
    block's ideal share is floored and the remainder goes to the largest fractional parts, so the schedule stays
    monotonic.
    """
    if not isinstance(r, int):
        values = tuple(int(v) for v in r)
        if len(values) > depth:
            raise UsageError(f"the schedule lists {len(values)} layers but the model has {depth} blocks.")
        if any(v < 0 for v in values):
            raise UsageError(f"r must be >= 0 in every layer, got {list(values)}.")
        return values + (0,) * (depth - len(values))
    if r < 0:
        raise UsageError(f"r must be >= 0, got {r}.")
    slope = inflection(schedule)
    if slope == 0 or depth == 1:
        return (r,) * depth
    # Block i ideally removes r (1 + T (d - 1 - 2i) / (d - 1)): 2r .. 0 for T = 1, in exact fractions.
    span = depth - 1
    ideal = [r * (1 + slope * Fraction(span - 2 * i, span)) for i in range(depth)]
    values = [math.floor(v) for v in ideal]
    remainder = r * depth - sum(values)
    # Ties go to the blocks that should remove more: the earlier ones when decreasing, the later when increasing.
    by_fraction = sorted(range(depth), key=lambda i: (-(ideal[i] - values[i]), i if slope > 0 else -i))
    for i in by_fraction[:remainder]:
        values[i] += 1
    return tuple(values)


def inflection(schedule: str) -> Fraction:
    """The slope T of a named schedule: constant 0, decreasing 1, increasing -1, "inflection:T" T."""
    named = {"constant": Fraction(0), "decreasing": Fraction(1), "increasing": Fraction(-1)}
    if schedule in named:
        return named[schedule]
    head, _, value = schedule.partition(":")
    try:
        slope = Fraction(value.strip()) if head.strip() == INFLECTION else None
    except ValueError:
        slope = None
    if slope is None or not -1 <= slope <= 1:
        raise UsageError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}, inflection:T with T "
                         "in [-1, 1], or a list like 8,8,4.")
    return slope


def effective_schedule(
    rs: Sequence[int], num_tokens: int, num_prefix_tokens: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What the schedule really removes: each layer's r clamped to (N - prefix) // 2.

    Returns (effective r per layer, tokens after each layer).
    """
    effective, tokens = [], []
    n = num_tokens
    for r in rs:
        r_eff = min(r, max(n - num_prefix_tokens, 0) // 2)
        n -= r_eff
        effective.append(r_eff)
        tokens.append(n)
    return tuple(effective), tuple(tokens)


def parse_schedule(text: str) -> str | tuple[int, ...]:
    """A CLI/TOML schedule: a named one, or an explicit comma-separated per-layer list."""
    text = text.strip()
    if text in SCHEDULES:
        return text
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        return tuple(int(v) for v in text.split(","))
    if text.startswith(INFLECTION):
        try:
            slope = inflection(text)
        except UsageError:
            raise UsageError(f"bad schedule {text!r}: write inflection:T with T between -1 (increasing) and 1 "
                             "(decreasing), e.g. inflection:0.5") from None
        return f"{INFLECTION}:{float(slope):g}"
    raise UsageError(f"bad schedule {text!r}: use one of {', '.join(SCHEDULES)}, inflection:T (T in [-1, 1]) or a "
                     "per-layer list like 16,12,8.")


def schedule_label(schedule: str | Sequence[int]) -> str:
    """How a schedule is written in the CSV."""
    return schedule if isinstance(schedule, str) else ",".join(str(v) for v in schedule)


def parse_r_values(text: str) -> list[int]:
    """Parse an r specification: "16", "0,8,16", "0..24" (inclusive) or "0..24:4" (with a step)."""
    return list(_parse_r(text))


# A range longer than this stays a lazy `range`: no model has this many distinct r, and 0..10**13 must not
# allocate a list before the sweep caps it at what the model can do (`distinct_r`).
LAZY_RANGE = 10_000


def parse_r_spec(text: str) -> tuple[int, ...] | range:
    """parse_r_values for a sweep plan: a tuple, or a `range` when the range is long (see LAZY_RANGE)."""
    values = _parse_r(text)
    return values if isinstance(values, range) and len(values) > LAZY_RANGE else tuple(values)


def _parse_r(text: str) -> range | list[int]:
    spec = text.strip()
    m = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)(?:\s*:\s*(\d+))?", spec)
    if m:
        start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if step == 0:
            raise UsageError(f"bad r range {text!r}: the step must be >= 1, as in 0..24:4.")
        if stop < start:
            raise UsageError(f"bad r range {text!r}: the end is below the start; write it as {stop}..{start}.")
        return range(start, stop + 1, step)
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        values = [int(v) for v in spec.split(",")]
        return list(dict.fromkeys(values))
    if re.fullmatch(r"-\d+", spec) or re.search(r"(^|,)\s*-\d", spec):
        raise UsageError(f"bad r {text!r}: r counts tokens removed per layer and must be >= 0.")
    raise UsageError(f"bad r {text!r}: use a number (16), a list (0,8,16) or a range (0..24 or 0..24:4).")


def saturation_r(schedule: str, depth: int, num_tokens: int, num_prefix_tokens: int) -> int:
    """The smallest r from which a named schedule removes the same tokens in every block whatever r is.

    A block removes at most M = (N - prefix) // 2 tokens, and block i asks for at least floor(r c_i), c_i =
    1 + T (d - 1 - 2i) / (d - 1) its share of r (0 only where c_i is 0, and then always 0): once r c_i >= M for
    every c_i > 0, every block asks for M or more, and the effective schedule no longer changes.
    """
    most = max(num_tokens - num_prefix_tokens, 0) // 2
    slope = inflection(schedule)
    if depth == 1:
        shares = [Fraction(1)]
    else:
        shares = [1 + slope * Fraction(depth - 1 - 2 * i, depth - 1) for i in range(depth)]
    smallest = min(c for c in shares if c > 0)
    return math.ceil(most / smallest)


def distinct_r(
    r_values: Sequence[int], schedule: str, depth: int, num_tokens: int, num_prefix_tokens: int
) -> tuple[list[int], int]:
    """The r values whose effective per-block schedules differ, first of each kept, in the order given; and the
    saturation r above which all are one. Looks at no more than the values up to the saturation r (plus the
    first above it), so a range of 10**13 costs nothing."""
    cap = saturation_r(schedule, depth, num_tokens, num_prefix_tokens)
    if isinstance(r_values, range) and r_values.step > 0:
        below = max(0, min(len(r_values), (cap - r_values.start) // r_values.step + 1))
        candidates: Sequence[int] = r_values[: below + 1]
    else:
        candidates = r_values
    def key(r: int) -> tuple[int, ...]:
        return effective_schedule(layer_schedule(r, depth, schedule), num_tokens, num_prefix_tokens)[0]

    saturated = key(cap)
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
    n: int, depth: int, num_tokens: int, num_prefix_tokens: int, totals: tuple[int, int], seed: int = 0,
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
