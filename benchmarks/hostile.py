"""Hostile-user cases against a tomebench checkout: each case runs the command line in a fresh process on files it
makes itself, and is classified as answered cleanly, failed (a traceback, a multi-line or missing error, a run that
would not stop) or damaged (a user's file changed or rows lost). Run it against two commits for a before/after table.

    .venv/bin/python benchmarks/hostile.py                      # this checkout
    .venv/bin/python benchmarks/hostile.py --rev 4ff90de        # another commit (a temporary git worktree)
    .venv/bin/python benchmarks/hostile.py --only check         # the cases whose name contains "check"

Each case names what a careful tool must do: refuse with one line and exit 2 ("refuse"), fail with one line and
exit 1 ("fail"), or run and leave the right result ("ok", with a check of the files it wrote).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "sweep.csv"
TINY = [
    "--model",
    "test_vit",
    "--no-pretrained",
    "--device",
    "cpu",
    "--data",
    "synthetic",
    "--repeats",
    "1",
    "--max-retime",
    "0",
    "--batch-size",
    "2",
]


@dataclass
class Case:
    name: str
    kind: str  # damaged, traceback, silent, unclear, unbounded, newcomer
    args: list[str]
    expect: str  # refuse (exit 2, one line), fail (exit 1, one line), ok (exit 0)
    setup: Callable[[Path], object] = lambda d: None  # makes the case's files in its folder
    check: Callable[[Path, subprocess.CompletedProcess], str | None] = lambda d, p: None
    env: dict = field(default_factory=dict)
    timeout: float = 120
    contains: str = ""  # the error or output must say this


def _csv(directory: Path, name: str = "cur.csv", text: str | None = None) -> Path:
    path = directory / name
    path.write_text(text if text is not None else GOLDEN.read_text())
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _edit_golden(directory: Path, name: str, edit: Callable[[list[dict]], list[dict]], extra: tuple = ()) -> Path:
    with open(GOLDEN, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames) + list(extra), list(reader)
    rows = edit(rows)
    path = directory / name
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _images(directory: Path, classes: int = 2, per_class: int = 10, size: int = 32) -> Path:
    root = directory / "data"
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def _unchanged(path_key: str):
    def check(directory: Path, proc) -> str | None:
        path = directory / path_key
        original = directory / f"{path_key}.orig"
        return None if path.read_bytes() == original.read_bytes() else f"{path_key} was changed"

    return check


def _keep_copy(path: Path) -> None:
    shutil.copy(path, path.with_name(path.name + ".orig"))


def _sweep_csv(directory: Path, name: str = "s.csv", extra: tuple[str, ...] = ()) -> Path:
    """A real CSV of a tiny sweep (r = 0, 2), made by the checkout under test."""
    out = directory / name
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from tomebench.cli import app; app()",
            "sweep",
            *TINY,
            "--r",
            "0,2",
            "--out",
            str(out),
            *extra,
        ],
        cwd=directory,
        env=dict(os.environ, PYTHONPATH=str(_current_root)),
        capture_output=True,
        timeout=300,
    )
    return out


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append

    # ---- damaged or lost
    def report_on(target):
        def setup(d):
            _csv(d, "cur.csv")
            _csv(d, "base.csv")
            _keep_copy(d / target)
            return None

        return setup

    add(
        Case(
            "check --report onto the current CSV",
            "damaged",
            ["check", "cur.csv", "--baseline", "base.csv", "--report", "cur.csv"],
            "refuse",
            report_on("cur.csv"),
            _unchanged("cur.csv"),
        )
    )
    add(
        Case(
            "check --report onto the baseline",
            "damaged",
            ["check", "cur.csv", "--baseline", "base.csv", "--report", "base.csv"],
            "refuse",
            report_on("base.csv"),
            _unchanged("base.csv"),
        )
    )

    def with_comment(d):
        path = _sweep_csv(d)
        rows = _rows(path)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, [*rows[0], "comment"])
            writer.writeheader()
            writer.writerows([row | {"comment": f"mine {i}"} for i, row in enumerate(rows)])
        return None

    def comment_kept(d, proc):
        rows = _rows(d / "s.csv")
        return (
            None if rows and "comment" in rows[0] and rows[0]["comment"] == "mine 0" else "the comment column was lost"
        )

    add(
        Case(
            "--resume keeps a user's extra column",
            "damaged",
            ["sweep", *TINY, "--r", "0,2,4", "--out", "s.csv", "--resume"],
            "ok",
            with_comment,
            comment_kept,
            timeout=300,
        )
    )

    # ---- tracebacks: each a one-line error with exit 2
    add(
        Case(
            "--r with a range past a C integer",
            "traceback",
            ["sweep", *TINY, "--r", "0..100000000000000000000"],
            "refuse",
        )
    )
    add(
        Case(
            "visualize --layers 1..10^13",
            "traceback",
            ["visualize", "img.png", "--layers", "1..10000000000000", "-o", "v.png"],
            "refuse",
            lambda d: Image.new("RGB", (32, 32)).save(d / "img.png") or {},
        )
    )

    def bomb(d):
        Image.new("L", (20000, 20000)).save(d / "bomb.png", optimize=True)
        return None

    add(Case("visualize a decompression bomb", "traceback", ["visualize", "bomb.png", "-o", "v.png"], "refuse", bomb))
    add(
        Case(
            "paper-baseline of a config without model",
            "traceback",
            ["paper-baseline", "c.toml", "--out-dir", "p"],
            "refuse",
            lambda d: (d / "c.toml").write_text(
                'r = "13"\n[paper]\ntop1_before = 80.0\ntop1_after = 79.0\nspeedup = 1.5\n'
            ),
        )
    )
    add(
        Case(
            "an unknown pretrained tag",
            "traceback",
            [
                "sweep",
                "--model",
                "vit_tiny_patch16_224.bogus_tag",
                "--device",
                "cpu",
                "--data",
                "synthetic",
                "--r",
                "0",
            ],
            "refuse",
        )
    )

    def hf_folder(d):
        folder = d / "hfm"
        folder.mkdir()
        (folder / "config.json").write_text(
            json.dumps({"model_type": "vit", "image_size": "abc", "architectures": ["ViTForImageClassification"]})
        )
        return None

    add(
        Case(
            "an hf: folder whose image_size is text",
            "traceback",
            ["sweep", "--model", "hf:hfm", "--no-pretrained", "--device", "cpu", "--data", "synthetic", "--r", "0"],
            "refuse",
            hf_folder,
        )
    )

    def flat(d, labels: bytes):
        root = _images(d)
        flat_dir = d / "flat"
        flat_dir.mkdir()
        for i, p in enumerate(sorted(root.rglob("*.png"))[:3]):
            shutil.copy(p, flat_dir / f"{i}.png")
        (d / "labels.txt").write_bytes(labels)
        return None

    add(
        Case(
            "--labels with a non-ASCII digit",
            "traceback",
            ["sweep", "--model", "demo", "--data", "flat", "--labels", "labels.txt", "--r", "0", "--repeats", "1"],
            "refuse",
            lambda d: flat(d, "0\n1\n\u00b2\n".encode()),
        )
    )
    add(
        Case(
            "--labels not UTF-8",
            "traceback",
            ["sweep", "--model", "demo", "--data", "flat", "--labels", "labels.txt", "--r", "0", "--repeats", "1"],
            "refuse",
            lambda d: flat(d, b"0\n1\n\xff\xfe\n"),
        )
    )
    add(
        Case(
            "--out longer than a file name may be",
            "traceback",
            ["sweep", *TINY, "--r", "0", "--out", "x" * 300 + ".csv"],
            "refuse",
        )
    )
    add(
        Case(
            "--out whose sidecar's temp name is too long",
            "traceback",
            ["sweep", *TINY, "--r", "0", "--out", "x" * 240 + ".csv"],
            "refuse",
        )
    )

    def text_cell(d):
        path = _sweep_csv(d)
        rows = _rows(path)
        rows[1]["infer_gflops"] = "n/a"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return None

    add(
        Case(
            "--resume on a CSV with text in a number cell",
            "traceback",
            ["sweep", *TINY, "--r", "0,2,4", "--out", "s.csv", "--resume"],
            "ok",
            text_cell,
            timeout=300,
        )
    )
    add(
        Case(
            "plot a CSV with text in top1",
            "traceback",
            ["plot", "t.csv", "-o", "fig"],
            "ok",
            lambda d: _edit_golden(
                d, "t.csv", lambda rows: [r | {"top1": "oops"} if i == 1 else r for i, r in enumerate(rows)]
            ),
        )
    )
    add(
        Case(
            "the demo with HOME unset",
            "traceback",
            ["sweep", "--r", "0", "--repeats", "1", "--out", "d.csv"],
            "ok",
            env={"HOME": None, "TOMEBENCH_CACHE": None},
            timeout=300,
        )
    )
    add(
        Case(
            "the demo with TOMEBENCH_CACHE a file",
            "traceback",
            ["sweep", "--r", "0", "--repeats", "1", "--out", "d.csv"],
            "refuse",
            lambda d: (d / "afile").write_text("x"),
            env={"TOMEBENCH_CACHE": "afile"},
        )
    )

    # ---- silently wrong
    def foreign(d):
        (d / "mine.csv").write_text("name,score\nalice,3\n")
        _keep_copy(d / "mine.csv")
        return None

    add(
        Case(
            "--out an existing CSV that is not tomebench's",
            "silent",
            ["sweep", *TINY, "--r", "0", "--out", "mine.csv"],
            "refuse",
            foreign,
            _unchanged("mine.csv"),
        )
    )

    def measured(d):
        _sweep_csv(d, "m.csv")
        _keep_copy(d / "m.csv")
        return None

    add(
        Case(
            "--out an existing tomebench CSV without --resume",
            "silent",
            ["sweep", *TINY, "--r", "0", "--out", "m.csv"],
            "refuse",
            measured,
            _unchanged("m.csv"),
            timeout=300,
        )
    )

    def duplicated(d):
        path = _sweep_csv(d)
        rows = _rows(path)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows + [rows[-1]])
        return None

    add(
        Case(
            "--resume on a CSV with an exact duplicate row",
            "silent",
            ["sweep", *TINY, "--r", "0,2", "--out", "s.csv", "--resume"],
            "ok",
            duplicated,
            lambda d, p: None if len(_rows(d / "s.csv")) == 3 else f"{len(_rows(d / 's.csv'))} rows for 3",
        )
    )

    def looped(d):
        root = _images(d, classes=2, per_class=10)
        (root / "class0" / "loop").symlink_to(root / "class0", target_is_directory=True)
        (root / "class1" / "root").symlink_to(root, target_is_directory=True)
        return None

    add(
        Case(
            "symlink loops inside class folders",
            "silent",
            [
                "sweep",
                "--model",
                "demo",
                "--data",
                "data",
                "--model-arg",
                "num_classes=2",
                "--no-pretrained",
                "--r",
                "0",
                "--repeats",
                "1",
                "--out",
                "l.csv",
            ],
            "ok",
            looped,
            lambda d, p: (
                None if (d / "l.csv").exists() and _rows(d / "l.csv")[0]["n_images"] == "20" else "not 20 images"
            ),
            timeout=120,
        )
    )

    def nan_weights(d):
        script = (
            "import torch, timm, tomebench.demo.model as m; from safetensors.torch import save_file;"
            "v = timm.create_model(m.NAME, pretrained=True); s = v.state_dict();"
            "s['blocks.0.mlp.fc1.weight'][0, 0] = float('nan');"
            f"save_file({{k: t.contiguous() for k, t in s.items()}}, {str(d / 'nan.safetensors')!r})"
        )
        subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(_current_root)), check=True)
        return None

    add(
        Case(
            "NaN weights from --checkpoint",
            "silent",
            ["sweep", "--checkpoint", "nan.safetensors", "--r", "0", "--repeats", "1", "--out", "n.csv"],
            "refuse",
            nan_weights,
            contains="NaN",
        )
    )
    add(
        Case(
            "--model-arg num_classes=5 on 10-class weights",
            "silent",
            ["sweep", "--model-arg", "num_classes=5", "--r", "0", "--repeats", "1", "--out", "c.csv"],
            "refuse",
        )
    )
    add(
        Case(
            "--labels with --data synthetic",
            "silent",
            ["sweep", *TINY, "--r", "0", "--labels", "l.txt"],
            "refuse",
            lambda d: (d / "l.txt").write_text("0\n"),
        )
    )
    add(Case("--limit with --data synthetic", "silent", ["sweep", *TINY, "--r", "0", "--limit", "5"], "refuse"))
    add(
        Case(
            "--schedule LIST with --r 0..8",
            "silent",
            ["sweep", *TINY, "--r", "0..8", "--schedule", "1,1,1,1,1,1"],
            "refuse",
            contains="--r",
        )
    )
    add(
        Case(
            "an option with no effect makes no new row",
            "silent",
            ["sweep", *TINY, "--r", "2", "--opt", "tome.seed=3", "--out", "o.csv"],
            "ok",
            check=lambda d, p: (
                None
                if all(not r["reducer_options"] for r in _rows(d / "o.csv"))
                else "tome.seed made its own row label"
            ),
        )
    )
    add(
        Case(
            "inflection:0.2500001 recorded as measured",
            "silent",
            ["sweep", *TINY, "--r", "2", "--schedule", "inflection:0.2500001", "--out", "i.csv"],
            "ok",
            check=lambda d, p: (
                None
                if _rows(d / "i.csv")[1]["schedule"] == "inflection:0.2500001"
                else f"recorded as {_rows(d / 'i.csv')[1]['schedule']}"
            ),
        )
    )

    def limit_then(d):
        _images(d, classes=2, per_class=20)
        args = [
            "sweep",
            "--model",
            "demo",
            "--data",
            "data",
            "--model-arg",
            "num_classes=2",
            "--no-pretrained",
            "--r",
            "0",
            "--repeats",
            "1",
            "--limit",
            "20",
            "--out",
            "l.csv",
        ]
        subprocess.run(
            [sys.executable, "-c", "from tomebench.cli import app; app()", *args],
            cwd=d,
            env=dict(os.environ, PYTHONPATH=str(_current_root)),
            capture_output=True,
            timeout=300,
        )
        (d / "l.times.json").unlink(missing_ok=True)
        return None

    add(
        Case(
            "--resume with the sidecar deleted and another --limit",
            "silent",
            [
                "sweep",
                "--model",
                "demo",
                "--data",
                "data",
                "--model-arg",
                "num_classes=2",
                "--no-pretrained",
                "--r",
                "0,2",
                "--repeats",
                "1",
                "--limit",
                "30",
                "--out",
                "l.csv",
                "--resume",
            ],
            "refuse",
            limit_then,
            timeout=300,
        )
    )

    def twice(d):
        _csv(d, "base.csv")
        _edit_golden(
            d,
            "cur.csv",
            lambda rows: rows + [rows[1] | {"speedup": "0.1", "speedup_p10": "0.09", "speedup_p90": "0.11"}],
        )
        return None

    add(
        Case(
            "check: the current CSV holds one configuration twice",
            "silent",
            ["check", "cur.csv", "--baseline", "base.csv"],
            "refuse",
            twice,
        )
    )
    add(
        Case(
            "check: a baseline cell is text",
            "silent",
            ["check", "cur.csv", "--baseline", "base.csv"],
            "fail",
            lambda d: (
                (
                    _csv(d, "cur.csv"),
                    _edit_golden(
                        d, "base.csv", lambda rows: [r | {"top1": "oops"} if i == 1 else r for i, r in enumerate(rows)]
                    ),
                )
            ),
        )
    )

    def json_ok(d, proc):
        try:
            json.loads(proc.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        except ValueError as exc:
            return f"not JSON: {exc}"
        return None

    add(
        Case(
            "check --json is JSON",
            "silent",
            ["check", "cur.csv", "--baseline", "base.csv", "--json"],
            "fail",
            lambda d: (
                (
                    _edit_golden(
                        d, "cur.csv", lambda rows: [r | {"top1": ""} if i == 1 else r for i, r in enumerate(rows)]
                    ),
                    _csv(d, "base.csv"),
                )
            ),
            json_ok,
        )
    )

    # ---- unclear
    def vit_t_state(d):
        script = (
            "import timm; from safetensors.torch import save_file;"
            "m = timm.create_model('vit_tiny_patch16_224', pretrained=False);"
            f"save_file({{k: t.contiguous() for k, t in m.state_dict().items()}}, {str(d / 't.safetensors')!r})"
        )
        subprocess.run([sys.executable, "-c", script], check=True)
        return None

    add(
        Case(
            "a ViT-Ti state dict given to the demo",
            "unclear",
            ["sweep", "--checkpoint", "t.safetensors", "--r", "0"],
            "fail",
            vit_t_state,
            contains="architecture",
        )
    )
    add(
        Case(
            "a bogus HTTPS_PROXY",
            "unclear",
            ["sweep", "--model", "vit_t", "--device", "cpu", "--data", "synthetic", "--r", "0"],
            "fail",
            env={"HTTPS_PROXY": "http://127.0.0.1:9", "HF_HUB_OFFLINE": None},
            timeout=40,
        )
    )

    # ---- unbounded
    add(
        Case(
            "--opt kmeans.iters=10^11",
            "unbounded",
            ["sweep", *TINY, "--reducer", "kmeans", "--r", "2", "--opt", "kmeans.iters=100000000000"],
            "refuse",
            timeout=60,
        )
    )
    add(
        Case(
            "--repeats 10^20",
            "unbounded",
            ["sweep", *TINY[:-6], "--repeats", "100000000000000000000", "--r", "0"],
            "refuse",
            timeout=60,
        )
    )
    add(
        Case(
            "schedules --samples 10^11",
            "unbounded",
            ["schedules", "--samples", "100000000000", "--repeats", "1"],
            "refuse",
            timeout=60,
        )
    )
    add(
        Case(
            "--opt kmeans.iters=-1",
            "unbounded",
            ["sweep", *TINY, "--reducer", "kmeans", "--r", "2", "--opt", "kmeans.iters=-1"],
            "refuse",
        )
    )
    add(Case("--dtype ''", "unbounded", ["sweep", *TINY, "--r", "0", "--dtype", ""], "refuse"))
    add(
        Case(
            "--model-arg num_classes=-1",
            "unbounded",
            ["sweep", *TINY, "--r", "0", "--model-arg", "num_classes=-1"],
            "refuse",
        )
    )

    # ---- a newcomer
    add(
        Case(
            "the default --out of a tagged timm name",
            "newcomer",
            [
                "sweep",
                "--model",
                "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                "--no-pretrained",
                "--device",
                "cpu",
                "--data",
                "synthetic",
                "--r",
                "0",
                "--repeats",
                "1",
                "--batch-size",
                "1",
                "--max-retime",
                "0",
            ],
            "ok",
            timeout=300,
        )
    )
    add(
        Case(
            "sweep --reducer prune,tome",
            "newcomer",
            ["sweep", *TINY, "--reducer", "prune,tome"],
            "refuse",
            contains="compare",
        )
    )
    add(
        Case(
            "sweep --config configs/demo.toml",
            "newcomer",
            ["sweep", "--config", str(REPO / "configs" / "demo.toml")],
            "refuse",
            contains="compare",
        )
    )
    add(Case("--reducer ToMe", "newcomer", ["sweep", *TINY, "--reducer", "ToMe", "--r", "2", "--out", "t.csv"], "ok"))
    add(
        Case(
            "--compile alone",
            "newcomer",
            ["sweep", *TINY, "--compile", "--repeats", "0"],
            "refuse",
            contains="--repeats",
        )
    )
    add(
        Case(
            "the class count of a 3-class folder",
            "newcomer",
            ["sweep", "--model", "demo", "--data", "data", "--r", "0", "--repeats", "1"],
            "refuse",
            lambda d: _images(d, classes=3),
            contains="num_classes=3",
        )
    )

    def batch_mismatch(d):
        _csv(d, "base.csv")
        _edit_golden(d, "cur.csv", lambda rows: [r | {"infer_batch_size": "128"} for r in rows])
        return None

    add(
        Case(
            "check across batch sizes names the flag",
            "newcomer",
            ["check", "cur.csv", "--baseline", "base.csv"],
            "refuse",
            batch_mismatch,
            contains="--batch-size",
        )
    )
    return out


_current_root = REPO


def run_case(case: Case, root: Path) -> tuple[str, str]:
    """(verdict, detail): verdict "clean", "failed" or "damaged"."""
    global _current_root
    _current_root = root
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        try:
            case.setup(d)
        except Exception as exc:  # noqa: BLE001 - a case that cannot be set up here says so
            return "skipped", f"setup: {exc}"
        env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", TOMEBENCH_CACHE=str(d / "cache"))
        for key, value in case.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(d / value) if key == "TOMEBENCH_CACHE" else value
        begin = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", "from tomebench.cli import app; app()", *case.args],
                cwd=d,
                env=env,
                capture_output=True,
                text=True,
                timeout=case.timeout,
            )
        except subprocess.TimeoutExpired:
            return "failed", f"still running after {case.timeout:.0f} s"
        seconds = time.perf_counter() - begin
        text = proc.stdout + proc.stderr
        if "Traceback (most recent call last)" in text:
            last = [line for line in text.splitlines() if line.strip()][-1]
            return "failed", f"traceback: {last[:100]}"
        damage = case.check(d, proc) if case.expect != "ok" or proc.returncode == 0 else None
        if damage and case.kind == "damaged":
            return "damaged", damage
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        if case.expect in ("refuse", "fail"):
            code = 2 if case.expect == "refuse" else 1
            if proc.returncode == 0:
                return "failed", "accepted (exit 0)"
            if case.expect == "refuse" and proc.returncode != 2:
                return "failed", f"exit {proc.returncode}, not 2"
            if case.expect == "fail" and proc.returncode not in (1, 2):
                return "failed", f"exit {proc.returncode}"
            if case.kind != "silent" or code == 2:
                error_lines = [line for line in errors if not line.startswith("note:")]
                if len(error_lines) != 1 or not error_lines[0].startswith("error:"):
                    return "failed", f"{len(error_lines)} error lines: {' | '.join(error_lines)[:120]}"
            if case.contains and case.contains not in text:
                return "failed", f"does not say {case.contains!r}: {' | '.join(errors)[:120]}"
            if damage:
                return "failed", damage
            return "clean", f"{seconds:.1f} s: {(errors[-1] if errors else '')[:90]}"
        if proc.returncode != 0:
            return "failed", f"exit {proc.returncode}: {' | '.join(errors)[-120:]}"
        if damage:
            return "failed", damage
        if case.contains and case.contains not in text:
            return "failed", f"does not say {case.contains!r}"
        return "clean", f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", help="run against this commit (a temporary git worktree) instead of the checkout")
    parser.add_argument("--only", default="", help="only the cases whose name contains this text")
    parser.add_argument("--json", type=Path, help="also write the verdicts here")
    args = parser.parse_args()
    chosen = [c for c in cases() if args.only in c.name]
    with tempfile.TemporaryDirectory() as tmp:
        root = REPO
        if args.rev:
            root = Path(tmp) / "checkout"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(root), args.rev],
                check=True,
                capture_output=True,
            )
        try:
            verdicts = []
            for case in chosen:
                verdict, detail = run_case(case, root)
                verdicts.append({"case": case.name, "kind": case.kind, "verdict": verdict, "detail": detail})
                print(f"{verdict:>8}  {case.kind:>9}  {case.name}: {detail}", flush=True)
        finally:
            if args.rev:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(root)],
                    check=False,
                    capture_output=True,
                )
    counts = {v: sum(1 for x in verdicts if x["verdict"] == v) for v in ("clean", "failed", "damaged", "skipped")}
    print(f"{len(verdicts)} cases: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.json:
        args.json.write_text(json.dumps(verdicts, indent=1))


if __name__ == "__main__":
    main()
