"""The reporting path: Row -> CSV against a golden file, and CSVs of older versions still readable."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tomebench.errors import TomebenchError, UsageError
from tomebench.report import plots
from tomebench.results.csv import atomic_file, read_csv, write_csv
from tomebench.results.files import check_writable
from tomebench.results.row import COLUMNS, Environment, Row

GOLDEN = Path(__file__).parent / "golden" / "sweep.csv"
ENV = Environment("AMD EPYC", "2.14.1", "1.0.31", "0.1.0", "abc123def456", "2026-11-29T00:00:00+00:00")


def golden_rows() -> list[Row]:
    base = Row(model="tomebench_demo_vit.digits", reducer="none", r=0, schedule="constant", prop_attn=False,
               infer_img_size=32, infer_batch_size=32, dtype="fp32", device="cpu", param_count=0.286,
               dataset="digits-test", n_images=360).with_environment(ENV)
    rows = []
    for reducer, r, rate, top1 in [("none", 0, 1000.0, 98.0555555), ("tome", 4, 1500.123456789, 97.5), ("tome", 8, 2100.5, 91.25)]:
        rows.append(Row(**{**base.__dict__, "reducer": reducer, "r": r, "prop_attn": reducer != "none",
                           "infer_samples_per_sec": rate, "infer_samples_per_sec_p10": rate * 0.95,
                           "infer_samples_per_sec_p90": rate * 1.05, "infer_step_time": 32e3 / rate,
                           "speedup": rate / 1000.0, "baseline_samples_per_sec": 1000.0,
                           "speedup_p10": rate / 1000.0 * 0.97, "speedup_p90": rate / 1000.0 * 1.03,
                           "infer_gflops": 0.04 - 0.002 * r, "tokens_final": 65 - 8 * r
                           if r < 8 else 4, "top1": top1, "top5": 100.0,
                           "note": "r clamped to (N - prefix) // 2 at block(s) 8:8->4" if r == 8 else None}))
    rows.append(replace(rows[1], reducer_options="distance=euclidean,features=q", top1=96.25))
    # A compiled row with latency: the columns issue 17 appended.
    rows.append(replace(rows[1], compile="default", compile_s=41.25, latency_ms_p50=3.5, latency_ms_p90=3.75,
                        latency_ms_p99=5.125, latency_speedup=1.25))
    rows.append(Row(**{**base.__dict__, "reducer": "tome", "r": 99, "prop_attn": True, "n_images": None,
                       "dataset": None, "error": "RuntimeError: out of memory, tried to allocate 2 GiB"}))
    return rows


def test_csv_matches_golden_file(tmp_path):
    out = write_csv(golden_rows(), tmp_path / "sweep.csv")
    got, want = list(csv.reader(out.open())), list(csv.reader(GOLDEN.open()))
    assert got[0] == list(COLUMNS) == want[0]
    assert len(got) == len(want)
    for got_row, want_row in zip(got[1:], want[1:]):
        for name, a, b in zip(COLUMNS, got_row, want_row):
            try:
                assert math.isclose(float(a), float(b), rel_tol=1e-5), name
            except ValueError:
                assert a == b, name


def test_header_follows_row_fields_and_measure_contract():
    # The MEASURE.md columns, in order; new ones may only be appended.
    contract = ["model", "reducer", "r", "schedule", "prop_attn", "infer_img_size", "infer_batch_size", "dtype",
                "device", "infer_samples_per_sec", "infer_samples_per_sec_p10", "infer_samples_per_sec_p90",
                "infer_step_time", "speedup", "infer_gflops", "tokens_final", "peak_mem_mb", "top1", "top5",
                "n_images", "dataset", "param_count", "error"]
    assert [c for c in COLUMNS if c in contract] == contract
    for name in ("device_name", "torch", "timm", "tomebench", "git_sha", "timestamp", "baseline_samples_per_sec"):
        assert name in COLUMNS


def test_older_csv_without_new_columns_is_read(tmp_path):
    old = tmp_path / "old.csv"
    pd.DataFrame({"model": ["m"], "reducer": ["tome"], "r": [8], "schedule": ["constant"],
                  "infer_samples_per_sec": [10.0], "legacy": ["kept"]}).to_csv(old, index=False)
    frame = read_csv(old)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert frame["legacy"].iloc[0] == "kept" and pd.isna(frame["top1"].iloc[0])


def test_non_tomebench_csv_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(TomebenchError, match="lacks the column"):
        read_csv(bad)
    with pytest.raises(UsageError, match="no such CSV"):
        read_csv(tmp_path / "missing.csv")


def test_failed_write_leaves_no_partial_file(tmp_path):
    rows = golden_rows()
    target = tmp_path / "x.csv"

    def broken():
        yield rows[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_csv(broken(), target)
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "x.csv")
    assert not (tmp_path / "new").exists()  # checking creates nothing; the first write makes the folder
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path)


def test_plots_from_the_golden_csv(tmp_path):
    frame = read_csv(GOLDEN)
    front = plots.pareto_frontier(plots.usable(frame), "infer_samples_per_sec", "top1")
    # Each point is the fastest at its accuracy: none (1000, 98.06), tome r=4 (1500, 97.5), r=8 (2100, 91.25).
    assert list(front["r"]) == [0, 4, 8]
    fig = plots.main_figure(frame)
    assert fig.axes[0].get_ylabel() == "top-1 accuracy (%)"
    paths = plots.save(fig, tmp_path / "p")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)


def test_figures_are_written_atomically(tmp_path):
    from matplotlib.figure import Figure

    target = tmp_path / "fig.png"
    target.write_bytes(b"the old figure")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target, "wb") as handle:
            handle.write(b"half a fig")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"the old figure" and sorted(tmp_path.iterdir()) == [target]
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    paths = plots.save(fig, tmp_path / "fig")
    assert target.read_bytes().startswith(b"\x89PNG") and paths[1].read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]
