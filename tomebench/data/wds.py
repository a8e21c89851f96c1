"""WebDataset shards: `wds:/path/imagenet1k-validation-{00..63}.tar`, or a folder of `.tar` shards (timm's
imagenet-1k-wds layout). A shard is a plain tar in which the members of one sample share a key
(`ILSVRC2012_val_00000001.jpg`, `.cls`); the standard library reads it, so no extra is needed.

The shards are indexed once (each member's offset and size, the `.cls` labels read on the way), then samples are
read by offset like files: --limit takes a class-balanced subset, Ray's shards split the samples exactly, and the
one data pass decodes each sample once for every configuration.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tomebench.data.folders import IMAGE_EXTENSIONS
from tomebench.data.images import ImageList
from tomebench.errors import UsageError

IMAGES = tuple(ext.lstrip(".") for ext in sorted(IMAGE_EXTENSIONS))
RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def holds_shards(root: Path) -> bool:
    return root.is_dir() and next(root.glob("*.tar"), None) is not None


def expand(pattern: str) -> list[str]:
    """Brace patterns as webdataset writes them: {00..63} (zero-padded as written) and {a,b}."""
    numeric = RANGE.search(pattern)
    if numeric:
        low, high = numeric.group(1), numeric.group(2)
        width = len(low) if low.startswith("0") else 0
        head, tail = pattern[: numeric.start()], pattern[numeric.end() :]
        return [p for n in range(int(low), int(high) + 1) for p in expand(f"{head}{n:0{width}d}{tail}")]
    listed = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if listed:
        head, tail = pattern[: listed.start()], pattern[listed.end() :]
        return [p for choice in listed.group(1).split(",") for p in expand(head + choice + tail)]
    return [pattern]


def open_shards(where: str, notes: list[str]) -> ImageList:
    root = Path(where).expanduser()
    if root.is_dir():
        shards = sorted(root.glob("*.tar"))
        if not shards:
            raise UsageError(f"--data wds:{where} is a folder without .tar shards")
        name = root.name
    else:
        shards = [Path(p).expanduser() for p in expand(where)]
        missing = [p for p in shards if not p.is_file()]
        if missing:
            raise UsageError(
                f"--data wds:{where}: {len(missing)} of {len(shards)} shards missing (first: {missing[0]})"
            )
        name = re.sub(r"[-_.]*\{.*", "", root.name) or root.parent.name
    files, labels, unlabelled = [], [], 0
    for k, shard in enumerate(shards):
        found, dropped = _index(shard, k)
        unlabelled += dropped
        for member, label in found:
            files.append(member)
            labels.append(label)
    if not files:
        raise UsageError(f"--data wds:{where}: no sample with an image and a .cls label in {len(shards)} shard(s)")
    if unlabelled:
        notes.append(f"{unlabelled} samples of the shards have no image or no .cls label and are left out")
    return ImageList(tuple(files), tuple(labels), None, name, TarSource(tuple(map(str, shards))))


@dataclass(frozen=True)
class Member:
    """One sample's image in a shard: where its bytes start and how many there are."""

    shard: int
    offset: int
    size: int
    key: str


def _index(shard: Path, k: int) -> tuple[list[tuple[Member, int]], int]:
    """(image member, label) of every sample of one shard in stored order, and how many samples lack either."""
    images: dict[str, Member] = {}
    labels: dict[str, int | None] = {}
    order: list[str] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, _, base = info.name.rpartition("/")
                stem, _, ext = base.partition(".")
                key = f"{folder}/{stem}" if folder else stem
                if key not in labels:
                    labels[key] = None
                    order.append(key)
                ext = ext.lower()
                if ext in IMAGES and key not in images:
                    images[key] = Member(k, info.offset_data, info.size, key)
                elif ext in ("cls", "label", "json") and labels[key] is None:
                    labels[key] = _label(tar.extractfile(info).read(), ext)
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"--data: shard {shard} is not a readable uncompressed tar ({exc})") from None
    found = [(images[key], labels[key]) for key in order if key in images and labels[key] is not None]
    return found, len(order) - len(found)


def _label(raw: bytes, ext: str) -> int | None:
    try:
        if ext == "json":
            value = json.loads(raw)
            value = value.get("label", value.get("cls")) if isinstance(value, dict) else None
        else:
            value = int(raw.decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class TarSource:
    """Samples of uncompressed tar shards, read by offset."""

    shards: tuple[str, ...]

    def read(self, item: Member) -> bytes:
        with open(self.shards[item.shard], "rb") as f:
            f.seek(item.offset)
            return f.read(item.size)

    def name(self, item: Member) -> str:
        return item.key

    def identity(self) -> str:
        stats = [os.stat(s) for s in self.shards]
        return ";".join(f"{s}:{st.st_size}:{st.st_mtime_ns}" for s, st in zip(self.shards, stats))
