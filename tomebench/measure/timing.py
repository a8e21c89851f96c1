"""The one timing loop: warm-up, then interleaved repeats of several configurations, raw times kept.

On CUDA each repeat is bracketed by CUDA events after a synchronise, and the clock is read only once the
end event has completed, so no queued kernel escapes the measurement. On CPU `time.perf_counter` is exact.
Configurations are measured round-robin (repeat 1 of every configuration, then repeat 2, ...), so clock
drift and noisy neighbours hit all of them alike.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from tomebench.errors import one_line

NOISY_SPREAD = 0.10  # flag a measurement whose p10-p90 spread exceeds this fraction of its median
# A speedup is known well enough to rank when the 95% interval of its median is within this fraction of it, each
# side: what a time budget keeps timing for, and what a figure needs for one point to beat another.
SETTLED = 0.03
Z95 = 1.96


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and how often to repeat. Defaults suit a CPU; `for_device` adapts them."""

    warmup_iters: int = 2
    warmup_s: float = 0.5  # caches fill, GPU clocks ramp up; both minimums must be met
    repeats: int = 7
    min_repeat_s: float = 0.1  # iterations per repeat are chosen so one repeat lasts at least this
    # Seconds of further rounds allowed, after `repeats`, while the caller's `settled` rule says the medians are
    # not yet known well enough (0: exactly `repeats` rounds).
    budget_s: float = 0.0
    max_repeats: int = 10_000

    @classmethod
    def for_device(cls, device: torch.device, repeats: int | None = None) -> TimingPlan:
        plan = cls(warmup_iters=10, warmup_s=2.0, repeats=10, min_repeat_s=0.25) if device.type == "cuda" else cls()
        return plan if repeats is None else replace(plan, repeats=repeats)


LATENCY_CALLS = 100  # timed single-image calls per configuration, at the least: enough for a p99


def latency_plan(device: torch.device, calls: int = LATENCY_CALLS) -> TimingPlan:
    """Per-image latency through the same loop: every repeat is exactly one call (min_repeat_s 0 gives one
    iteration per repeat), timed on its own and, on CUDA, synchronised before and after."""
    plan = TimingPlan.for_device(device)
    return TimingPlan(plan.warmup_iters, plan.warmup_s, max(calls, LATENCY_CALLS), min_repeat_s=0.0)


@dataclass(frozen=True)
class Candidate:
    """One configuration to time. `prepare` puts the model into this configuration (untimed);
    `step` runs one batch of `batch_size` images. `label` is for progress messages only."""

    label: str
    prepare: Callable[[], None]
    step: Callable[[], object]
    batch_size: int = 1


@dataclass(frozen=True)
class Timing:
    """Raw result for one candidate: seconds per iteration of each repeat, plus peak memory.

    error is set (and step_times empty) when the candidate raised; it then left the later rounds.
    """

    step_times: tuple[float, ...]
    iters_per_repeat: int
    peak_mem_mb: float | None
    error: str | None = None
    batch_size: int = 1

    def samples_per_sec(self) -> tuple[float, float, float]:
        """(median, p10, p90) images per second over the repeats."""
        rates = sorted(self.batch_size / t for t in self.step_times)
        return statistics.median(rates), _quantile(rates, 0.1), _quantile(rates, 0.9)

    def speedup_over(self, reference: Timing) -> float:
        """Median over rounds of the paired ratio of images per second, both taken in the same round.

        Rounds are interleaved, so both times of a pair saw the same machine state; the median of these paired
        ratios shrugs off a slow round that a ratio of two medians taken from different rounds would not.
        Per image, so a configuration that backed off to a smaller batch still compares fairly.
        """
        return statistics.median(self._paired_ratios(reference))

    def speedup_spread(self, reference: Timing) -> tuple[float, float]:
        """(p10, p90) of the same paired per-round ratios: how much single rounds scatter."""
        ratios = sorted(self._paired_ratios(reference))
        return _quantile(ratios, 0.1), _quantile(ratios, 0.9)

    def speedup_interval(self, reference: Timing) -> tuple[float, float]:
        """A 95% interval of the median paired ratio (`speedup_over`): how well the speedup is known, which more
        rounds narrow (the p10-p90 spread of single rounds does not narrow)."""
        return median_interval(self._paired_ratios(reference))

    def _paired_ratios(self, reference: Timing) -> list[float]:
        pairs = zip(reference.step_times, self.step_times)
        return [(ref / reference.batch_size) / (own / self.batch_size) for ref, own in pairs]

    def latency_quantiles(self) -> tuple[float, float, float]:
        """(p50, p90, p99) seconds per call, for timings of one call per repeat (`latency_plan`)."""
        calls = sorted(self.step_times)
        return _quantile(calls, 0.5), _quantile(calls, 0.9), _quantile(calls, 0.99)

    def median_step_ms(self) -> float:
        return statistics.median(self.step_times) * 1e3

    def spread(self) -> float:
        """(p90 - p10) / median of the throughput."""
        median, p10, p90 = self.samples_per_sec()
        return (p90 - p10) / median


