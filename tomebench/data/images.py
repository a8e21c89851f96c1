"""The samples to evaluate, whatever holds them: a list of references (files, dataset rows, tar members) with
their labels, in evaluation order, and how to open one. Subsets (--limit) and shards (Ray) are taken here, so
every source keeps the same promises."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from PIL import Image

from tomebench.errors import UsageError


class Source(Protocol):
    """Where the samples of a non-folder dataset live (a Hugging Face dataset, tar shards). Picklable: DataLoader
    workers and Ray tasks get it whole."""

    def read(self, item: Any) -> bytes:
        """The encoded image of one sample (its bytes as stored)."""
        ...

    def name(self, item: Any) -> str | None:
        """The sample's file name or key where the dataset keeps one (ReaL labels find val images by it)."""
        ...

    def identity(self) -> str:
        """What distinguishes this data from other data at the same address (sizes, times): for --cache-data."""
        ...


@dataclass(frozen=True)
class ImageList:
    """The images to evaluate, in evaluation order. classes[i] names label i (None for a labels file).

    files[i] is a Path (image folders), or a reference that `source.read` opens (a row index, a tar member).
    real[i], with --real-labels, is image i's ImageNet-ReaL label set (maybe empty: left out of ReaL top-1).
    valid, with a class subset (ImageNet-A/R), are the model classes label 0, 1, ... stand for: logits outside
    them are ignored, as timm's validate.py --valid-labels does."""

    files: tuple[Any, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...] | None
    name: str  # the `dataset` column
    source: Source | None = None
    real: tuple[tuple[int, ...], ...] | None = None
    valid: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else max(self.labels) + 1

    def take(self, indices: Sequence[int]) -> ImageList:
        """The samples at `indices`, in that order, with everything else kept."""
        real = None if self.real is None else tuple(self.real[i] for i in indices)
        files, labels = tuple(self.files[i] for i in indices), tuple(self.labels[i] for i in indices)
        return replace(self, files=files, labels=labels, real=real)

    def shard(self, start: int, stop: int) -> ImageList:
        return self.take(range(start, stop))

    def name_of(self, index: int) -> str | None:
        item = self.files[index]
        return item.name if self.source is None else self.source.name(item)

    def open(self, index: int) -> Image.Image:
        """Sample `index` opened with PIL (not yet decoded: PIL decodes on load)."""
        item = self.files[index]
        if self.source is None:
            return Image.open(item)
        return Image.open(io.BytesIO(self.source.read(item)))


def balanced_subset(images: ImageList, limit: int | None) -> ImageList:
    """At most `limit` images, taken round-robin over classes in file order: every class gets its share
    (counts differ by at most one), and the same folder always gives the same subset."""
    if limit is None or limit >= len(images.files):
        return images
    if limit <= 0:
        raise UsageError(f"--limit must be positive, got {limit}")
    per_class: dict[int, list[int]] = {}
    for i, label in enumerate(images.labels):
        per_class.setdefault(label, []).append(i)
    queues = [per_class[c] for c in sorted(per_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
        depth += 1
    return images.take(sorted(chosen))  # keep folder order so batches look like the full run's


def first_readable(images: ImageList) -> Any | None:
    """The first sample PIL can decode, or None. Stops at the first success, so a good dataset costs one image."""
    from tomebench.data.loading import to_rgb

    for i, item in enumerate(images.files):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with images.open(i) as img:
                    img.load()
                    to_rgb(img)
            return item
        except Exception:  # noqa: BLE001 - as ImageFiles: whatever a decoder raises, the sample is unreadable
            continue
    return None
