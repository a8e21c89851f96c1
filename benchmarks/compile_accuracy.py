"""Compiled vs eager predictions on the demo: the 360 held-out digits through the bundled demo ViT, the unpatched
model and ToMe at each r asked for, eager and compiled (each configuration its own compiled module, as
`--compile` makes them). Prints, per configuration, how many images get the same top-1 class both ways, both
top-1 accuracies, and the largest logit difference.

    .venv/bin/python benchmarks/compile_accuracy.py [--r 4,8] [--mode default]

A handful of flips from different float rounding would be acceptable; a systematic difference is a bug.
"""

from __future__ import annotations

import argparse

import torch

from tomebench.data import DeviceNormalize, make_loader
from tomebench.engine.images import resolve_images
from tomebench.engine.spec import RunSpec
from tomebench.measure.compiled import compile_module, limits, shared_copy
from tomebench.models import create
from tomebench.patch import patch, unpatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--r", default="4,8", help="ToMe r values besides the unpatched model")
    parser.add_argument("--mode", default="default")
    args = parser.parse_args()
    loaded = create("demo")
    images = resolve_images(RunSpec(), loaded)
    normalize = DeviceNormalize(loaded.data_config, torch.device("cpu"))
    loader = make_loader(images, loaded.data_config, batch_size=len(images.files), workers=0, pin_memory=False)
    batch, labels, _ = next(iter(loader))
    x = normalize(batch)  # (360, 3, 32, 32): one batch, so each compiled module sees one shape
    model = loaded.model
    print(f"demo, {len(labels)} test digits, compile mode {args.mode}")
    print(f"{'config':>10} {'same top-1':>10} {'eager top-1':>11} {'compiled top-1':>14} {'max |dlogit|':>12}")
    r_values = [0] + [int(v) for v in args.r.split(",")]
    with torch.inference_mode(), limits(len(r_values)):
        for r in r_values:
            eager = (patch(model, "tome", r) if r else unpatch(model))(x)
            copy = shared_copy(unpatch(model))
            module = compile_module(patch(copy, "tome", r) if r else copy, args.mode)
            compiled = module(x)
            same = int((eager.argmax(-1) == compiled.argmax(-1)).sum())
            top1 = [100.0 * float((out.argmax(-1) == labels).float().mean()) for out in (eager, compiled)]
            label = "unpatched" if r == 0 else f"tome r={r}"
            print(
                f"{label:>10} {same:>6}/{len(labels)} {top1[0]:>11.2f} {top1[1]:>14.2f} "
                f"{(eager - compiled).abs().max().item():>12.2e}",
                flush=True,
            )
    unpatch(model)


if __name__ == "__main__":
    main()
