"""--cache-data DIR: the decoded, resized, cropped uint8 images of a data pass, kept as one memory-mapped file, so
that later sweeps (of any model with the same data config) read them instead of decoding.

A cache is keyed on everything that decides its bytes: the samples (each file's path, size and modification time,
or the dataset's fingerprint and rows), their order, and the full data config (input size, crop_pct, crop mode,
interpolation, mean/std) with the family's own transform where it has one; a cache made with anything else is
another key, never read. It is written into a temporary folder beside its final place and renamed there only
once complete (a rename is atomic), so a pass killed half-way (kill -9) leaves a temporary folder that is never
read. What is read back is the bytes the decoder made: accuracy from a cache is bit-identical to decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tomebench.data.images import ImageList
from tomebench.data.loading import real_width
from tomebench.errors import UsageError

VERSION = 1  # of the layout below; another version is another key
CONFIG_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def key(images: ImageList, data_config: dict, transform: Callable | None = None) -> str | None:
    """The cache's name for these samples under this data config; None when the transform has no stable
    description (its repr names a memory address), so nothing could tell two of them apart."""
    described = None if transform is None else repr(transform)
    if described is not None and " at 0x" in described:
        return None
    if images.source is None:
        stats = [os.stat(path) for path in images.files]
        samples = [[str(Path(p).resolve()), s.st_size, s.st_mtime_ns] for p, s in zip(images.files, stats)]
    else:
        samples = [images.source.identity(), [repr(item) for item in images.files]]
    config = {k: _plain(data_config[k]) for k in CONFIG_KEYS if k in data_config}
    text = json.dumps([VERSION, samples, config, described], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class Cache:
    """One cache entry: DIR/<key>/pixels.u8 ((N, 3, H, W) uint8, raw) and readable.npy ((N,) bool)."""

    def __init__(self, root: Path, name: str, images: ImageList, shape: tuple[int, ...]):
        self.root, self.name, self.images, self.shape = Path(root), name, images, tuple(shape)
        self.final = self.root / name

    @property
    def complete(self) -> bool:
        return (self.final / "meta.json").is_file()

    def read(self, batch_size: int, pin_memory: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """The cached batches, as the DataLoader would give them: (uint8 (B, 3, H, W), labels, readable[, ReaL])."""
        n = len(self.images.files)
        pixels = np.memmap(self.final / "pixels.u8", dtype=np.uint8, mode="r", shape=(n, *self.shape))
        readable = np.load(self.final / "readable.npy")
        width = real_width(self.images)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batch = torch.from_numpy(np.array(pixels[start:stop]))  # a copy: the memory map stays read-only
            out = [
                batch.pin_memory() if pin_memory else batch,
                torch.tensor(self.images.labels[start:stop]),
                torch.from_numpy(readable[start:stop].copy()),
            ]
            if width:
                sets = torch.zeros((stop - start, width), dtype=torch.bool)
                for row, labels in enumerate(self.images.real[start:stop]):
                    sets[row, list(labels)] = True
                out.append(sets)
            yield tuple(out)

    def write_through(self, batches: Iterable[tuple[Tensor, ...]]) -> Iterator[tuple[Tensor, ...]]:
        """Yield `batches` unchanged while copying their pixels into a new cache, published only when every
        batch has gone by. A write that fails (a full disk) drops the cache, never the pass."""
        n = len(self.images.files)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = Path(tempfile.mkdtemp(prefix=f".{self.name}.", suffix=".partial", dir=self.root))
            pixels = np.memmap(temp / "pixels.u8", dtype=np.uint8, mode="w+", shape=(n, *self.shape))
        except OSError as exc:
            raise UsageError(f"--cache-data {self.root}: cannot write there ({exc.strerror or exc})") from None
        readable = np.zeros(n, dtype=bool)
        at, failed = 0, False
        try:
            for batch in batches:
                if not failed:
                    try:
                        size = len(batch[0])
                        pixels[at : at + size] = batch[0].numpy()
                        readable[at : at + size] = batch[2].numpy()
                        at += size
                    except OSError:
                        failed = True
                yield batch
            if not failed and at == n:
                self._publish(temp, pixels, readable)
        finally:
            del pixels
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)

    def _publish(self, temp: Path, pixels: np.memmap, readable: np.ndarray) -> None:
        pixels.flush()
        np.save(temp / "readable.npy", readable)
        meta = {"version": VERSION, "n": len(readable), "shape": list(self.shape), "dataset": self.images.name}
        (temp / "meta.json").write_text(json.dumps(meta))
        for name in ("pixels.u8", "readable.npy", "meta.json"):
            with open(temp / name, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.rename(temp, self.final)  # atomic: the entry appears whole or not at all
        except OSError:
            pass  # another sweep published the same entry first: theirs holds the same bytes


def batches(
    root: Path,
    images: ImageList,
    data_config: dict,
    transform: Callable | None,
    batch_size: int,
    pin_memory: bool,
    decode: Callable[[], Iterable[tuple[Tensor, ...]]],
    notes: list[str] | None = None,
) -> Iterable[tuple[Tensor, ...]]:
    """The pass's batches from the cache under `root` when it holds these samples under this data config, else
    from `decode()`, written to the cache on the way."""
    name = key(images, data_config, transform)
    if name is None:
        if notes is not None:
            notes.append("--cache-data: this model's transform has no stable description; decoded without cache")
        return decode()
    entry = Cache(root, name, images, tuple(data_config["input_size"]))
    if entry.complete:
        return entry.read(batch_size, pin_memory)
    return entry.write_through(decode())
