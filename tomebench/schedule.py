"""Per-layer merging schedules (how many tokens each block removes) and r value ranges from the CLI."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tomebench.errors import UsageError

SCHEDULES = ("constant", "decreasing")


def layer_schedule(r: int | Sequence[int], depth: int, schedule: str = "constant") -> tuple[int, ...]:
    """The requested r of each of `depth` blocks.

    `r` is tokens per layer (an int) or an explicit per-layer list (shorter lists are padded with 0).
    "constant" removes r in every block; "decreasing" goes linearly from 2r in the first block to 0 in the
    last, rounded so that the total stays r * depth (the paper's decreasing schedule at the same budget).
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
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)} or a list like 8,8,4.")
    if schedule == "constant" or depth == 1:
        return (r,) * depth
    # decreasing: block i ideally removes 2r (d-1-i) / (d-1). Exact integer arithmetic: floor each, then hand the
    # remainder to the largest fractional parts (earlier blocks first on ties), which keeps the schedule
    # non-increasing, 2r first, 0 last, and the total exactly r * depth.
    span = depth - 1
    numerators = [2 * r * (span - i) for i in range(depth)]
    values = [n // span for n in numerators]
    remainder = r * depth - sum(values)
    by_fraction = sorted(range(depth), key=lambda i: (-(numerators[i] % span), i))
    for i in by_fraction[:remainder]:
        values[i] += 1
    return tuple(values)


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
    raise UsageError(f"bad schedule {text!r}: use one of {', '.join(SCHEDULES)} or a per-layer list like 16,12,8.")


def schedule_label(schedule: str | Sequence[int]) -> str:
    """How a schedule is written in the CSV."""
    return schedule if isinstance(schedule, str) else ",".join(str(v) for v in schedule)


def parse_r_values(text: str) -> list[int]:
    """Parse an r specification: "16", "0,8,16", "0..24" (inclusive) or "0..24:4" (with a step)."""
    spec = text.strip()
    m = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)(?:\s*:\s*(\d+))?", spec)
    if m:
        start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
        if step == 0:
            raise UsageError(f"bad r range {text!r}: the step must be >= 1, as in 0..24:4.")
        if stop < start:
            raise UsageError(f"bad r range {text!r}: the end is below the start; write it as {stop}..{start}.")
        return list(range(start, stop + 1, step))
    if re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        values = [int(v) for v in spec.split(",")]
        return list(dict.fromkeys(values))
    if re.fullmatch(r"-\d+", spec) or re.search(r"(^|,)\s*-\d", spec):
        raise UsageError(f"bad r {text!r}: r counts tokens removed per layer and must be >= 0.")
    raise UsageError(f"bad r {text!r}: use a number (16), a list (0,8,16) or a range (0..24 or 0..24:4).")


def full_r(num_tokens: int, num_prefix_tokens: int, depth: int) -> int:
    """The largest constant r worth sweeping: the one that spends every non-prefix token over the blocks.

    (196 patches, 12 blocks) -> 16, the paper's r for ViT-B/16 and DeiT; (196, 24) -> 8 for ViT-L/16.
    """
    return max(num_tokens - num_prefix_tokens, 0) // max(depth, 1)
