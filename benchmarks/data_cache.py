"""The accuracy pass of a 9-configuration sweep with --cache-data: the first run (decodes, writes the cache) and a
cached run (reads it), against nine separate passes (one per configuration, each decoding everything).

    .venv/bin/python benchmarks/data_cache.py [--images 2000] [--model test_vit] [--workers 2] [--rounds 1]

It writes N ImageNet-sized (500x375) noise JPEGs with random labels to a temporary flat folder (accuracy is then
meaningless; the time is not) and evaluates tome at r = 0..8 on a random-init model (no weights needed). All three
variants must give the same top-1 per configuration (checked), and the cached batches the same bytes as decoding.
The rounds alternate the variants (a fresh cache each round); medians are reported.
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
from tomebench.data import cache
from tomebench.engine.images import resolve_images
from tomebench.engine.spec import RunSpec
from tomebench.evaluate import evaluate_in_one_pass
from tomebench.measure.device import autocast_for
from tomebench.models import create
from tomebench.patch import patch, unpatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="test_vit")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = create(args.model, pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder, labels = Path(tmp) / "jpegs", Path(tmp) / "labels.txt"
        write_noise_jpegs(folder, labels, args.images, loaded.model.num_classes)
        images = resolve_images(RunSpec(model=args.model, data=str(folder), labels=labels), loaded)
        compare(args, loaded, images, Path(tmp))


def write_noise_jpegs(folder: Path, labels: Path, count: int, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    labels.write_text("".join(f"{v}\n" for v in rng.integers(0, num_classes, count)))


def compare(args, loaded, images, tmp: Path) -> None:
    model, config = loaded.model, loaded.data_config
    device = torch.device("cpu")
    prepares = [lambda: unpatch(model)] + [lambda r=r: patch(model, "tome", r) for r in range(1, 9)]
    normalize = datasets.DeviceNormalize(config, device)
    autocast = autocast_for(device, "fp32")

    def loader():
        return datasets.make_loader(images, config, args.batch_size, args.workers, pin_memory=False)

    def one_pass(batches):
        start = time.perf_counter()
        result = evaluate_in_one_pass(model, prepares, batches, normalize, autocast)
        return time.perf_counter() - start, [a.top1 for a in result.per_config]

    nine, first, cached, decode_only, read_only = [], [], [], [], []
    for k in range(args.rounds):
        start = time.perf_counter()
        apart = [evaluate_in_one_pass(model, [p], loader(), normalize, autocast).per_config[0].top1 for p in prepares]
        nine.append(time.perf_counter() - start)
        print(f"round {k + 1}: nine passes {nine[-1]:.2f} s", flush=True)
        root = tmp / f"cache-{k}"
        seconds, written = one_pass(cache.batches(root, images, config, None, args.batch_size, False, loader))
        first.append(seconds)
        print(f"round {k + 1}: first run {seconds:.2f} s", flush=True)
        seconds, read = one_pass(cache.batches(root, images, config, None, args.batch_size, False, _never))
        cached.append(seconds)
        assert apart == written == read, (apart, written, read)
        # The data side alone (no model): what a pass costs where forwards are cheap (a GPU), or hide decoding.
        start = time.perf_counter()
        for _ in loader():
            pass
        decode_only.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in cache.batches(root, images, config, None, args.batch_size, False, _never):
            pass
        read_only.append(time.perf_counter() - start)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    t9, t1, tc = (statistics.median(t) for t in (nine, first, cached))
    print(
        f"{loaded.name} on {len(images.files)} 500x375 JPEGs, 9 configurations (tome r=0..8), batch "
        f"{args.batch_size}, {args.workers} workers, {torch.get_num_threads()} threads, "
        f"median of {args.rounds} round(s)"
    )
    print(f"nine passes              : {t9:7.2f} s  (1.00x)")
    print(f"one pass, first run      : {t1:7.2f} s  ({t1 / t9:.2f}x; decodes and writes the {size:.0f} MiB cache)")
    print(f"one pass, cached run     : {tc:7.2f} s  ({tc / t9:.2f}x)")
    td, tr = statistics.median(decode_only), statistics.median(read_only)
    print(f"data alone: decoding {td:.2f} s, reading the cache {tr:.3f} s ({td / max(tr, 1e-9):.0f}x faster)")
    print("top-1 per config (equal in all three):", ", ".join(f"{v:.2f}" for v in apart))


def _never():
    raise AssertionError("the cached run decoded")


if __name__ == "__main__":
    main()
