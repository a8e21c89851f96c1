"""The command line through Typer's runner: real sweeps on a tiny timm ViT, and every kind of bad input."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tomebench import cli
from tomebench.results import COLUMNS

runner = CliRunner()
TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "2", "--batch-size", "2"]


def invoke(*args: str):
    return runner.invoke(cli.app, list(args))


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in text, text


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
    result = invoke("sweep", "--model", "test_vit", "--checkpoint", str(weights), "--r", "2",
                    "--repeats", "2", "--batch-size", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert read_rows(out)[0]["model"] == "test_vit"  # local weights: not named after the hub's tag


def test_spec_reaching_the_engine(monkeypatch, tmp_path):
    seen = {}

    def fake_run(spec, out, *rest):
        seen["spec"], seen["out"] = spec, out
        return []

    monkeypatch.setattr(cli, "_run", fake_run)
    result = invoke("sweep", "--model", "vit_b", "--r", "0..24:8", "--schedule", "decreasing", "--no-prop-attn",
                    "--dtype", "bf16", "--limit", "50")
    assert result.exit_code == 0, result.output
    spec = seen["spec"]
    assert (spec.model, spec.r, spec.schedule, spec.prop_attn, spec.dtype, spec.limit) == (
        "vit_b", (0, 8, 16, 24), "decreasing", False, "bf16", 50)
    assert spec.pretrained is True and spec.data is None and spec.device == "auto"
    assert str(seen["out"]) == "results/sweep-vit_b.csv"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "vit_bb"], ["unknown model 'vit_bb'", "did you mean vit_b"]),
        (["--reducer", "tomee", "--no-pretrained"], ["unknown reducer 'tomee'", "did you mean tome"]),
        (["--r", "24..0"], ["bad r range", "0..24"]),
        (["--r", "0..8:0"], ["step must be >= 1"]),
        (["--r", "abc"], ["bad r 'abc'"]),
        (["--schedule", "sideways"], ["bad schedule"]),
        (["--dtype", "fp16", "--device", "cpu"], ["fp16 needs a GPU"]),
        (["--dtype", "fp8", "--device", "cpu"], ["unknown dtype"]),
        (["--device", "tpu"], ["unknown device"]),
        (["--batch-size", "0", "--device", "cpu"], ["--batch-size must be >= 1"]),
        (["--checkpoint", "/nonexistent/w.safetensors", "--model", "test_vit"], ["checkpoint file not found"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragments, tmp_path):
    result = invoke("sweep", *args, "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu(tmp_path):
    result = invoke("sweep", "--device", "cuda", "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, "no CUDA GPU")


def test_unwritable_out_fails_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("sweep", *TINY, "--out", str(blocker / "sub" / "x.csv"))
    assert_one_line_error(result, 2, "is a file, not a folder")
    result = invoke("sweep", *TINY, "--out", str(tmp_path))
    assert_one_line_error(result, 2, "is a directory")


def test_offline_pretrained_weights_say_what_to_do(tmp_path):
    result = invoke("sweep", "--model", "test_vit", "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 1, "not reachable", "--checkpoint", "--no-pretrained")


def test_models_and_reducers_listings():
    result = invoke("models")
    assert result.exit_code == 0
    assert "vit_base_patch16_224.augreg_in21k_ft_in1k" in result.output and "deit_b_dist" in result.output
    result = invoke("reducers")
    assert result.exit_code == 0
    assert "tome" in result.output and "bipartite" in result.output
