"""Accuracy of a 9-configuration sweep in one data pass vs nine separate passes (one per configuration).

    .venv/bin/python benchmarks/one_pass.py [--model demo] [--data demo] [--workers 2] [--rounds 3]

Each batch is decoded once and run under every configuration in the one-pass variant; the nine-pass variant
decodes everything nine times, which is what evaluating configurations one by one costs. Both give the same
accuracies (checked). The rounds alternate the two variants; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tomebench import data as datasets
from tomebench.evaluate import evaluate_in_one_pass
from tomebench.models import create
from tomebench.patch import patch, unpatch
from tomebench.sweep import SweepSpec, autocast_for, resolve_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loaded = create(args.model)
    model = loaded.model
    images = resolve_images(SweepSpec(model=args.model, data=args.data), loaded)
    device = torch.device("cpu")
    prepares = [lambda: unpatch(model)] + [lambda r=r: patch(model, "tome", r) for r in range(1, 9)]
    normalize = datasets.DeviceNormalize(loaded.data_config, device)
    autocast = autocast_for(device, "fp32")

    def loader():
        return datasets.make_loader(images, loaded.data_config, args.batch_size, args.workers, pin_memory=False)

    one, nine = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        together = evaluate_in_one_pass(model, prepares, loader(), normalize, autocast)
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        apart = [evaluate_in_one_pass(model, [p], loader(), normalize, autocast).per_config[0] for p in prepares]
        nine.append(time.perf_counter() - start)
        assert [a.top1 for a in together.per_config] == [a.top1 for a in apart]
    t1, t9 = statistics.median(one), statistics.median(nine)
    print(f"{loaded.name} on {images.name} ({len(images.files)} images), 9 configurations, "
          f"batch {args.batch_size}, {args.workers} workers, median of {args.rounds} rounds")
    print(f"one data pass : {t1:7.2f} s")
    print(f"nine passes   : {t9:7.2f} s  ({t9 / t1:.2f}x the one-pass time)")
    print("top-1 per config:", ", ".join(f"{a.top1:.2f}" for a in together.per_config))


if __name__ == "__main__":
    main()
