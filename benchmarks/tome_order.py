"""What matching the authors' ToMe costs: the default `tome` (A/B over the whole sequence, prefix tokens protected
by their scores, unmerged tokens sorted back into token order) against tomebench 0.1's split
(`tome.partition=alternating-patches`: over the patches only, no sort), with the unpatched model, interleaved in
one run by tomebench's own timing loop. Two models: ViT-B/16 (random init) at r = 16 and the bundled demo at r = 8.

    .venv/bin/python benchmarks/tome_order.py [--repeats 9] [--batch-size 16] [--out results/bench-tome-order.csv]

Target: the authors' order costs nothing measurable (default / alternating-patches within the run's noise).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import Config, RunSpec
from tomebench.reducers import merge_tokens
from tomebench.reducers.tome import bipartite_soft_matching
from tomebench.results.csv import write_csv

CASES = (("vit_base_patch16_224", 16), ("demo", 8))


def matching_cost(batch: int, rounds: int = 200) -> dict[str, float]:
    """Median microseconds of one ViT-B block's matching and merge (metric (B, 197, 64), features (B, 197, 768),
    r = 16) for the authors' order and 0.1's split, interleaved call by call: the sort's cost in isolation."""
    g = torch.Generator().manual_seed(0)
    metric, x = torch.randn(batch, 197, 64, generator=g), torch.randn(batch, 197, 768, generator=g)
    times: dict[str, list[float]] = {"alternating": [], "alternating-patches": []}
    with torch.inference_mode():
        for _ in range(rounds):
            for partition, samples in times.items():
                start = time.perf_counter()
                merge_tokens(bipartite_soft_matching(metric, 16, 1, partition=partition), x, None, None)
                samples.append((time.perf_counter() - start) * 1e6)
    return {partition: statistics.median(samples) for partition, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("results/bench-tome-order.csv"))
    args = parser.parse_args()
    runs = []
    for model, r in CASES:
        configs = (
            Config("tome", r),
            Config("tome", r, options=(("partition", "alternating-patches"),)),
        )
        spec = RunSpec(
            model=model,
            batch_sizes=args.batch_size,
            device="cpu",
            dtype="fp32",
            data="synthetic",
            pretrained=model == "demo",
            repeats=args.repeats,
            configs=configs,
            group_size=0,
        )
        runs.append(run_sweep(spec))
    rows = [row for run in runs for row in run]
    write_csv(rows, args.out)
    print(f"batch {args.batch_size}, fp32, {rows[0].device_name}, {args.repeats} interleaved repeats per model")
    print(f"{'model':>22} {'config':>30} {'img/s':>8} {'p10..p90':>16} {'speedup':>8}")
    for row in rows:
        label = "unpatched" if row.reducer == "none" else f"tome r={row.r} {row.reducer_options or '(authors)'}"
        spread = f"{row.infer_samples_per_sec_p10:.1f}..{row.infer_samples_per_sec_p90:.1f}"
        print(f"{row.model:>22} {label:>30} {row.infer_samples_per_sec:>8.1f} {spread:>16} {row.speedup:>7.3f}x")
    for run in runs:
        _, ours, old = run
        print(f"{ours.model}: authors' order / 0.1's split = {ours.speedup / old.speedup:.3f}")
    cost = matching_cost(args.batch_size)
    print(
        f"one block's matching + merge (ViT-B shapes, batch {args.batch_size}, r=16), median of 200 interleaved: "
        f"authors' order {cost['alternating']:.0f} us, 0.1's split {cost['alternating-patches']:.0f} us "
        f"(x 12 blocks: {12 * (cost['alternating'] - cost['alternating-patches']) / 1000:+.2f} ms per batch)"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
