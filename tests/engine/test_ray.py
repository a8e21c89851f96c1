"""Sweeps on a local Ray (2 CPUs, shared by the tests of this module): the same accuracy as measuring here, rows
streamed into the CSV, and workers that die."""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from tests.helpers import assert_one_line_error, invoke  # noqa: E402
from tomebench.engine.ray import RayExecutor, _shards  # noqa: E402
from tomebench.engine.run import run_sweep  # noqa: E402
from tomebench.engine.setup import Setup  # noqa: E402
from tomebench.engine.spec import RunSpec  # noqa: E402
from tomebench.results.journal import Journal  # noqa: E402

# The whole digits test split: r = 8 loses images, so the accuracy columns are not all alike.
# No re-timing: these tests are about where rows are measured and what survives a dead worker, not timing spread.
SPEC = RunSpec(model="demo", r=(0, 4, 8), repeats=2, workers=0, group_size=2, max_retime=0)


SAME = ("reducer", "r", "top1", "top5", "n_images", "tokens_final", "infer_gflops", "dataset", "error")


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    cache = str(tmp_path_factory.getbasetemp() / "cache")  # the cache conftest gives every test
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOMEBENCH_CACHE": cache}},
    )
    # Fault functions below travel to the workers by value: the workers cannot import this test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_rows():
    return run_sweep(SPEC)


def columns(rows) -> list[tuple]:
    return [tuple(getattr(row, name) for name in SAME) for row in rows]


def test_ray_gives_the_accuracy_columns_of_the_local_executor_and_streams_rows_to_the_csv(tmp_path, local_rows):
    out = tmp_path / "ray.csv"
    rows = run_sweep(SPEC, sink=Journal(out), executor=RayExecutor(shards=2))
    assert columns(rows) == columns(local_rows)
    assert {row.top1 for row in rows} != {rows[0].top1}  # not a vacuous equality
    assert all(row.speedup > 0 and row.infer_samples_per_sec > 0 and row.device_name for row in rows)
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["reducer"], r["r"]) for r in written] == [(row.reducer, str(row.r)) for row in rows]
    # Resuming over Ray measures nothing more.
    assert run_sweep(SPEC, sink=Journal(out, resume=True), executor=RayExecutor()) == []


def test_shards_cover_every_image_once():
    setup = Setup.build(replace(SPEC, limit=100, device="cpu"), measures_here=False)
    for wanted in (1, 2, 3, 7, 100):
        shards = _shards(setup, wanted)
        covered = [i for start, stop in shards for i in range(start, stop)]
        assert covered == list(range(100)) and len(shards) <= max(1, wanted)
        assert all(stop - start >= 1 for start, stop in shards)


def die_once(marker: str, kind: str):
    """A fault for the workers: the first task of `kind` kills its worker process, as an OOM killer would."""

    def fault(task: str) -> None:
        if task == kind and not Path(marker).exists():
            Path(marker).write_text("killed")
            os._exit(1)

    return fault


def test_a_killed_worker_is_retried(tmp_path, local_rows):
    marker = tmp_path / "killed"
    rows = run_sweep(SPEC, executor=RayExecutor(fault=die_once(str(marker), "count")))
    assert marker.exists()  # a worker really died
    assert columns(rows) == columns(local_rows)


def test_a_worker_that_dies_without_retries_becomes_error_rows_and_the_sweep_goes_on(tmp_path):
    marker, out = tmp_path / "killed", tmp_path / "s.csv"
    rows = run_sweep(SPEC, sink=Journal(out), executor=RayExecutor(retries=0, fault=die_once(str(marker), "time")))
    assert marker.exists()
    failed = [row for row in rows if row.error]
    assert failed and all(row.error.startswith("ray task failed") for row in failed)
    assert all(row.infer_batch_size == 32 for row in rows)  # the batch asked for: the CSV stays resumable
    assert any(row.error is None and row.top1 is not None for row in rows)  # the other group was measured
    assert len(rows) == 4
    # Resuming measures exactly the failed configurations again.
    again = run_sweep(SPEC, sink=Journal(out, resume=True))
    assert [(row.reducer, row.r) for row in again] == [(row.reducer, row.r) for row in failed]
    assert all(row.error is None for row in again)


def test_executor_ray_without_ray_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    result = invoke("sweep", "--executor", "ray", "--out", tmp_path / "s.csv")
    assert_one_line_error(result, 2, "pip install 'tomebench[ray]'")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--executor", "slurm"], "unknown --executor 'slurm'"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    ],
)
def test_bad_executor_options(args, fragment, tmp_path):
    result = invoke("sweep", *args, "--out", tmp_path / "s.csv")
    assert_one_line_error(result, 2, fragment)
