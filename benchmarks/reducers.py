"""Every reducer at r = 16 on ViT-B/16 (random init), batch 16, fp32, CPU, relative to random pruning, all measured
interleaved in one run (with the unpatched model) by tomebench's own timing loop.

    .venv/bin/python benchmarks/reducers.py [--repeats 9] [--r 16] [--out results/bench-reducers.csv]

The paper's claim: matching costs about as much as pruning. Target: ToMe >= 0.93x of prune.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.reducers import REDUCERS
from tomebench.results.csv import write_csv

TARGET_TOME_VS_PRUNE = 0.93


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("results/bench-reducers.csv"))
    args = parser.parse_args()
    reducers = tuple(entry.name for entry in REDUCERS if entry.name != "none")
    spec = RunSpec(
        model=args.model,
        reducers=reducers,
        r=(args.r,),
        batch_sizes=args.batch_size,
        device="cpu",
        dtype="fp32",
        data="synthetic",
        pretrained=False,
        repeats=args.repeats,
    )
    rows = run_sweep(spec)
    write_csv(rows, args.out)
    prune = next(row for row in rows if row.reducer == "prune").infer_samples_per_sec
    print(
        f"{rows[0].model}, batch {args.batch_size}, fp32, r={args.r}, {rows[0].device_name}, "
        f"{args.repeats} interleaved repeats"
    )
    print(f"{'reducer':>11} {'img/s (median)':>15} {'p10..p90':>14} {'vs prune':>9} {'vs unpatched':>13} {'GFLOPs':>7}")
    for row in rows:
        if row.error:
            print(f"{row.reducer:>11} error: {row.error}")
            continue
        spread = f"{row.infer_samples_per_sec_p10:.2f}..{row.infer_samples_per_sec_p90:.2f}"
        print(
            f"{row.reducer:>11} {row.infer_samples_per_sec:>15.2f} {spread:>14} "
            f"{row.infer_samples_per_sec / prune:>8.3f}x {row.speedup:>12.3f}x {row.infer_gflops:>7.2f}"
        )
    tome = next(row for row in rows if row.reducer == "tome").infer_samples_per_sec / prune
    verdict = "met" if tome >= TARGET_TOME_VS_PRUNE else "MISSED"
    print(f"ToMe / prune = {tome:.3f} (target >= {TARGET_TOME_VS_PRUNE}: {verdict})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
