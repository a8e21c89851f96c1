"""Every registered reducer at equal cost on ViT-B/16 and DeiT-S (random init), batch 16, fp32, CPU: ToMe at one r,
every other reducer at the value of its own knob whose GMACs per image is closest (`--match gmacs`), all timed
interleaved with the unpatched model in one run per model by tomebench's own timing loop.

    .venv/bin/python benchmarks/field.py [--models vit_base_patch16_224,deit_small_patch16_224] [--r 16,13]
        [--reducers tome,mctf,dct] [--repeats 9] [--out results/bench-field.csv]

Prints, per model, each reducer's speedup (median of paired rounds, with its 95% interval), GMACs per image and
its reduction, the knob value chosen and which attention ran. A reducer that cannot run on a model (DiffRate has
no released schedule for ViT-B/16 AugReg) is an error row, listed with its reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError
from tomebench.reducers import REDUCERS
from tomebench.results.csv import write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_base_patch16_224,deit_small_patch16_224")
    parser.add_argument("--r", default="16,13", help="ToMe's r per model (the cost every reducer is matched to)")
    parser.add_argument("--reducers", default="", help="a comma list (default: every registered reducer)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path("results/bench-field.csv"))
    args = parser.parse_args()
    models, rs = args.models.split(","), [int(v) for v in args.r.split(",")]
    if len(rs) != len(models):
        parser.error("give one --r per model")
    reducers = tuple(entry.name for entry in REDUCERS if entry.name != "none")
    if args.reducers:
        try:
            chosen = tuple(REDUCERS.get(name).name for name in args.reducers.split(","))
        except UsageError as error:
            parser.error(str(error))
        # tome is the cost every other reducer is matched to, so it always runs
        reducers = tuple(dict.fromkeys(("tome",) + chosen))
    every = []
    for model, r in zip(models, rs):
        spec = RunSpec(
            model=model,
            reducers=reducers,
            r=(r,),
            batch_sizes=args.batch_size,
            device="cpu",
            dtype="fp32",
            data="synthetic",
            pretrained=False,
            repeats=args.repeats,
            match="gmacs",
            group_size=0,  # one timing group: every speedup over the same unpatched rounds
        )
        rows = run_sweep(spec)
        every += rows
        base = next(row for row in rows if row.reducer == "none")
        print(f"\n{model}, batch {args.batch_size}, fp32, {base.device_name}, {args.repeats} interleaved rounds")
        print(f"{'reducer':>10} {'speedup':>8} {'95% interval':>13} {'GMACs':>7} {'cut':>6} {'attn':>6}  knob / note")
        for row in rows:
            if row.error:
                print(f"{row.reducer:>10} error: {row.error}")
                continue
            gmacs = row.infer_gflops / 2
            cut = 1 - row.infer_gflops / base.infer_gflops
            interval = f"{row.speedup_ci_low:.2f}-{row.speedup_ci_high:.2f}" if row.speedup_ci_low else ""
            chosen = row.reducer_options or f"r={row.r}"
            print(
                f"{row.reducer:>10} {row.speedup:>7.2f}x {interval:>13} {gmacs:>7.3f} {cut:>6.1%} "
                f"{row.attn_impl or '':>6}  {chosen}{'; ' + row.note if row.note else ''}"
            )
    write_csv(every, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
