"""The command line through Typer's runner: real sweeps on a tiny timm ViT, and every kind of bad input."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tomebench import cli
from tomebench.cli import run as cli_run
from tomebench.results.row import COLUMNS

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

    monkeypatch.setattr(cli_run, "run", fake_run)
    result = invoke("sweep", "--model", "vit_b", "--r", "0..24:8", "--schedule", "decreasing", "--no-prop-attn",
                    "--dtype", "bf16", "--limit", "50")
    assert result.exit_code == 0, result.output
    spec = seen["spec"]
    assert (spec.model, spec.r, spec.schedule.label, spec.prop_attn, spec.dtype, spec.limit) == (
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


# ---------------------------------------------------------------- help, version, start-up (issue 15)

GOLDEN_HELP = Path(__file__).parent / "golden" / "sweep-help.txt"


def help_text(*args: str) -> str:
    # A fixed width: click wraps help to the terminal, and a golden text must not depend on who runs the test.
    result = runner.invoke(cli.app, [*args, "--help"], env={"COLUMNS": "100"}, terminal_width=100,
                           prog_name="tomebench")
    assert result.exit_code == 0, result.output
    return result.output


def test_sweep_help_matches_the_golden_text():
    # Regenerate deliberately after changing an option: tests/golden/sweep-help.txt is what a user reads.
    assert help_text("sweep") == GOLDEN_HELP.read_text()


@pytest.mark.parametrize("command", ["", "sweep", "compare", "ablate", "schedules", "check", "plot", "visualize",
                                     "paper-baseline", "train-demo"])
def test_help_keeps_brackets_and_shows_no_type_metavars(command):
    text = help_text(*([command] if command else []))
    for odd in ("<bool>", "<str>", "<int>", "<float>", "<path>", "list[", "<list"):
        assert odd not in text, (odd, text)
    if command in ("sweep", "compare"):
        assert "pip install 'tomebench[ray]'" in " ".join(text.split())
        assert "Default: 7 on CPU, 10 on CUDA." in " ".join(text.split())
    if command == "paper-baseline":
        assert "a [paper] table" in text


def test_top_level_command_list_is_whole_sentences():
    lines = help_text().split("Commands:")[1].splitlines()
    assert lines and not any(line.rstrip().endswith("...") for line in lines), lines


def test_help_states_the_engine_defaults():
    from tomebench.engine.accuracy import workers
    from tomebench.engine.spec import RunSpec
    from tomebench.measure.timing import NOISY_SPREAD, TimingPlan

    text = " ".join(help_text("sweep").split())
    cuda = TimingPlan.for_device(torch.device("cuda")).repeats
    assert f"Default: {TimingPlan().repeats} on CPU, {cuda} on CUDA" in text
    assert f"spread above {NOISY_SPREAD:.0%} of its median" in text
    assert f"[default: {RunSpec().max_retime}]" in text
    assert workers(None) == min(4, __import__("os").cpu_count() or 1) and "at most 4" in text


def test_version():
    from tomebench import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"tomebench {__version__}"


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_help_models_and_version_import_neither_torch_nor_timm_nor_matplotlib():
    heavy = "[m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules]"
    for args in (["--help"], ["models"], ["--version"]):
        code = (f"import sys\nfrom tomebench import cli\ntry:\n    cli.app({args!r})\nexcept SystemExit:\n    pass\n"
                f"print({heavy})")
        assert _fresh_python(code).splitlines()[-1] == "[]", args


def test_patch_stays_the_function_when_the_submodule_is_imported():
    code = ("import tomebench, tomebench.patch, tomebench.engine.run\n"
            "print(tomebench.patch.__module__, callable(tomebench.patch), type(tomebench.patch).__name__)")
    assert _fresh_python(code) == "tomebench.patch True function"


def test_reducers_list_options_with_defaults_and_choices_from_signatures():
    from tomebench.reducers import REDUCERS

    result = invoke("reducers")
    assert result.exit_code == 0, result.output
    for entry in REDUCERS:
        for option in entry.obj.options:
            assert option.describe() in result.output, option
    tome = {o.name: o for o in REDUCERS.get("tome").options}
    assert tome["distance"].describe() == "distance=cosine (cosine|dot|euclidean)"
    assert "iters=5 (int, 0..100)" in result.output


# ---------------------------------------------------------------- friendlier errors (issue 15)


def test_class_count_mismatch_suggests_num_classes(tmp_path):
    weights = tmp_path / "ten.safetensors"
    save_file(timm.create_model("test_vit", num_classes=10).state_dict(), str(weights))
    result = invoke("sweep", "--model", "test_vit", "--checkpoint", str(weights), "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, "--model-arg num_classes=10")


def test_offline_hub_miss_fails_at_once_and_names_hf_hub_offline(monkeypatch):
    from tomebench import models
    from tomebench.errors import TomebenchError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in models.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(models.socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    with pytest.raises(TomebenchError, match="HF_HUB_OFFLINE=1"):
        models._fail_fast_offline("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TomebenchError, match="HF_HUB_OFFLINE is set"):
        models.create("vit_t")


def test_forward_with_state_on_an_unpatched_model_says_to_patch_first():
    import tomebench
    from tomebench.errors import UsageError

    model = timm.create_model("test_vit").eval()
    with pytest.raises(UsageError, match=r"call tomebench.patch\(model"):
        tomebench.forward_with_state(model, torch.zeros(1, 3, 160, 160))


def test_summary_leads_with_speedup_and_the_rows_own_unpatched_rate(tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *TINY, "--r", "0,2", "--max-retime", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "speedup" in line and "reducer" in line)
    assert header.index("speedup") < header.index("img/s") and "unpatched img/s" in header
    rows = read_rows(out)
    assert len({r["baseline_samples_per_sec"] for r in rows}) == 1 and rows[0]["baseline_samples_per_sec"]
    assert all(float(r["speedup_p10"]) <= float(r["speedup"]) <= float(r["speedup_p90"]) for r in rows)
