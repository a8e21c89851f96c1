"""Image folders: ImageNet-style class folders, or a flat folder with a labels file (one label per line, a
`name,label` CSV, the devkit's ILSVRC2012_validation_ground_truth.txt or Kaggle's LOC_val_solution.csv)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from tomebench.data import imagenet
from tomebench.data.images import ImageList
from tomebench.errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


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
    text = _text(labels_file)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    classes = None
    if imagenet.is_devkit_ground_truth(labels_file):
        labels, classes = imagenet.devkit_labels(labels_file, lines, files), imagenet.synsets()
    elif lines and lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        labels, classes = imagenet.kaggle_labels(labels_file, lines, files), imagenet.synsets()
    elif lines and "," in lines[0]:
        labels = _labels_from_csv(labels_file, files)
    else:
        if len(lines) != len(files):
            raise UsageError(
                f"--labels {labels_file} has {len(lines)} labels but {root} holds {len(files)} images "
                "(one label per line, in sorted file-name order)"
            )
        labels = [_parse_label(v, labels_file, i + 1) for i, v in enumerate(lines)]
    return ImageList(tuple(files), tuple(labels), classes, root.name)


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
