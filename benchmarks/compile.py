"""Does ToMe's gain survive torch.compile? ViT-S/16 and ViT-B/16 (random init), batch 16, fp32, CPU: the unpatched
model and ToMe r = 8, 16, each eager and compiled (its own compiled module, static shapes, as `--compile` does),
all six timed interleaved in one run by tomebench's timing loop.

    .venv/bin/python benchmarks/compile.py [--models vit_small_patch16_224,vit_base_patch16_224] [--repeats 7]
        [--mode default] [--warm-cache] [--profile]

Prints per configuration: compile time (first call less the second), images/s, speedup over the unpatched model
of the same mode, and compiled over eager for the same configuration; also the largest logit difference and
the top-1 agreement between compiled and eager, and whether anything recompiled while it was timed (a
recompile or a guard failure inside the timed loop would show here).

Compile times are cold by default: inductor's on-disk cache (which makes a second compile of the same graph on the
same machine several times faster) is switched off, so they are what a first run pays; `--warm-cache` keeps it.
`--profile` also prints, for the eager and the compiled ToMe r=16 model, where the forward's CPU time goes (the
share of the matrix multiplies, which inductor leaves to the same oneDNN/BLAS kernels eager uses on CPU, bounds
what compiling can gain).

Targets on a 2-core CPU: compiled ToMe r=16 over compiled unpatched >= eager ToMe r=16 over eager unpatched, and
compiled ToMe r=16 at least as fast as eager ToMe r=16.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
import torch._inductor.config

import tomebench
from tomebench.measure.compiled import compile_module, limits, shared_copy
from tomebench.measure.timing import Candidate, TimingPlan, time_interleaved

R_VALUES = (0, 8, 16)  # 0: the unpatched model


def _configure(model: torch.nn.Module, r: int) -> torch.nn.Module:
    return tomebench.patch(model, "tome", r) if r else tomebench.unpatch(model)


def bench(name: str, batch_size: int, repeats: int, mode: str) -> list[dict]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    batch = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # (B, 3, 224, 224)
    results: list[dict] = []
    candidates: list[Candidate] = []
    with torch.inference_mode(), limits(len(R_VALUES)):
        for r in R_VALUES:
            eager_logits = _configure(model, r)(batch)
            module = compile_module(_configure(shared_copy(tomebench.unpatch(model)), r), mode)
            begin = time.perf_counter()
            compiled_logits = module(batch)
            first = time.perf_counter() - begin
            begin = time.perf_counter()
            module(batch)
            compile_s = first - (time.perf_counter() - begin)
            label = "unpatched" if r == 0 else f"tome r={r}"
            agree = (compiled_logits.argmax(-1) == eager_logits.argmax(-1)).float().mean().item()
            results += [
                dict(model=name, config=label, mode="eager", r=r),
                dict(
                    model=name,
                    config=label,
                    mode="compiled",
                    r=r,
                    compile_s=compile_s,
                    top1_agree=agree,
                    max_logit_diff=(compiled_logits - eager_logits).abs().max().item(),
                ),
            ]
            candidates += [
                Candidate(f"{label} eager", lambda r=r: _configure(model, r), lambda: model(batch), batch_size),
                Candidate(f"{label} compiled", lambda: None, lambda module=module: module(batch), batch_size),
            ]
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        timings = time_interleaved(candidates, torch.device("cpu"), TimingPlan(repeats=repeats))
        recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    tomebench.unpatch(model)
    by_label = {(res["config"], res["mode"]): t for res, t in zip(results, timings)}
    for res, timing in zip(results, timings):
        res["img_s"], res["p10"], res["p90"] = timing.samples_per_sec()
        res["speedup"] = timing.speedup_over(by_label[("unpatched", res["mode"])])
        res["over_eager"] = timing.speedup_over(by_label[(res["config"], "eager")])
        res["recompiled_while_timed"] = recompiled
    return results


def profile(name: str, batch_size: int, mode: str, r: int = 16) -> None:
    """Self CPU time by op, eager against compiled ToMe r, over 3 forwards after warm-up."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    model = tomebench.patch(timm.create_model(name, pretrained=False).eval(), "tome", r)
    batch = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        compiled = compile_module(shared_copy(model), mode)
        for label, forward in (("eager", model), ("compiled", compiled)):
            forward(batch), forward(batch)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    forward(batch)
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            top = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.1f}%" for e in events[:6])
            print(f"  profile {name} tome r={r} {label}: {total / 3e6:.2f} s per forward; {top}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mode", default="default")
    parser.add_argument("--warm-cache", action="store_true", help="let inductor reuse compiled graphs from disk")
    parser.add_argument("--profile", action="store_true", help="print where ToMe r=16's CPU time goes")
    args = parser.parse_args()
    torch._inductor.config.force_disable_caches = not args.warm_cache
    print(
        f"batch {args.batch_size}, fp32, CPU, {torch.get_num_threads()} threads, compile mode {args.mode}, "
        f"{args.repeats} interleaved repeats, inductor cache {'on' if args.warm_cache else 'off (cold compiles)'}"
    )
    print(
        f"{'model':>24} {'config':>10} {'mode':>9} {'compile s':>9} {'img/s':>7} {'p10..p90':>13} {'speedup':>8} "
        f"{'vs eager':>8} {'top-1 agree':>11} {'max |dlogit|':>12}"
    )
    for name in args.models.split(","):
        rows = bench(name, args.batch_size, args.repeats, args.mode)
        for row in rows:
            compiled = row["mode"] == "compiled"
            print(
                f"{name:>24} {row['config']:>10} {row['mode']:>9} "
                f"{row['compile_s'] if compiled else 0:>9.1f} {row['img_s']:>7.2f} "
                f"{row['p10']:>6.2f}..{row['p90']:<6.2f} {row['speedup']:>7.3f}x {row['over_eager']:>7.3f}x "
                f"{row['top1_agree'] if compiled else 1:>11.3f} {row.get('max_logit_diff', 0):>12.2e}"
            )
        eager16 = next(r for r in rows if r["r"] == 16 and r["mode"] == "eager")
        comp16 = next(r for r in rows if r["r"] == 16 and r["mode"] == "compiled")
        print(
            f"  targets: compiled r=16 speedup {comp16['speedup']:.3f}x >= eager {eager16['speedup']:.3f}x: "
            f"{'met' if comp16['speedup'] >= eager16['speedup'] else 'MISSED'}; compiled r=16 over eager r=16 "
            f"{comp16['over_eager']:.3f}x >= 1: {'met' if comp16['over_eager'] >= 1 else 'MISSED'}; "
            f"graphs compiled while timing: {rows[0]['recompiled_while_timed']}",
            flush=True,
        )
        if args.profile:
            profile(name, args.batch_size, args.mode)


if __name__ == "__main__":
    main()
