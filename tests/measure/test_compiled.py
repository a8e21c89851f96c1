"""Compiled configurations (--compile): one real inductor compile of a depth-6 test ViT (two modules) through the
CLI, the compiled copy's numbers, and a compile failure as its row's error (compilation faked)."""

from __future__ import annotations

import torch

import tomebench
from tests.helpers import (
    invoke,
    make_vit,
)
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.measure import compiled
from tomebench.patch import patch_info
from tomebench.results.csv import read_csv


def test_compiled_sweep_through_the_cli(tmp_path):
    # The real thing: inductor on CPU, the unpatched model and ToMe r=4, each its own compiled module.
    out = tmp_path / "c.csv"
    result = invoke(
        "sweep",
        "--model",
        "test_vit",
        "--no-pretrained",
        "--r",
        "4",
        "--batch-size",
        "2",
        "--repeats",
        "2",
        "--max-retime",
        "0",
        "--compile",
        "--model-arg",
        "depth=2",  # inductor's time grows with the blocks it compiles; two show every part of the path
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    frame = read_csv(out)
    assert list(frame["reducer"]) == ["none", "tome"]
    assert list(frame["compile"]) == ["default", "default"]
    assert (frame["compile_s"] > 0).all() and frame["error"].isna().all()
    assert frame["speedup"].notna().all()
    # Cost and tokens come from the eager model: the same numbers an eager sweep writes.
    assert list(frame["tokens_final"]) == [101, 101 - 2 * 4]


def test_compiled_module_computes_what_the_eager_one_does():
    model = make_vit(img_size=64)
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
    spec = RunSpec(
        model="test_vit",
        pretrained=False,
        r=(2, 4),
        compile="default",
        data="synthetic",
        repeats=2,
        batch_sizes=2,
        max_retime=0,
    )
    rows = run_sweep(spec)
    by_r = {(row.reducer, row.r): row for row in rows}
    assert by_r[("tome", 2)].error.startswith("compile failed: RuntimeError: InductorError")
    assert by_r[("tome", 4)].error is None and by_r[("tome", 4)].speedup is not None
    assert all(row.compile == "default" for row in rows)
