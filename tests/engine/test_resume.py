"""Sweeps that survive interrupts: rows saved per group, --resume measures only what is missing (and refuses a CSV
it cannot extend), signals stop the CLI cleanly."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from tests.helpers import (
    assert_one_line_error,
    invoke,
    python_env,
    read_rows,
)
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.results.journal import Journal

SPEC = RunSpec(model="demo", r=(0, 2, 4, 6, 8), repeats=1, workers=0, limit=40, group_size=2)
SAME = (
    "model",
    "reducer",
    "r",
    "schedule",
    "prop_attn",
    "reducer_options",
    "infer_batch_size",
    "infer_gflops",
    "tokens_final",
    "top1",
    "top5",
    "n_images",
    "dataset",
    "error",
)
# Throughput only, on test_vit: what the damaged-CSV cases resume.
SYNTHETIC = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--data", "synthetic"]
SYNTHETIC_SPEC = RunSpec(model="test_vit", pretrained=False, r=(0, 4), repeats=1, device="cpu", data="synthetic")


class StopAt:
    """A Progress that interrupts the sweep (as Ctrl-C would) when a phase of that name begins."""

    def __init__(self, phase: str):
        self.stop_phase, self.phases = phase, []

    def phase(self, name: str, total: int) -> None:
        self.phases.append(name)
        if name == self.stop_phase:
            raise KeyboardInterrupt

    def advance(self, amount: int = 1) -> None:
        pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("full") / "full.csv"
    run_sweep(SPEC, sink=Journal(out))
    return read_rows(out)


def test_an_interrupted_sweep_keeps_finished_groups_and_resume_measures_only_the_rest(tmp_path, uninterrupted):
    out = tmp_path / "s.csv"
    journal = Journal(out)
    progress = StopAt("checking 3/3")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, progress, journal)
    # Groups: [unpatched, r=0, r=2], [r=4, r=6], [r=8]; the third never started.
    assert progress.phases[:4] == ["checking 1/3", "timing 1/3", "accuracy 1/3", "checking 2/3"]
    rows = read_rows(out)
    assert [(r["reducer"], r["r"]) for r in rows] == [
        ("none", "0"),
        ("tome", "0"),
        ("tome", "2"),
        ("tome", "4"),
        ("tome", "6"),
    ]
    assert all(r["top1"] and r["infer_samples_per_sec"] and r["timestamp"] for r in rows)  # complete rows
    assert [(m.reducer, m.r) for m in journal.missing()] == [("tome", 8)]
    assert not list(tmp_path.glob(".s.csv.*"))  # no temp file left behind

    resumed = Journal(out, resume=True)
    measured = run_sweep(SPEC, sink=resumed)
    assert [(row.reducer, row.r) for row in measured] == [("tome", 8)] and resumed.resumed == 5
    final = read_rows(out)
    assert [{k: r[k] for k in SAME} for r in final] == [{k: r[k] for k in SAME} for r in uninterrupted]
    assert [r["timestamp"] for r in final[:5]] == [r["timestamp"] for r in rows]  # kept as they were
    groups = json.loads(out.with_suffix(".times.json").read_text())["groups"]
    assert [list(g) for g in groups] == [
        ["unpatched", "tome r=0", "tome r=2"],
        ["unpatched", "tome r=4", "tome r=6"],
        ["unpatched", "tome r=8"],
    ]
    # Every configuration's speedup is against the unpatched model timed in its own group.
    assert all(float(r["speedup"]) > 0 for r in final)


def test_resuming_a_complete_csv_measures_nothing(tmp_path, uninterrupted):
    out = tmp_path / "done.csv"
    run_sweep(SPEC, sink=Journal(out))
    before = out.read_bytes()
    assert run_sweep(SPEC, sink=Journal(out, resume=True)) == []
    assert out.read_bytes() == before
    result = invoke(
        "sweep", "--r", "0,2,4,6,8", "--repeats", "1", "--workers", "0", "--limit", "40", "--out", out, "--resume"
    )
    assert result.exit_code == 0, result.output
    assert "all 6 configurations are already in" in " ".join(result.output.split())


def test_resume_takes_the_same_data_however_it_was_named(tmp_path):
    out = tmp_path / "s.csv"
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))  # --data unset: the demo model's digits
    assert run_sweep(replace(SPEC, r=(0,), data="demo"), sink=Journal(out, resume=True)) == []


def test_resume_measures_error_rows_again_and_keeps_rows_it_does_not_plan(tmp_path):
    out = tmp_path / "e.csv"
    run_sweep(replace(SPEC, r=(0, 4)), sink=Journal(out))
    rows = read_rows(out)
    rows[2]["error"] = "RuntimeError: it failed last time"
    stranger = dict(rows[1], reducer="prune", r="3")  # same settings, a configuration this sweep does not plan
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + [stranger])
    measured = run_sweep(replace(SPEC, r=(0, 4)), sink=Journal(out, resume=True))
    assert [(row.reducer, row.r) for row in measured] == [("tome", 4)]
    final = read_rows(out)
    assert [(r["reducer"], r["r"], r["error"]) for r in final] == [
        ("none", "0", ""),
        ("tome", "0", ""),
        ("tome", "4", ""),
        ("prune", "3", ""),
    ]


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (["--limit", "20"], ["was measured with limit 40", "this run has 20", "drop --resume"]),
        (["--limit", "40", "--batch-size", "16"], ["was measured with batch_size 32", "this run has 16"]),
    ],
)
def test_resume_refuses_a_csv_measured_with_other_settings(tmp_path, change, fragments):
    out = tmp_path / "s.csv"
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    before = out.read_bytes()
    result = invoke("sweep", "--r", "0", "--repeats", "1", "--workers", "0", "--out", out, "--resume", *change)
    assert_one_line_error(result, 2, *fragments)
    assert out.read_bytes() == before


def test_resume_without_the_sidecar_still_checks_the_rows(tmp_path):
    out = tmp_path / "s.csv"
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    out.with_suffix(".times.json").unlink()
    result = invoke(
        "sweep",
        "--r",
        "0",
        "--repeats",
        "1",
        "--workers",
        "0",
        "--out",
        out,
        "--resume",
        "--dtype",
        "bf16",
        "--device",
        "cpu",
    )
    assert_one_line_error(result, 2, "has a row with dtype 'fp32'", "this run has 'bf16'")


def test_resume_refuses_rows_of_another_tomebench_version(tmp_path):
    # 0.2 changed what tome, prune and the named schedules compute: rows of 0.1 must not mix with new ones.
    out = tmp_path / "s.csv"
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    out.with_suffix(".times.json").unlink()
    out.write_text(out.read_text().replace(",0.2.0,", ",0.1.0,"))
    before = out.read_bytes()
    result = invoke("sweep", "--r", "0", "--repeats", "1", "--workers", "0", "--out", out, "--resume")
    assert_one_line_error(result, 2, "has a row with tomebench '0.1.0'", "this run has '0.2.0'")
    assert out.read_bytes() == before


def test_resume_refuses_a_file_that_is_not_ours(tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("name,score\na,1\n")
    result = invoke("sweep", "--r", "0", "--out", out, "--resume")
    assert_one_line_error(result, 2, "--resume", "is not a tomebench CSV")
    assert out.read_text() == "name,score\na,1\n"


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_a_signal_stops_the_cli_cleanly_with_the_rows_finished_so_far(tmp_path, signum, name):
    out = tmp_path / "s.csv"
    env = {**python_env(), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-c",
        "from tomebench.cli import app; app()",
        "sweep",
        "--r",
        "0..8",
        "--repeats",
        "3",
        "--workers",
        "0",
        "--group-size",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or len(read_rows(out)) < 2):
            time.sleep(0.2)
        assert out.exists(), "no group finished in time"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    message = " ".join(stderr.split())
    assert f"interrupted ({name})" in message and "--resume" in message and "not measured: " in message
    rows = read_rows(out)
    assert 2 <= len(rows) < 10 and all(r["top1"] and r["timestamp"] for r in rows)
    assert f"{len(rows)} of 10 configurations are in" in message


# ---------------------------------------------------------------- resume against a damaged CSV


@pytest.fixture
def measured(tmp_path):
    out = tmp_path / "s.csv"
    run_sweep(SYNTHETIC_SPEC, sink=Journal(out))
    return out


def _resume(out):
    return invoke("sweep", *SYNTHETIC, "--r", "0,4", "--out", out, "--resume")


def test_resume_refuses_two_different_rows_of_one_configuration(measured):
    rows = read_rows(measured)
    bogus = dict(rows[2], speedup="99")
    with open(measured, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerow(bogus)
    before = measured.read_bytes()
    result = _resume(measured)
    assert_one_line_error(result, 2, "two different rows of one configuration", "r=4", "lines 4 and 5")
    assert measured.read_bytes() == before


def test_resume_refuses_a_truncated_row(measured):
    text = measured.read_text()
    measured.write_text(text[: text.rindex(",", 0, len(text) - 40)] + "\n")  # the last row loses its tail
    before = measured.read_bytes()
    result = _resume(measured)
    assert_one_line_error(result, 2, "truncated or malformed row(s): line 4")
    assert measured.read_bytes() == before


def test_resume_collapses_a_row_repeated_exactly(measured):
    lines = measured.read_text().splitlines(keepends=True)
    measured.write_text("".join(lines + [lines[-1]]))
    result = _resume(measured)
    assert result.exit_code == 0, result.output
    assert "all 3 configurations are already in" in " ".join(result.output.split())
