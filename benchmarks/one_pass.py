"""Accuracy of a 9-configuration sweep in one data pass vs nine separate passes (one per configuration).

    .venv/bin/python benchmarks/one_pass.py [--model demo] [--data demo] [--workers 2] [--rounds 3]
    .venv/bin/python benchmarks/one_pass.py --model vit_tiny_patch16_224 --no-pretrained --generate 512

--generate N writes N ImageNet-sized (500x375) noise JPEGs with random labels to a temporary flat folder, to see
the effect at ImageNet decoding cost (accuracy is then meaningless; the time is not).

Each batch is decoded once and run under every configuration in the one-pass variant; the nine-pass variant
decodes everything nine times, which is what evaluating configurations one by one costs. Both give the same
accuracies (checked). The rounds alternate the two variants; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tomebench import data as datasets
from tomebench.engine.images import resolve_images
from tomebench.engine.spec import RunSpec
from tomebench.evaluate import evaluate_in_one_pass
from tomebench.measure.device import autocast_for
from tomebench.models import create
from tomebench.patch import patch, unpatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false")
    parser.add_argument("--generate", type=int, default=0, metavar="N")
    args = parser.parse_args()
    loaded = create(args.model, pretrained=args.pretrained)
    model = loaded.model
    with tempfile.TemporaryDirectory() as tmp:
        labels = None
        if args.generate:
            args.data, labels = str(Path(tmp) / "jpegs"), Path(tmp) / "labels.txt"
            write_noise_jpegs(Path(args.data), labels, args.generate, loaded.model.num_classes)
        images = resolve_images(RunSpec(model=args.model, data=args.data, labels=labels), loaded)
        compare(args, loaded, model, images)


def write_noise_jpegs(folder: Path, labels: Path, count: int, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    labels.write_text("".join(f"{v}\n" for v in rng.integers(0, num_classes, count)))


def compare(args, loaded, model, images) -> None:
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
    print(
        f"{loaded.name} on {images.name} ({len(images.files)} images), 9 configurations, "
        f"batch {args.batch_size}, {args.workers} workers, median of {args.rounds} rounds"
    )
    print(f"one data pass : {t1:7.2f} s")
    print(f"nine passes   : {t9:7.2f} s  ({t9 / t1:.2f}x the one-pass time)")
    print("top-1 per config:", ", ".join(f"{a.top1:.2f}" for a in together.per_config))


if __name__ == "__main__":
    main()
