"""`tomebench sweep` end to end on a tiny timm ViT: the CSV contract and its raw times, clamped r, local weights,
and the one note on r values left out."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import timm
from safetensors.torch import save_file

from tests.helpers import (
    invoke,
    read_rows,
)
from tomebench.results.row import COLUMNS

TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "2", "--batch-size", "2"]
SYNTHETIC = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--data", "synthetic"]


def test_sweep_writes_the_csv_contract_and_plots(tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *TINY, "--r", "0,4", "--out", str(out))
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        assert tuple(next(csv.reader(handle))) == COLUMNS
    rows = read_rows(out)
    assert [(r["reducer"], r["r"]) for r in rows] == [("none", "0"), ("tome", "0"), ("tome", "4")]
    assert float(rows[0]["speedup"]) == 1.0
    # test_vit: 100 patches + cls over 6 blocks; r=4 removes 24 tokens.
    assert [int(r["tokens_final"]) for r in rows] == [101, 101, 77]
    assert float(rows[2]["infer_gflops"]) < float(rows[1]["infer_gflops"]) == float(rows[0]["infer_gflops"])
    assert all(r["error"] == "" and float(r["infer_samples_per_sec"]) > 0 for r in rows)
    assert rows[0]["prop_attn"] == "False" and rows[2]["prop_attn"] == "True"
    assert rows[0]["top1"] == "" and rows[0]["dataset"] == ""  # synthetic: throughput only
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "s.svg").stat().st_size > 0
    # The raw repeat times behind each median are kept next to the CSV.
    sidecar = json.loads((tmp_path / "s.times.json").read_text())
    assert sidecar["settings"]["batch_size"] == 2 and sidecar["settings"]["model"] == "test_vit"
    [times] = sidecar["groups"]  # three configurations: one group
    assert list(times) == ["unpatched", "tome r=0", "tome r=4"]
    for row, label in zip(rows, times):
        raw = times[label]["step_times_s"]
        assert len(raw) == 2 and all(t > 0 for t in raw) and times[label]["error"] is None
        median_rate = statistics.median(2 / t for t in raw)  # batch 2
        assert float(row["infer_samples_per_sec"]) == pytest.approx(median_rate, rel=1e-5)


def test_r_beyond_what_tokens_allow_is_clamped_with_a_note(tmp_path):
    out = tmp_path / "c.csv"
    result = invoke("sweep", *TINY, "--r", "40", "--out", str(out))
    assert result.exit_code == 0, result.output
    row = read_rows(out)[1]
    assert row["error"] == ""
    # A block removes at most half the non-prefix tokens: 100 -> 60 -> 30 -> 15 -> 8 -> 4 -> 2.
    assert "clamped" in row["note"] and "2:40->30" in row["note"] and "1:" not in row["note"]
    assert int(row["tokens_final"]) == 1 + 2


def test_checkpoint_loads_local_weights(tmp_path):
    reference = timm.create_model("test_vit", pretrained=False)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    out = tmp_path / "k.csv"
    result = invoke(
        "sweep",
        "--model",
        "test_vit",
        "--checkpoint",
        str(weights),
        "--r",
        "2",
        "--repeats",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert read_rows(out)[0]["model"] == "test_vit"  # local weights: not named after the hub's tag


def test_the_cli_says_in_one_note_what_it_left_out(tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *SYNTHETIC, "--r", "60..10000000000000", "--out", out)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:") and "r values" in line]
    assert len(notes) == 1 and "1 distinct on test_vit" in notes[0], result.output
    assert [(r["reducer"], r["r"]) for r in read_rows(out)] == [("none", "0"), ("tome", "60")]
