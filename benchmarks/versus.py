"""This checkout's patched forward against another commit's, timed interleaved in one run.

Each version runs in its own long-lived worker process (the other commit's package from a `git worktree` of it,
this one's from here), both with ViT-B/16 (random init, same seed), batch 16, fp32, one thread count. The driver
asks them in turn, A B A B ..., to time one repeat of the unpatched model and of ToMe at each r; only one worker
computes at a time, so both see the same machine, and each round gives a paired new/old ratio per configuration.

    .venv/bin/python benchmarks/versus.py --rev HEAD~1 [--rounds 7] [--r 8,16] [--model vit_base_patch16_224]

Prints, per configuration, the median images/s of each version, the median of the paired ratios new/old (1.00:
no change) with its p10-p90, and each version's own speedup over its unpatched model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time
import timm, torch
import tomebench
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = timm.create_model(sys.argv[2], pretrained=False).eval()
batch = torch.randn(int(sys.argv[3]), 3, 224, 224, generator=torch.Generator().manual_seed(0))

def switch(r):
    if r < 0:
        tomebench.unpatch(model)
    else:
        tomebench.patch(model, "tome", r)

def step():
    model(batch)

print(json.dumps({"tomebench": tomebench.__file__}), flush=True)
with torch.inference_mode():
    for line in sys.stdin:
        r, iters = json.loads(line)
        switch(r)
        step()  # one untimed call after the switch, as the sweep's timing loop warms each candidate up
        begin = time.perf_counter()
        for _ in range(iters):
            step()
        print(json.dumps((time.perf_counter() - begin) / iters), flush=True)
"""


class Worker:
    def __init__(self, root: Path, args: argparse.Namespace):
        env = dict(os.environ, PYTHONPATH=str(root))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(args.threads), args.model, str(args.batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        self.where = json.loads(self.proc.stdout.readline())["tomebench"]

    def time(self, r: int, iters: int) -> float:
        self.proc.stdin.write(json.dumps([r, iters]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    pos = q * (len(values) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD~1", help="the other commit")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--r", default="8,16", help="comma-separated r values (besides the unpatched model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=2, help="forwards per timed repeat")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    configs = [-1] + [int(v) for v in args.r.split(",")]  # -1: the unpatched model
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(here), "worktree", "add", "--detach", str(old_root), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            new, old = Worker(here, args), Worker(old_root, args)
            times: dict[str, dict[int, list[float]]] = {name: {c: [] for c in configs} for name in ("new", "old")}
            for round_ in range(args.rounds + 1):  # round 0 warms both up and is not counted
                for config in configs:
                    for name, worker in (("new", new), ("old", old)) if round_ % 2 else (("old", old), ("new", new)):
                        seconds = worker.time(config, args.iters)
                        if round_:
                            times[name][config].append(seconds)
            new.close()
            old.close()
        finally:
            subprocess.run(
                ["git", "-C", str(here), "worktree", "remove", "--force", str(old_root)],
                check=False,
                capture_output=True,
            )
    rev = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--short", args.rev], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{args.model}, batch {args.batch_size}, fp32, {args.threads} threads, {args.rounds} interleaved rounds; "
        f"new = this checkout, old = {rev}"
    )
    print(
        f"{'config':>12} {'new img/s':>10} {'old img/s':>10} {'new/old (p10-p90)':>22} {'new speedup':>12} "
        f"{'old speedup':>12}"
    )
    for config in configs:
        ratios = [o / n for n, o in zip(times["new"][config], times["old"][config])]
        rate = {k: args.batch_size / statistics.median(times[k][config]) for k in ("new", "old")}
        speed = {k: statistics.median(a / b for a, b in zip(times[k][-1], times[k][config])) for k in ("new", "old")}
        label = "unpatched" if config < 0 else f"tome r={config}"
        spread = f"{statistics.median(ratios):.3f} ({quantile(ratios, 0.1):.3f}-{quantile(ratios, 0.9):.3f})"
        print(
            f"{label:>12} {rate['new']:>10.2f} {rate['old']:>10.2f} {spread:>22} {speed['new']:>11.3f}x "
            f"{speed['old']:>11.3f}x"
        )


if __name__ == "__main__":
    main()
