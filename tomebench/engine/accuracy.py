"""Accuracy of a timed group: one data pass over the images (or a shard of them) under every configuration that
got through timing, with exact counts so that shards add up."""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext

from tomebench import data as datasets
from tomebench.data import cache
from tomebench.engine.progress import Progress, Silent
from tomebench.engine.setup import Setup
from tomebench.engine.throughput import Throughput
from tomebench.evaluate import Accuracy, evaluate_in_one_pass
from tomebench.measure import compiled
from tomebench.patch import unpatch


def accuracy_sizes(setup: Setup, throughput: Throughput) -> dict[int, int]:
    """The configurations an accuracy pass evaluates, {index: batch that fits}: one of each sibling set (the one
    that fit the largest batch), since accuracy does not depend on the batch size; `group_rows` gives its
    accuracy to its siblings."""
    chosen: dict[int, int] = {}
    for i in throughput.evaluable:
        key, size = setup.sibling_key(i), throughput.checks[i].batch_size
        if key not in chosen or size > throughput.checks[chosen[key]].batch_size:
            chosen[key] = i
    return {i: throughput.checks[i].batch_size for i in sorted(chosen.values())}


def count_accuracy(
    setup: Setup,
    sizes: dict[int, int],
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
    tag: str = "",
) -> dict[int, Accuracy]:
    """One data pass over the images (or the shard [start, stop) of them) for configurations {index: batch size
    that fits}. Counts are exact, so shards add up to the whole. Empty when there are no images.

    A compiled configuration is called with exactly its batch size every time (the last, shorter batch padded;
    see `compiled.StaticBatch`), so the pass never recompiles it."""
    images = setup.images
    if images is None or not sizes:
        return {}
    if shard is not None:
        images = images.shard(*shard)
    progress = progress or Silent()
    progress.phase(f"accuracy{tag}", len(images.files))
    loaded, device = setup.loaded, setup.device
    pin = device.type == "cuda"

    def decode():
        return datasets.make_loader(
            images,
            loaded.data_config,
            setup.eval_batch_size,
            workers(setup.spec.workers),
            pin_memory=pin,
            transform=loaded.transform,
        )

    if setup.spec.cache_data is None:
        loader = decode()
    else:
        # The decoded crops of an earlier pass with the same samples and data config, or this pass's, kept.
        loader = cache.batches(
            setup.spec.cache_data, images, loaded.data_config, loaded.transform, setup.eval_batch_size, pin, decode
        )
    normalize = datasets.DeviceNormalize(loaded.data_config, device)
    indices = list(sizes)
    prepares = [setup.prepare(i) for i in indices]
    if setup.spec.compile is not None:
        prepares = [
            functools.partial(compiled.StaticBatch, prepare(), sizes[i]) for prepare, i in zip(prepares, indices)
        ]
    try:
        with compiled.limits(len(setup.configs)) if setup.spec.compile else nullcontext():
            evaluation = evaluate_in_one_pass(
                setup.model,
                prepares,
                loader,
                normalize,
                setup.autocast,
                progress.advance,
                [sizes[i] for i in indices],
                images.valid,
            )
    finally:
        unpatch(setup.model)
    return dict(zip(indices, evaluation.per_config))


def workers(requested: int | None) -> int:
    """DataLoader workers: as asked, else the CPU cores, at most 4."""
    return requested if requested is not None else min(4, os.cpu_count() or 1)
