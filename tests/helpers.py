"""Helpers the test folders share: the command line through Typer's runner, the one-line error check, CSV rows,
a fresh interpreter, tiny models and images. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
CONFIGS = REPO / "configs"

RUNNER = CliRunner()
# ToMe's ablation options, one factor changed at a time, in the order the ablation plan measures them.
TOME_OPTIONS = [
    ("features", "q"),
    ("features", "v"),
    ("features", "x"),
    ("distance", "dot"),
    ("distance", "euclidean"),
    ("heads", "concat"),
    ("combine", "mean"),
    ("combine", "max"),
    ("combine", "keep"),
    ("partition", "alternating-patches"),
    ("partition", "sequential"),
    ("partition", "random"),
]


def invoke(*args, **kwargs):
    """`tomebench ARGS...` through Typer's runner; arguments may be paths or numbers."""
    from tomebench import cli

    return RUNNER.invoke(cli.app, [str(a) for a in args], **kwargs)


def flat(text) -> str:
    """A result's output (or any text) with every run of whitespace one space, as a reader sees wrapped text."""
    return " ".join(getattr(text, "output", text).split())


def assert_one_line_error(result, code: int, *fragments: str, after_output: bool = False) -> str:
    """A mistake's answer: exit `code`, no traceback, no stray exception, and the whole output one line starting
    with "error: " that holds every fragment. Returns that line. `after_output`: the command failed after printing
    what it had done (a sweep's table); the error line is then its last line and the only one."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    if not after_output:
        assert len(lines) == 1, result.output
    error = lines[-1] if lines else ""
    assert error.startswith("error: "), result.output
    assert [line for line in lines if line.startswith("error:")] == [error], result.output
    for fragment in fragments:
        assert fragment in error, error
    return error


def assert_one_line_message(excinfo, *fragments: str) -> None:
    """A raised TomebenchError whose message is one line, without surrounding blanks, holding every fragment."""
    from tomebench.errors import TomebenchError

    message = str(excinfo.value)
    assert isinstance(excinfo.value, TomebenchError)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, message


def read_rows(path) -> list[dict]:
    """A CSV's rows as the text a reader sees (no type conversion)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def files(folder: Path) -> set[str]:
    """The names of the plain files directly in `folder`."""
    return {p.name for p in folder.iterdir() if p.is_file()}


def python_env(*path: Path | str) -> dict[str, str]:
    """The environment of a fresh interpreter that imports this checkout's tomebench (after `path`), offline and
    on one thread."""
    pythonpath = os.pathsep.join([*map(str, path), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}


def run_python(code: str, *, path: Sequence[Path | str] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` (dedented) in a fresh interpreter (see python_env); the caller checks returncode."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=python_env(*path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_vit(name: str = "test_vit", seed: int = 0, **kwargs):
    """A tiny timm model with random weights drawn after seeding `seed`, in eval mode. test_vit: 160 px in 16 px
    patches (100 patches + cls), 6 blocks; test_vit2: a register token and no cls, average pooled."""
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Path:
    """A random-pixel image of `size` (W, H) saved in the format the suffix names."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)
    return path


def assert_paired_speedups(rows) -> None:
    """Every patched row's speedup is a real measurement: finite and positive, inside its own p10..p90 of paired
    ratios, and paired with the unpatched row of its batch size (its baseline rate is that row's own rate)."""
    unpatched = {row.infer_batch_size: row for row in rows if row.reducer == "none"}
    patched = [row for row in rows if row.reducer != "none"]
    assert unpatched and patched, rows
    for row in patched:
        assert row.error is None, row.error
        assert math.isfinite(row.speedup) and row.speedup > 0, row
        assert row.speedup_p10 <= row.speedup <= row.speedup_p90, row
        base = unpatched[row.infer_batch_size]
        assert row.baseline_samples_per_sec == base.infer_samples_per_sec, (row, base)


def golden_rows() -> list:
    """The rows behind tests/golden/sweep.csv: the unpatched model, tome r=4 and r=8 (clamped), tome r=4 with
    options, a compiled row with latency, and a failed row."""
    from dataclasses import replace

    from tomebench.results.row import Environment, Row

    env = Environment("AMD EPYC", "2.14.1", "1.0.31", "0.1.0", "abc123def456", "2026-11-29T00:00:00+00:00")
    base = Row(
        model="tomebench_demo_vit.digits",
        reducer="none",
        r=0,
        schedule="constant",
        prop_attn=False,
        infer_img_size=32,
        infer_batch_size=32,
        dtype="fp32",
        device="cpu",
        param_count=0.286,
        dataset="digits-test",
        n_images=360,
    ).with_environment(env)
    rows = []
    for reducer, r, rate, top1 in [
        ("none", 0, 1000.0, 98.0555555),
        ("tome", 4, 1500.123456789, 97.5),
        ("tome", 8, 2100.5, 91.25),
    ]:
        rows.append(
            Row(
                **{
                    **base.__dict__,
                    "reducer": reducer,
                    "r": r,
                    "prop_attn": reducer != "none",
                    "infer_samples_per_sec": rate,
                    "infer_samples_per_sec_p10": rate * 0.95,
                    "infer_samples_per_sec_p90": rate * 1.05,
                    "infer_step_time": 32e3 / rate,
                    "speedup": rate / 1000.0,
                    "baseline_samples_per_sec": 1000.0,
                    "speedup_p10": rate / 1000.0 * 0.97,
                    "speedup_p90": rate / 1000.0 * 1.03,
                    "infer_gflops": 0.04 - 0.002 * r,
                    "tokens_final": 65 - 8 * r if r < 8 else 4,
                    "top1": top1,
                    "top5": 100.0,
                    "note": "r clamped to (N - prefix) // 2 at block(s) 8:8->4" if r == 8 else None,
                }
            )
        )
    rows.append(replace(rows[1], reducer_options="distance=euclidean,features=q", top1=96.25))
    # A compiled row with latency: the columns issue 17 appended.
    rows.append(
        replace(
            rows[1],
            compile="default",
            compile_s=41.25,
            latency_ms_p50=3.5,
            latency_ms_p90=3.75,
            latency_ms_p99=5.125,
            latency_speedup=1.25,
        )
    )
    rows.append(
        Row(
            **{
                **base.__dict__,
                "reducer": "tome",
                "r": 99,
                "prop_attn": True,
                "n_images": None,
                "dataset": None,
                "error": "RuntimeError: out of memory, tried to allocate 2 GiB",
            }
        )
    )
    return rows
