"""Speed as the paired speedup: each row's spread of paired ratios, its own unpatched reference (per batch size),
and re-timing a group whose spread is too wide (--max-retime)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.helpers import (
    assert_paired_speedups,
)
from tomebench.engine import accuracy as engine
from tomebench.engine import throughput
from tomebench.engine.probe import Check
from tomebench.engine.rows import group_rows, make_row
from tomebench.engine.run import run_sweep
from tomebench.engine.setup import Setup
from tomebench.engine.spec import RunSpec
from tomebench.engine.throughput import measure_throughput
from tomebench.measure.timing import NOISY_SPREAD, Timing
from tomebench.report import plots
from tomebench.results.csv import read_csv
from tomebench.results.journal import Journal
from tomebench.results.row import Row


def timing(*seconds: float, batch: int = 8) -> Timing:
    return Timing(tuple(seconds), 1, None, None, batch)


def test_speedup_spread_is_the_p10_p90_of_paired_ratios():
    reference = timing(1.0, 2.0, 1.0, 1.0, 1.0)
    own = timing(0.5, 1.0, 0.5, 0.4, 1.0)  # paired ratios 2, 2, 2, 2.5, 1: round 2 was slow for both
    assert own.speedup_over(reference) == 2.0
    p10, p90 = own.speedup_spread(reference)
    assert p10 == pytest.approx(1.4) and p90 == pytest.approx(2.3)


def test_a_row_carries_its_groups_unpatched_rate_and_paired_spread():
    identity = Row(
        model="m",
        reducer="tome",
        r=4,
        schedule="constant",
        prop_attn=True,
        infer_img_size=32,
        infer_batch_size=8,
        dtype="fp32",
        device="cpu",
    )
    reference = timing(0.1, 0.1, 0.1)
    row = make_row(identity, Check(batch_size=8), timing(0.05, 0.05, 0.04), None, None, reference)
    assert row.baseline_samples_per_sec == pytest.approx(80.0)
    assert row.speedup == pytest.approx(2.0) and row.speedup_p10 <= row.speedup <= row.speedup_p90
    unpaired = make_row(identity, Check(batch_size=8), timing(0.05), None, None, None)
    assert unpaired.baseline_samples_per_sec is None and unpaired.speedup_p10 is None


def test_batch_axis_pairs_speedup_by_batch_and_evaluates_each_configuration_once(monkeypatch, tmp_path):
    passes = []
    real = engine.evaluate_in_one_pass

    def counting(model, prepares, *args, **kwargs):
        passes.append(len(prepares))
        return real(model, prepares, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_in_one_pass", counting)
    spec = RunSpec(r=(4,), batch_sizes=(1, 8), limit=20, repeats=2, latency=True, max_retime=0)
    out = tmp_path / "b.csv"
    rows = run_sweep(spec, sink=Journal(out))
    assert [(row.reducer, row.infer_batch_size) for row in rows] == [("none", 1), ("none", 8), ("tome", 1), ("tome", 8)]
    assert passes == [2]  # one data pass, one forward per configuration, not per batch size
    # Each batch size has its own unpatched reference: the patched rows' speedups are paired by batch size.
    assert rows[0].speedup == rows[1].speedup == 1.0
    assert_paired_speedups(rows)
    assert [row.baseline_samples_per_sec for row in rows[2:]] == [row.infer_samples_per_sec for row in rows[:2]]
    assert rows[2].top1 == rows[3].top1 and rows[2].n_images == 20
    for row in rows:
        assert row.latency_ms_p50 <= row.latency_ms_p90 <= row.latency_ms_p99
    assert rows[0].latency_speedup == 1.0 and rows[2].latency_speedup > 0
    # What --resume finds: every (configuration, batch size) already there.
    assert run_sweep(spec, sink=Journal(out, resume=True)) == []
    frame = read_csv(out)
    fig = plots.speedup_vs_batch(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["unpatched (1.0)", "tome r=4"]
    # Each line carries its p10-p90 bars, one per batch size, so noise cannot pass for a trend.
    (bars,) = ax.containers
    assert len(bars.lines[2][0].get_segments()) == 2


# ---------------------------------------------------------------- re-timing a noisy group


NOISY = (0.1, 0.2, 0.1, 0.3, 0.1)  # spread far above NOISY_SPREAD


QUIET = (0.1, 0.1, 0.1, 0.1, 0.1)


@pytest.fixture(scope="module")
def setup():
    spec = RunSpec(
        model="test_vit", pretrained=False, r=(0, 2), batch_sizes=2, device="cpu", data="synthetic", repeats=5
    )
    return Setup.build(spec)


def _fake_timer(monkeypatch, attempts: list[tuple[float, ...]]):
    """time_interleaved replaced: attempt k gives every candidate the times attempts[k]; records the calls."""
    calls = []

    def fake(candidates, device, plan, on_repeat=None, settled_when=None):
        times = attempts[min(len(calls), len(attempts) - 1)]
        calls.append(len(candidates))
        return [Timing(times, 1, None, None, c.batch_size) for c in candidates]

    monkeypatch.setattr(throughput, "time_interleaved", fake)
    return calls


@pytest.mark.parametrize(
    ("max_retime", "attempts", "calls", "kept"),
    [
        (2, [NOISY, QUIET], 2, QUIET),  # noisy, then quiet: stops at the first quiet attempt
        (2, [NOISY, NOISY, NOISY], 3, NOISY),  # bounded: 1 + 2 attempts, then gives up with the note
        (0, [NOISY, QUIET], 1, NOISY),  # 0: never re-timed
        (2, [QUIET], 1, QUIET),  # a quiet group is timed once
    ],
)
def test_a_noisy_group_is_retimed_whole_and_bounded(monkeypatch, setup, max_retime, attempts, calls, kept):
    recorded = _fake_timer(monkeypatch, attempts)
    setup = replace(setup, spec=replace(setup.spec, max_retime=max_retime))
    result = measure_throughput(setup, [0, 1, 2])
    assert len(recorded) == calls and set(recorded) == {3}  # every attempt times the whole group, baseline included
    assert result.retimed == calls - 1
    assert all(t.step_times == kept for t in result.timings.values())
    rows, _ = group_rows(setup, [0, 1, 2], result, {})
    noisy = [row.note for row in rows if row.note and "noisy timing" in row.note]
    assert len(noisy) == (3 if kept == NOISY else 0)
    if kept == NOISY and calls > 1:
        assert all(f"after {calls - 1} re-timing(s)" in note for note in noisy)


def test_the_quieter_attempt_is_kept(monkeypatch, setup):
    noisier = (0.1, 0.4, 0.1, 0.5, 0.1)
    _fake_timer(monkeypatch, [NOISY, noisier])
    result = measure_throughput(replace(setup, spec=replace(setup.spec, max_retime=1)), [0, 1, 2])
    assert result.retimed == 1 and all(t.step_times == NOISY for t in result.timings.values())
    assert throughput.worst_spread(result.timings.values()) > NOISY_SPREAD


def test_max_retime_must_not_be_negative(setup):
    from tomebench.errors import UsageError

    with pytest.raises(UsageError, match="--max-retime must be >= 0"):
        Setup.build(RunSpec(model="test_vit", pretrained=False, device="cpu", data="synthetic", max_retime=-1))
