"""One-shot GPU check (under 10 minutes on one GPU, no downloads): is CUDA timing sane, and what does ToMe buy?

    .venv/bin/python benchmarks/gpu_check.py        (or: make gpu-check)

1. Timing sanity: the same work timed with CUDA events and with a synchronised wall clock must agree (within 5%);
   a timer that stops before queued kernels finish would read far too fast.
2. ViT-B/16 (random init), batch 256, fp16 and bf16 autocast, every reducer at r = 0, 8, 13, 16, interleaved
   against the unpatched model: images/s, speedup, peak memory. CSVs go to results/gpu/.
3. Compiled (issue 17): ViT-B/16 fp16 at batch 256, `--compile`, ToMe r = 0, 16 against the compiled
   unpatched model; then `--compile-mode reduce-overhead` (CUDA graphs) at batch 1 and 8 with per-image latency:
   compile time, images/s, speedup, latency p50/p99. CSVs vit_b-compiled-*.csv.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import timm
import torch

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.reducers import REDUCERS
from tomebench.results.csv import write_csv

OUT = Path("results/gpu")


def timing_sanity(device: torch.device) -> float:
    """Ratio of event time to wall time for 20 fp16 ViT-B forwards at batch 64."""
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval().to(device)
    x = torch.randn(64, 3, 224, 224, device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        for _ in range(5):
            model(x)
        torch.cuda.synchronize(device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        wall = time.perf_counter()
        begin.record()
        for _ in range(20):
            model(x)
        end.record()
        end.synchronize()
        wall = time.perf_counter() - wall
    return begin.elapsed_time(end) / 1e3 / wall


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, timm {timm.__version__}")
    ratio = timing_sanity(device)
    verdict = "ok" if 0.95 <= ratio <= 1.05 else "SUSPECT"
    print(f"timing sanity: CUDA events / synchronised wall clock = {ratio:.3f} ({verdict})")
    reducers = tuple(entry.name for entry in REDUCERS if entry.name != "none")
    OUT.mkdir(parents=True, exist_ok=True)
    for dtype in ("fp16", "bf16"):
        spec = RunSpec(
            model="vit_base_patch16_224",
            reducers=reducers,
            r=(0, 8, 13, 16),
            batch_sizes=256,
            device="cuda",
            dtype=dtype,
            data="synthetic",
            pretrained=False,
            repeats=10,
        )
        rows = run_sweep(spec)
        path = write_csv(rows, OUT / f"vit_b-{dtype}.csv")
        print(f"\n{dtype}: {path}")
        print(f"{'reducer':>11} {'r':>3} {'img/s':>9} {'speedup':>8} {'peak MB':>8} {'GFLOPs':>7}  note/error")
        for row in rows:
            if row.error:
                print(f"{row.reducer:>11} {row.r:>3} error: {row.error}")
                continue
            print(
                f"{row.reducer:>11} {row.r:>3} {row.infer_samples_per_sec:>9.1f} {row.speedup:>7.3f}x "
                f"{row.peak_mem_mb:>8.0f} {row.infer_gflops:>7.2f}  {row.note or ''}"
            )
    compiled_runs = {
        "default-b256": dict(batch_size=256, compile="default"),
        "reduce-overhead-b1-b8": dict(batch_size=(1, 8), compile="reduce-overhead", latency=True),
    }
    for name, options in compiled_runs.items():
        spec = RunSpec(
            model="vit_base_patch16_224",
            reducers=("tome",),
            r=(0, 16),
            device="cuda",
            dtype="fp16",
            data="synthetic",
            pretrained=False,
            repeats=10,
            **options,
        )
        rows = run_sweep(spec)
        path = write_csv(rows, OUT / f"vit_b-compiled-{name}.csv")
        print(f"\ncompiled {name}, fp16: {path}")
        print(
            f"{'reducer':>11} {'r':>3} {'batch':>5} {'compile s':>9} {'img/s':>9} {'speedup':>8} "
            f"{'lat p50 ms':>10} {'lat p99 ms':>10}  note/error"
        )
        for row in rows:
            if row.error:
                print(f"{row.reducer:>11} {row.r:>3} {row.infer_batch_size:>5} error: {row.error}")
                continue
            latency = (
                f"{row.latency_ms_p50:>10.2f} {row.latency_ms_p99:>10.2f}"
                if row.latency_ms_p50 is not None
                else f"{'-':>10} {'-':>10}"
            )
            print(
                f"{row.reducer:>11} {row.r:>3} {row.infer_batch_size:>5} {row.compile_s:>9.1f} "
                f"{row.infer_samples_per_sec:>9.1f} {row.speedup:>7.3f}x {latency}  {row.note or ''}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
