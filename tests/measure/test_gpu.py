"""What only a CUDA GPU can show; skipped without one (see conftest.py). Kept small: seconds on any GPU."""

from __future__ import annotations

import time

import pytest
import timm
import torch

import tomebench
from tests.helpers import assert_paired_speedups
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.measure.timing import Candidate, TimingPlan, time_interleaved

pytestmark = pytest.mark.gpu


def test_timing_waits_for_queued_kernels():
    """The timed repeat must cover the kernels it queued: compare with a synchronised wall clock."""
    device = torch.device("cuda")
    a = torch.randn(4096, 4096, device=device)
    plan = TimingPlan(warmup_iters=3, warmup_s=0.2, repeats=3, min_repeat_s=0.2)
    (timing,) = time_interleaved([Candidate("matmul", lambda: None, lambda: a @ a)], device, plan)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize(device)
    wall = (time.perf_counter() - start) / 10
    assert timing.median_step_ms() / 1e3 == pytest.approx(wall, rel=0.3)
    assert timing.peak_mem_mb is not None and timing.peak_mem_mb > 64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_patched_r0_matches_unpatched_under_autocast(dtype):
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False).eval().cuda()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        ref = model(x).float()
        tomebench.patch(model, r=0)
        out = model(x).float()
        tomebench.patch(model, r=8)
        reduced = model(x).float()
    tomebench.unpatch(model)
    assert (out - ref).abs().max() < 1e-2
    assert torch.isfinite(reduced).all()


def test_sweep_on_cuda_records_peak_memory_and_speedup():
    rows = run_sweep(
        RunSpec(
            model="test_vit", pretrained=False, r=(0, 8), batch_sizes=32, device="cuda", repeats=3, data="synthetic"
        )
    )
    assert [(row.reducer, row.r) for row in rows] == [("none", 0), ("tome", 0), ("tome", 8)]
    assert all(row.error is None and row.peak_mem_mb and row.peak_mem_mb > 0 for row in rows)
    assert rows[0].dtype == "fp16" and rows[0].speedup == 1.0
    # The patched rows' speedups: finite, inside their own paired spread, against this unpatched row.
    assert_paired_speedups(rows)
