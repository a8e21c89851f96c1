"""Every command on a tiny model of each new family: torchvision (a `vit_*` builder registered with torchvision's
model registry) and transformers (a folder written by save_pretrained). Both predict the digits' 10 classes, so
the accuracy paths run too."""

from __future__ import annotations

import pytest

from tests.helpers import (
    invoke,
    read_rows,
)
from tests.reducers.layers import diffrate_schedule
from tomebench.reducers import REDUCERS

transformers = pytest.importorskip("transformers")

RUN = ["--repeats", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0"]


def test_sweep_with_accuracy(model_args, digits, tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *model_args, "--no-pretrained", *RUN, "--r", "0,4,16", "--data", digits, "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(r["reducer"], r["r"], r["tokens_final"]) for r in rows] == [
        ("none", "0", "65"),
        ("tome", "0", "65"),
        ("tome", "4", "49"),
        ("tome", "16", "9"),
    ]  # 65-16-16-16-8
    assert all(r["n_images"] == "360" and not r["error"] for r in rows)
    assert rows[0]["top1"] == rows[1]["top1"]  # r = 0 patched predicts what the unpatched model does


def test_compare_every_reducer(model_args, tmp_path):
    out = tmp_path / "c.csv"
    # diffrate has no released schedule for these tiny models: an explicit one removing 4 tokens per block; pitome
    # at a ratio that removes 4 per block; every other reducer at its own r (--match none: the knobs differ, so
    # compare would otherwise match GMACs).
    schedule = diffrate_schedule(65, 1, 4, 2, 2)
    opts = [arg for key, value in schedule.items() for arg in ("--opt", f"diffrate.{key}={value.replace(',', ':')}")]
    opts += ["--opt", "pitome.ratio=0.9225"]  # floor(T - 0.9225 T) = 4 for T = 64, 60, 56, 52
    result = invoke("compare", *model_args, "--no-pretrained", *RUN, "--r", "4", "--match", "none", *opts, "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert {r["reducer"] for r in rows} == set(REDUCERS.names())  # every registered reducer, and the unpatched
    # The reducers' knobs differ (EViT's is a keep rate), so compare matches GMACs: tome, the reference, removes 4
    # tokens per block; every other reducer runs the value of its own knob with the nearest GMACs.
    assert all(not r["error"] for r in rows) and {r["tokens_final"] for r in rows if r["reducer"] == "tome"} == {"49"}


def test_ablate(model_args, tmp_path):
    out = tmp_path / "a.csv"
    result = invoke("ablate", *model_args, "--no-pretrained", *RUN, "--r", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 15 and (tmp_path / "a.md").is_file()


def test_schedules(model_args, digits, tmp_path):
    out = tmp_path / "sc.csv"
    result = invoke(
        "schedules",
        *model_args,
        "--no-pretrained",
        *RUN,
        "--samples",
        "3",
        "--limit",
        "40",
        "--data",
        digits,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert sum("," in row["schedule"] for row in read_rows(out)) == 3 and (tmp_path / "sc.png").is_file()


def test_visualize(model_args, digits, tmp_path):
    out = tmp_path / "v.png"
    result = invoke(
        "visualize", digits / "0" / "0024.png", *model_args, "--no-pretrained", "--layers", "1,4", "--r", "4", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".svg").is_file()