def time_interleaved(
    candidates: Sequence[Candidate],
    device: torch.device,
    plan: TimingPlan,
    on_repeat: Callable[[str], None] | None = None,
    settled_when: Callable[[list[list[float]]], bool] | None = None,
) -> list[Timing]:
    """Warm up each candidate, then time `plan.repeats` round-robin passes over all of them; with a time budget,
    more passes while `settled_when(times)` (per-candidate seconds per iteration, round by round) says the
    medians are not known well enough yet, until the budget is spent.

    A candidate that raises (out of memory, say) is recorded with its error and leaves the later rounds; the
    others go on, so one failure never throws away the rest of the measurements.
    """
    iters: list[int] = []
    peaks: list[float | None] = []
    errors: list[str | None] = [None] * len(candidates)
    for i, cand in enumerate(candidates):
        iters.append(1)
        peaks.append(None)
        try:
            cand.prepare()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            per_iter = _warm_up(cand.step, device, plan)
        except Exception as exc:  # noqa: BLE001 - becomes this candidate's error, see above
            errors[i] = _failed(exc, device)
            continue
        peaks[i] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        iters[i] = max(1, math.ceil(plan.min_repeat_s / per_iter))

    times: list[list[float]] = [[] for _ in candidates]
    begin = time.perf_counter()
    for done in range(plan.max_repeats):
        if done >= plan.repeats and (
            not plan.budget_s
            or time.perf_counter() - begin > plan.budget_s
            or settled_when is None
            or settled_when(times)
        ):
            break
        for i, cand in enumerate(candidates):
            if errors[i] is None:
                try:
                    cand.prepare()
                    times[i].append(timed_repeat(cand.step, iters[i], device) / iters[i])
                except Exception as exc:  # noqa: BLE001
                    errors[i] = _failed(exc, device)
            if on_repeat:
                on_repeat(cand.label)
    return [
        Timing((), n, None, err, c.batch_size) if err else Timing(tuple(t), n, peak, None, c.batch_size)
        for t, n, peak, err, c in zip(times, iters, peaks, errors, candidates)
    ]


def _failed(exc: BaseException, device: torch.device) -> str:
    if device.type == "cuda":
        torch.cuda.empty_cache()  # what the failed candidate held must not starve the others
    return one_line(exc)


def _warm_up(step: Callable[[], object], device: torch.device, plan: TimingPlan) -> float:
    """Run until both warm-up minimums are met; return the mean seconds per iteration of the later half."""
    start, count, recent = time.perf_counter(), 0, []
    while count < plan.warmup_iters or time.perf_counter() - start < plan.warmup_s:
        recent.append(timed_repeat(step, 1, device))
        count += 1
    later = recent[len(recent) // 2 :]
    return max(sum(later) / len(later), 1e-9)


def timed_repeat(step: Callable[[], object], iters: int, device: torch.device) -> float:
    """Seconds for `iters` calls of step, including all device work they queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3
    begin_s = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - begin_s


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """The distribution-free 95% interval of the median of `values`: the order statistics at ranks
    n/2 -+ 1.96 sqrt(n)/2 (the binomial normal approximation). With few values it is their whole range."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan, math.nan
    half = Z95 * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[low], ordered[high]


def settled(times: Sequence[Sequence[float]], pairs: Sequence[tuple[int, int]], tolerance: float = SETTLED) -> bool:
    """Whether the median of every (candidate, reference) pair's per-round ratio is known to within `tolerance`
    of itself, each side (its 95% interval)."""
    for own, ref in pairs:
        ratios = [r / o for r, o in zip(times[ref], times[own])]
        if len(ratios) < 3:
            return False
        low, high = median_interval(ratios)
        middle = statistics.median(ratios)
        if middle <= 0 or (high - low) / 2 > tolerance * middle:
            return False
    return True


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
