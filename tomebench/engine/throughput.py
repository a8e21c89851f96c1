"""Timing one group of configurations: each probed once, then the working ones timed interleaved with the
unpatched model at each of the group's batch sizes, re-timed while too noisy, and (with --latency) one image at
a time."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch

from tomebench.engine.probe import Check, probe
from tomebench.engine.progress import Progress, Silent
from tomebench.engine.setup import Setup
from tomebench.measure import compiled
from tomebench.measure.device import device_name
from tomebench.measure.timing import (
    NOISY_SPREAD,
    Candidate,
    Timing,
    TimingPlan,
    latency_plan,
    settled,
    time_interleaved,
)
from tomebench.patch import unpatch
from tomebench.results.identity import config_label


@dataclass(frozen=True)
class Throughput:
    """What timing one group showed: each configuration's check, the timings (the baselines of its batch sizes
    included), which configurations of the group got through to be evaluated, and, with --latency, the
    single-image timings of one configuration of each sibling set (keyed by that configuration's index)."""

    checks: dict[int, Check]
    timings: dict[int, Timing]
    evaluable: tuple[int, ...]
    labels: dict[int, str]
    device_name: str = ""
    retimed: int = 0  # how often the group was timed again because a row was noisy
    latency: dict[int, Timing] = field(default_factory=dict)
    gave_up_s: float | None = None  # re-timing stopped by its time budget after this many seconds of timing


def measure_throughput(
    setup: Setup,
    group: list[int],
    progress: Progress | None = None,
    tag: str = "",
    checks: dict[int, Check] | None = None,
) -> Throughput:
    """Probe each configuration of the group (cost, tokens, one full batch with out-of-memory backoff), then time
    the working ones interleaved with the unpatched model at each of the group's batch sizes (and, with
    --latency, one image at a time)."""
    progress = progress or Silent()
    checks = {} if checks is None else checks
    baselines = list(dict.fromkeys(setup.baseline_for(i) for i in group))
    timed = baselines + [i for i in group if i not in baselines]
    progress.phase(f"checking{tag}", len(timed))
    with compiled.limits(len(setup.configs)) if setup.spec.compile else nullcontext():
        for i in timed:
            if i not in checks:
                checks[i] = _probe(setup, i)
            progress.advance()
        timed = [i for i in timed if checks[i].error is None]
        plan = replace(TimingPlan.for_device(setup.device, setup.spec.repeats), budget_s=setup.spec.time_budget or 0.0)
        labels = {i: label(setup, i) for i in timed}
        candidates = [_candidate(setup, i, labels[i], checks[i].batch_size) for i in timed]
        # Each configuration against its own batch size's unpatched model, by position among the candidates.
        pairs = [(k, timed.index(setup.baseline_for(i))) for k, i in enumerate(timed) if i != setup.baseline_for(i)]
        timings, retimed, gave_up, begin, first = None, 0, None, time.perf_counter(), 0.0
        with torch.inference_mode():
            for attempt in range(setup.spec.max_retime + 1):
                if timings is not None and worst_spread(timings.values()) <= NOISY_SPREAD:
                    break
                spent = time.perf_counter() - begin
                if attempt and spent - first > RETIME_FACTOR * first:
                    gave_up = spent  # re-timing had its share of time; the rows say they are still noisy
                    break
                progress.phase(f"re-timing{tag} #{attempt}" if attempt else f"timing{tag}", plan.repeats * len(timed))
                again = dict(
                    zip(
                        timed,
                        time_interleaved(
                            candidates,
                            setup.device,
                            plan,
                            lambda _: progress.advance(),
                            lambda times: settled(times, pairs),
                        ),
                    )
                )
                first = first or time.perf_counter() - begin
                retimed = attempt
                # The whole group again, the unpatched model included, so every speedup stays paired within one
                # attempt; keep the quieter attempt (its medians are no more trusted than the other's, only tighter).
                if timings is None or worst_spread(again.values()) < worst_spread(timings.values()):
                    timings = again
            latency = _time_latency(setup, [i for i in timed if timings[i].error is None], progress, tag)
    unpatch(setup.model)
    evaluable = tuple(i for i in group if i in timings and timings[i].error is None)
    return Throughput(
        {i: checks[i] for i in timed + group if i in checks},
        timings,
        evaluable,
        labels,
        device_name(setup.device),
        retimed,
        latency,
        gave_up,
    )


def _probe(setup: Setup, i: int) -> Check:
    size = setup.configs[i].batch_size
    decided = setup.decided[i]
    if decided.error is not None:
        return Check(error=decided.error, batch_size=size)
    return probe(
        setup.model,
        setup.prepare(i, eager=True),
        setup.batch[:size],
        setup.autocast,
        setup.device,
        size,
        None if setup.spec.compile is None else setup.prepare(i),
    )


# Re-timing a noisy group may take at most this many times as long as its first timing: a machine that stays busy
# does not quieten by being timed for longer, and the rows say the timing stayed noisy.
RETIME_FACTOR = 2.0


def worst_spread(timings) -> float:
    """The largest p10-p90 spread (fraction of the median) among timings that succeeded; 0 when none did."""
    return max((t.spread() for t in timings if t.error is None and t.step_times), default=0.0)


def label(setup: Setup, i: int) -> str:
    """config_label, with the batch size when the sweep has several (raw times are kept by label)."""
    text = config_label(setup.planned[i])
    return text + (f" @ batch {setup.configs[i].batch_size}" if len(setup.batch_sizes) > 1 else "")


def _candidate(setup: Setup, i: int, name: str, batch_size: int) -> Candidate:
    prepare = setup.prepare(i)
    module, batch, autocast = prepare(), setup.batch[:batch_size], setup.autocast

    def step() -> object:
        with autocast():
            return module(batch)

    return Candidate(name, prepare, step, batch_size)


def _time_latency(setup: Setup, working: list[int], progress: Progress, tag: str) -> dict[int, Timing]:
    """With --latency: one image per call, each call timed alone (synchronised on CUDA), through the one timing
    loop, interleaved over one configuration of each sibling set (the one at the smallest batch size, whose
    compiled module is reused) and the unpatched model."""
    if not setup.spec.latency or not working:
        return {}
    chosen: dict[int, int] = {}
    for i in sorted(working, key=lambda i: setup.configs[i].batch_size):
        chosen.setdefault(setup.sibling_key(i), i)
    indices = list(chosen.values())
    plan = latency_plan(setup.device)
    progress.phase(f"latency{tag}", plan.repeats * len(indices))
    candidates = [_candidate(setup, i, config_label(setup.planned[i]), 1) for i in indices]
    return dict(zip(indices, time_interleaved(candidates, setup.device, plan, lambda _: progress.advance())))
