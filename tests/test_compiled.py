"""Issue 17: compiled configurations (--compile), batch size as a sweep axis (--batch-size 1,8,...) and per-image
latency (--latency). Tiny models only: one real inductor compile of a depth-6 test ViT (two modules), the rest
eager or with compilation faked."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import timm
import torch
from typer.testing import CliRunner

import tomebench
from tomebench import cli
from tomebench.cli.parse import batch_sizes as parse_batch_sizes
from tomebench.engine import accuracy as engine
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError
from tomebench.measure import compiled
from tomebench.measure.timing import LATENCY_CALLS, latency_plan
from tomebench.patch import patch_info
from tomebench.report import plots
from tomebench.report.gate import check
from tomebench.results.csv import read_csv, write_csv
from tomebench.results.journal import Journal

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def test_compiled_sweep_through_the_cli(tmp_path):
    # The real thing: inductor on CPU, the unpatched model and ToMe r=4, each its own compiled module.
    out = tmp_path / "c.csv"
    result = invoke("sweep", "--model", "test_vit", "--no-pretrained", "--r", "4", "--batch-size", "2", "--repeats",
                    "2", "--max-retime", "0", "--compile", "default", "--out", out)
    assert result.exit_code == 0, result.output
    frame = read_csv(out)
    assert list(frame["reducer"]) == ["none", "tome"]
    assert list(frame["compile"]) == ["default", "default"]
    assert (frame["compile_s"] > 0).all() and frame["error"].isna().all()
    assert frame["speedup"].notna().all()
    # Cost and tokens come from the eager model: the same numbers an eager sweep writes.
    assert list(frame["tokens_final"]) == [101, 101 - 6 * 4]


def test_compiled_module_computes_what_the_eager_one_does():
    model = timm.create_model("test_vit", pretrained=False, img_size=64).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    copy = tomebench.patch(compiled.shared_copy(model), "tome", 4)
    assert all(a is b for a, b in zip(model.parameters(), copy.parameters()))  # no weight was copied
    assert patch_info(model) is None  # the original stays unpatched
    padded = compiled.StaticBatch(copy, 4)
    with torch.inference_mode():
        assert torch.allclose(padded(x), copy(x), atol=1e-6)  # padding the batch changes no real image's logits
        assert padded(torch.cat([x, x])).shape == (6, model.num_classes)


def _fake_compile(failing_r: int):
    """compile_module stand-in: eager modules, except that configuration r=failing_r fails as inductor would."""

    def compile_module(module, mode):
        info = patch_info(module)
        if info is not None and max(info.r) == failing_r:
            class Broken(torch.nn.Module):
                def forward(self, x):
                    raise RuntimeError("InductorError: no working C++ compiler")

            return Broken()
        return module

    return compile_module


def test_a_failed_compile_is_that_rows_error_and_the_rest_is_measured(monkeypatch):
    monkeypatch.setattr(compiled, "compile_module", _fake_compile(2))
    spec = RunSpec(model="test_vit", pretrained=False, r=(2, 4), compile="default", data="synthetic", repeats=2,
                     batch_sizes=2, max_retime=0)
    rows = run_sweep(spec)
    by_r = {(row.reducer, row.r): row for row in rows}
    assert by_r[("tome", 2)].error.startswith("compile failed: RuntimeError: InductorError")
    assert by_r[("tome", 4)].error is None and by_r[("tome", 4)].speedup is not None
    assert all(row.compile == "default" for row in rows)


def test_batch_axis_pairs_speedup_by_batch_and_evaluates_each_configuration_once(monkeypatch, tmp_path):
    passes = []
    real = engine.evaluate_in_one_pass

    def counting(model, prepares, *args, **kwargs):
        passes.append(len(prepares))
        return real(model, prepares, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_in_one_pass", counting)
    spec = RunSpec(r=(4,), batch_sizes=(1, 8), limit=20, repeats=2, latency=True, max_retime=0)
    out = tmp_path / "b.csv"
    rows = run_sweep(spec, sink=Journal(out))
    assert [(row.reducer, row.infer_batch_size) for row in rows] == [("none", 1), ("none", 8), ("tome", 1),
                                                                      ("tome", 8)]
    assert passes == [2]  # one data pass, one forward per configuration, not per batch size
    assert rows[0].speedup == rows[1].speedup == 1.0  # each batch size has its own unpatched reference
    assert rows[2].top1 == rows[3].top1 and rows[2].n_images == 20
    for row in rows:
        assert row.latency_ms_p50 <= row.latency_ms_p90 <= row.latency_ms_p99
    assert rows[0].latency_speedup == 1.0 and rows[2].latency_speedup > 0
    # What --resume finds: every (configuration, batch size) already there.
    assert run_sweep(spec, sink=Journal(out, resume=True)) == []
    frame = read_csv(out)
    fig = plots.speedup_vs_batch(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["unpatched (1.0)", "tome r=4"]
    # Each line carries its p10-p90 bars, one per batch size, so noise cannot pass for a trend.
    (bars,) = ax.containers
    assert len(bars.lines[2][0].get_segments()) == 2


def test_latency_plan_times_single_calls(monkeypatch):
    plan = latency_plan(torch.device("cpu"))
    assert plan.repeats >= LATENCY_CALLS == 100 and plan.min_repeat_s == 0


@pytest.mark.parametrize(("text", "message"), [("0", "must be >= 1"), ("a", "bad --batch-size"),
                                               ("1..1000", "at most 64"), ("8..1", "bad --batch-size")])
def test_bad_batch_sizes(text, message):
    with pytest.raises(UsageError, match=message):
        RunSpec(batch_sizes=parse_batch_sizes(text))


def test_bad_compile_mode_exits_2(tmp_path):
    result = invoke("sweep", "--model", "test_vit", "--no-pretrained", "--compile", "fastest", "--out",
                    tmp_path / "x.csv")
    assert result.exit_code == 2 and "unknown --compile mode 'fastest'" in result.output


def test_check_never_holds_compiled_rows_to_eager_ones(tmp_path):
    from test_results import golden_rows

    eager = [row for row in golden_rows() if row.compile is None and row.error is None]
    current = write_csv([replace(row, compile="default") for row in eager], tmp_path / "compiled.csv")
    baseline = write_csv(eager, tmp_path / "eager.csv")
    with pytest.raises(UsageError, match="nothing to compare"):
        check(read_csv(current), read_csv(baseline))


def test_figure_needs_two_batch_sizes():
    frame = pd.DataFrame({"reducer": ["none"], "r": [0], "infer_batch_size": [8], "speedup": [1.0],
                          "infer_samples_per_sec": [10.0], "error": [pd.NA]})
    with pytest.raises(ValueError, match="two batch sizes"):
        plots.speedup_vs_batch(frame)
