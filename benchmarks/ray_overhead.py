"""Wall time of the demo sweep measured here vs on a local Ray, and whether their accuracy columns agree.

    .venv/bin/python benchmarks/ray_overhead.py [--rounds 2] [--num-cpus 2] [--group-size 8]

Each round runs the same sweep (the demo model over r = 0..8 on the digits test split) with the local executor
and then with `RayExecutor` on a Ray started here (`ray.init(num_cpus=...)`, once, so its start-up is reported
separately). Medians over rounds are reported; this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

from tomebench.engine.ray import RayExecutor, import_ray
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec

ACCURACY = ("reducer", "r", "top1", "top5", "n_images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    args = parser.parse_args()
    ray = import_ray()
    spec = RunSpec(model="demo", group_size=args.group_size)
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s")
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for round_ in range(args.rounds):
        results = {}
        for name, executor in (("local", None), ("ray", RayExecutor())):
            start = time.perf_counter()
            rows = run_sweep(spec, executor=executor)
            times[name].append(time.perf_counter() - start)
            results[name] = [tuple(getattr(row, c) for c in ACCURACY) for row in rows]
        same = results["local"] == results["ray"]
        print(
            f"round {round_ + 1}: local {times['local'][-1]:.1f} s, ray {times['ray'][-1]:.1f} s, "
            f"accuracy columns {'identical' if same else 'DIFFER'} ({len(results['local'])} rows)"
        )
    local, distributed = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"median: local {local:.1f} s, ray {distributed:.1f} s ({distributed / local:.2f}x)")
    ray.shutdown()


if __name__ == "__main__":
    main()
