"""Image folders for accuracy: ImageNet-style class folders, or a flat folder with a labels file.

Decoding and resizing happen in DataLoader workers through the model's eval transform without normalisation
(uint8 tensors): timm's in its prefetcher form, or the family's own (torchvision weights' resize and crop, a
transformers image processor's); the mean/std normalisation runs on the device, as timm's validate.py does with
its prefetcher. An image that cannot be decoded does not stop the run: it comes back flagged, and is counted.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tomebench.errors import UsageError

# What a decoder may raise for a file that is not a usable image; a decompression bomb (an image claiming
# billions of pixels) is refused by PIL before decoding and counts as unreadable too.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


@dataclass(frozen=True)
class ImageList:
    """The images to evaluate, in evaluation order. classes[i] names label i (None for a labels file)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...] | None
    name: str  # the `dataset` column

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else max(self.labels) + 1


def discover(root: Path, labels_file: Path | None = None) -> ImageList:
    """Find the images under root: class subfolders (sorted names give label indices), or, with labels_file,
    the image files directly in root (sorted by name)."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"--data {root}: no such folder")
    if not root.is_dir():
        raise UsageError(f"--data {root} is not a folder")
    if labels_file is not None:
        return _flat_folder(root, Path(labels_file))
    try:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise UsageError(f"--data {root}: cannot read it ({exc.strerror or exc})") from None
    if not classes:
        if _images_in(root):
            raise UsageError(
                f"--data {root} holds images but no class subfolders; pass --labels FILE for a flat folder"
            )
        raise UsageError(f"--data {root} is empty: no class subfolders and no images")
    files, labels = [], []
    # A link back to the root or to a class folder is never walked (its images belong to that folder alone).
    visited = {os.path.realpath(root), *(os.path.realpath(root / cls) for cls in classes)}
    for index, cls in enumerate(classes):
        found = _images_below(root / cls, visited)
        files += found
        labels += [index] * len(found)
    if not files:
        raise UsageError(f"--data {root} has {len(classes)} class folder(s) but no images in them")
    return ImageList(tuple(files), tuple(labels), tuple(classes), root.name)


def _flat_folder(root: Path, labels_file: Path) -> ImageList:
    files = _images_in(root)
    if not files:
        raise UsageError(f"--data {root} holds no image files")
    if not labels_file.is_file():
        raise UsageError(f"--labels {labels_file}: no such file")
    lines = [ln.strip() for ln in _text(labels_file).splitlines() if ln.strip()]
    if lines and "," in lines[0]:
        labels = _labels_from_csv(labels_file, files)
    else:
        if len(lines) != len(files):
            raise UsageError(
                f"--labels {labels_file} has {len(lines)} labels but {root} holds {len(files)} images "
                "(one label per line, in sorted file-name order)"
            )
        labels = [_parse_label(v, labels_file, i + 1) for i, v in enumerate(lines)]
    return ImageList(tuple(files), tuple(labels), None, root.name)


def _labels_from_csv(labels_file: Path, files: Sequence[Path]) -> list[int]:
    """A `name,label` CSV; an optional header row is recognised by a non-integer label."""
    rows = [row for row in csv.reader(_text(labels_file).splitlines()) if row]
    if rows and not rows[0][-1].strip().lstrip("-").isdigit():
        rows = rows[1:]
    by_name = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise UsageError(f"--labels {labels_file} line {line}: expected `name,label`, got {','.join(row)!r}")
        by_name[row[0].strip()] = _parse_label(row[1], labels_file, line)
    missing = [f.name for f in files if f.name not in by_name]
    if missing:
        raise UsageError(
            f"--labels {labels_file} has no label for {len(missing)} of {len(files)} images (first: {missing[0]})"
        )
    return [by_name[f.name] for f in files]


def _text(labels_file: Path) -> str:
    """A labels file's text: UTF-8, or one line saying where it is not."""
    try:
        return labels_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--labels {labels_file} is not UTF-8 text (byte {exc.start} cannot be read)") from None
    except OSError as exc:
        raise UsageError(f"--labels {labels_file}: cannot read it ({exc.strerror or exc})") from None


def _parse_label(text: str, labels_file: Path, line: int) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):  # "²" and "٣" are digits to str.isdigit, not class indices
        raise UsageError(f"--labels {labels_file} line {line}: {text!r} is not a class index")
    return int(text)


