"""ToMe speedup on ViT-B/16 (random init), batch 16, fp32, CPU: r = 8, 13, 16 and patched r = 0 against the
unpatched model, all measured interleaved in one run by tomebench's own timing loop.

    .venv/bin/python benchmarks/speedup.py [--repeats 9] [--out results/bench-speedup.csv]
    .venv/bin/python benchmarks/speedup.py --model tv:vit_b_16 --r 0,8,16 --out results/bench-speedup-tv.csv

Any family's model works (`tv:vit_b_16` is torchvision's ViT-B/16, also random init; `make bench-tv`).
Targets on a 2-core CPU: r=16 >= 1.9x, patched r=0 >= 0.98x of unpatched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.results.csv import write_csv

TARGETS = {16: 1.9, 0: 0.98}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--r", default="0,8,13,16", help="comma-separated r values (besides the unpatched model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("results/bench-speedup.csv"))
    args = parser.parse_args()
    spec = RunSpec(
        model=args.model,
        reducers=("tome",),
        r=tuple(int(v) for v in args.r.split(",")),
        batch_sizes=args.batch_size,
        device="cpu",
        dtype="fp32",
        data="synthetic",
        pretrained=False,
        repeats=args.repeats,
    )
    rows = run_sweep(spec)
    write_csv(rows, args.out)
    print(f"{rows[0].model}, batch {args.batch_size}, fp32, {rows[0].device_name}, {args.repeats} interleaved repeats")
    print(f"{'config':>12} {'img/s (median)':>15} {'p10..p90':>16} {'speedup':>8} {'GFLOPs':>7} {'tokens':>6}  target")
    for row in rows:
        label = "unpatched" if row.reducer == "none" else f"tome r={row.r}"
        target = TARGETS.get(row.r) if row.reducer != "none" else None
        verdict = "" if target is None else f">= {target}x {'met' if row.speedup >= target else 'MISSED'}"
        spread = f"{row.infer_samples_per_sec_p10:.1f}..{row.infer_samples_per_sec_p90:.1f}"
        print(
            f"{label:>12} {row.infer_samples_per_sec:>15.2f} {spread:>16} {row.speedup:>7.3f}x "
            f"{row.infer_gflops:>7.2f} {row.tokens_final:>6}  {verdict}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
