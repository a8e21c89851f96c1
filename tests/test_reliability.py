"""Sweeps that survive interrupts and out-of-memory: rows saved per group, --resume, signals, batch backoff.

Out-of-memory is injected on CPU by a small ViT whose patch embedding refuses batches above a limit (the
limit depends on the configuration, as real memory does); everything else is the real engine on real files.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial

import pytest
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from tomebench import cli
from tomebench.demo.model import DEMO_DATA_CFG
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.measure.memory import is_out_of_memory
from tomebench.patch import patch_info
from tomebench.results.journal import Journal

runner = CliRunner()
SPEC = RunSpec(model="demo", r=(0, 2, 4, 6, 8), repeats=1, workers=0, limit=40, group_size=2)
SAME = ("model", "reducer", "r", "schedule", "prop_attn", "reducer_options", "infer_batch_size", "infer_gflops",
        "tokens_final", "top1", "top5", "n_images", "dataset", "error")


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in text, text


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
    assert [(r["reducer"], r["r"]) for r in rows] == [("none", "0"), ("tome", "0"), ("tome", "2"), ("tome", "4"),
                                                     ("tome", "6")]
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
    assert [list(g) for g in groups] == [["unpatched", "tome r=0", "tome r=2"], ["unpatched", "tome r=4", "tome r=6"],
                                         ["unpatched", "tome r=8"]]
    # Every configuration's speedup is against the unpatched model timed in its own group.
    assert all(float(r["speedup"]) > 0 for r in final)


def test_resuming_a_complete_csv_measures_nothing(tmp_path, uninterrupted):
    out = tmp_path / "done.csv"
    run_sweep(SPEC, sink=Journal(out))
    before = out.read_bytes()
    assert run_sweep(SPEC, sink=Journal(out, resume=True)) == []
    assert out.read_bytes() == before
    result = invoke("sweep", "--r", "0,2,4,6,8", "--repeats", "1", "--workers", "0", "--limit", "40", "--out", out,
                    "--resume")
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
    assert [(r["reducer"], r["r"], r["error"]) for r in final] == [("none", "0", ""), ("tome", "0", ""),
                                                                   ("tome", "4", ""), ("prune", "3", "")]


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
    result = invoke("sweep", "--r", "0", "--repeats", "1", "--workers", "0", "--out", out, "--resume",
                    "--dtype", "bf16", "--device", "cpu")
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from tomebench.cli import app; app()", "sweep", "--r", "0..8", "--repeats", "3",
               "--workers", "0", "--group-size", "1", "--out", str(out)]
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


# ---------------------------------------------------------------- out-of-memory backoff

# Largest batch each configuration "fits", by the r of its first block (None: unpatched). Set per test.
LIMITS: dict[int | None, int] = {}


def _refuse_big_batches(model, module, args):
    info = patch_info(model)
    limit = LIMITS.get(None if info is None else info.r[0], 10**6)
    if args[0].shape[0] > limit:
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {args[0].shape[0]}")


# register_model reads the pretrained cfg (input size, normalisation) from this module-level name.
default_cfgs = generate_default_cfgs({"tomebench_test_oom_vit": dict(num_classes=10, **DEMO_DATA_CFG)})


@register_model
def tomebench_test_oom_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    kwargs = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10,
              **kwargs}
    model = build_model_with_cfg(VisionTransformer, "tomebench_test_oom_vit", pretrained, **kwargs)
    model.patch_embed.register_forward_pre_hook(partial(_refuse_big_batches, model))
    return model


OOM = RunSpec(model="tomebench_test_oom_vit", pretrained=False, r=(0, 4), batch_sizes=8, repeats=1, workers=0,
                data="demo", limit=40)


def test_a_configuration_out_of_memory_backs_off_to_a_batch_that_fits(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {})
    free = run_sweep(OOM)
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {None: 3, 0: 2})  # unpatched fits 3 -> 2; tome r=0 fits 2
    rows = run_sweep(OOM)
    assert [row.infer_batch_size for row in rows] == [2, 2, 8]
    assert rows[0].note == "out of memory at batch 8; measured at batch 2"
    assert rows[2].note is None and all(row.error is None for row in rows)
    # Accuracy does not depend on how a batch is split; throughput is per image, so speedups still compare.
    assert [(r.top1, r.top5, r.n_images) for r in rows] == [(r.top1, r.top5, r.n_images) for r in free]
    assert all(row.speedup > 0 for row in rows)


def test_out_of_memory_even_at_batch_one_is_an_error_row_and_the_sweep_goes_on(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {4: 0})
    rows = run_sweep(OOM)
    assert [row.error for row in rows[:2]] == [None, None]
    assert rows[2].error.startswith("out of memory even at batch 1: OutOfMemoryError: CUDA out of memory")
    assert rows[2].infer_batch_size == 8 and rows[2].top1 is None and rows[2].infer_samples_per_sec is None
    assert rows[1].top1 is not None


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 1099511627776 bytes"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


# ---------------------------------------------------------------- determinism

def test_two_runs_of_the_same_accuracy_sweep_give_identical_accuracy_columns():
    spec = replace(SPEC, reducers=("prune", "kmeans", "attn-prune"), r=(4, 8), group_size=0)
    first, second = run_sweep(spec), run_sweep(spec)
    columns = lambda rows: [(r.reducer, r.r, r.top1, r.top5, r.n_images, r.tokens_final) for r in rows]  # noqa: E731
    assert columns(first) == columns(second)
    assert len({r.top1 for r in first}) > 1  # the reducers really differ: not a vacuous equality