def _images_below(folder: Path, visited: set[str]) -> list[Path]:
    """Image files at any depth under folder, sorted; hidden files and folders (.ipynb_checkpoints, .git) are
    skipped at every depth, as torchvision's ImageFolder does. Linked folders are followed once: a folder already
    walked (a loop, a link to the root or to another class) is skipped, and each file counts once. A folder that
    cannot be read is an error, not a silently smaller class."""

    def unreadable(error: OSError) -> None:
        raise UsageError(f"--data: cannot read {error.filename} ({error.strerror or error})")

    found, files_seen = [], set()
    if not os.access(folder, os.R_OK | os.X_OK):
        unreadable(PermissionError(13, "permission denied", str(folder)))
    for here, folders, files in os.walk(folder, followlinks=True, onerror=unreadable):
        kept = []
        for name in folders:
            real = os.path.realpath(Path(here) / name)
            if not name.startswith(".") and real not in visited:
                visited.add(real)
                kept.append(name)
        folders[:] = kept
        for path in (Path(here) / f for f in files):
            key = os.path.realpath(path)
            if _is_image(path) and key not in files_seen:
                files_seen.add(key)
                found.append(path)
    return sorted(found)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


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
    chosen.sort()  # keep folder order so batches look like the full run's
    return ImageList(
        tuple(images.files[i] for i in chosen), tuple(images.labels[i] for i in chosen), images.classes, images.name
    )


def first_readable(images: ImageList) -> Path | None:
    """The first file PIL can decode, or None. Stops at the first success, so a good folder costs one image."""
    for path in images.files:
        try:
            with Image.open(path) as img:
                img.load()
                to_rgb(img)
            return path
        except Exception:  # noqa: BLE001 - as ImageFiles: whatever a decoder raises, the file is unreadable
            continue
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image. 16-bit and 32-bit integer greyscale (mode I;16 / I, from 16-bit PNG and TIFF) is scaled
    from 0..65535 to 0..255: PIL's convert("RGB") clips it instead, turning almost every pixel white. Float
    images (mode F) have no defined range and are refused (ValueError: counted as unreadable)."""
    if img.mode == "F":
        raise ValueError("floating-point image: no defined pixel range")
    if img.mode == "I" or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.int64)  # (H, W)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"{img.mode} image with values outside 0..65535")
        img = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))  # (H, W) -> mode L
    return img.convert("RGB")


class ImageFiles(Dataset):
    """(uint8 image (3, H, W), label, readable) per file; unreadable files give zeros and readable=False."""

    def __init__(self, images: ImageList, data_config: dict, transform: Callable | None = None):
        self.images = images
        self.transform = transform or eval_transform(data_config)
        self.shape = tuple(data_config["input_size"])

    def __len__(self) -> int:
        return len(self.images.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int, bool]:
        label = self.images.labels[index]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's truncated-file/EXIF warnings are not ours to print
                with Image.open(self.images.files[index]) as img:
                    pixels = self.transform(to_rgb(img))
        except Exception:  # noqa: BLE001 - any file a decoder chokes on (a malformed TIFF raises TypeError) is unreadable
            return torch.zeros(self.shape, dtype=torch.uint8), label, False
        return torch.as_tensor(np.ascontiguousarray(pixels)), label, True


def eval_transform(data_config: dict) -> Callable:
    """timm's eval transform from a data config, PIL image -> uint8 (3, H, W) array: use_prefetcher=True leaves
    out ToTensor/Normalize, since normalising happens on the device. Families with their own preprocessing
    (torchvision weights, transformers image processors) supply a transform of the same contract instead."""
    return create_transform(**_transform_args(data_config), is_training=False, use_prefetcher=True)


def _transform_args(cfg: dict) -> dict:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return {k: cfg[k] for k in keys if k in cfg}


def make_loader(
    images: ImageList,
    data_config: dict,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    transform: Callable | None = None,
) -> DataLoader:
    """Batches of uint8 images; `transform` (PIL -> uint8 (3, H, W)) defaults to timm's from data_config."""
    return DataLoader(
        ImageFiles(images, data_config, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


class DeviceNormalize:
    """uint8 (B, 3, H, W) on the host -> normalised float (B, 3, H, W) on the device, with the model's mean/std."""

    def __init__(self, data_config: dict, device: torch.device):
        self.device = device
        self.mean = torch.tensor(data_config["mean"], device=device).mul(255).view(1, 3, 1, 1)
        self.std = torch.tensor(data_config["std"], device=device).mul(255).view(1, 3, 1, 1)

    def __call__(self, batch: Tensor) -> Tensor:
        x = batch.to(self.device, non_blocking=True).float()
        return x.sub_(self.mean).div_(self.std)
