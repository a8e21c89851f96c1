"""ImageNet's own label files: the devkit's validation ground truth, Kaggle's LOC_val_solution.csv, ImageNet-ReaL's
real.json, and the class subsets of ImageNet-A/R/V2, all mapped to the standard 1000-class order (the sorted
synsets, as every timm and torchvision ImageNet-1k head has it)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tomebench.data.images import ImageList
from tomebench.errors import UsageError

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")  # the number in a val image's name is its line in the devkit file
DEVKIT_NAME = re.compile(r"ILSVRC2012_validation_ground_truth.*\.txt", re.IGNORECASE)
SUBSET_WORDS = ("synsets", "indices")


@lru_cache(maxsize=1)
def synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in the standard class order (class i is the i-th sorted synset)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def val_number(name: str) -> int | None:
    """1 for ILSVRC2012_val_00000001.JPEG (or a key or path holding it), None for any other name."""
    found = VAL_NAME.search(name)
    return int(found.group(1)) if found else None


# ---------------------------------------------------------------- the devkit and Kaggle


def is_devkit_ground_truth(labels_file: Path) -> bool:
    return DEVKIT_NAME.fullmatch(labels_file.name) is not None


def devkit_labels(labels_file: Path, lines: Sequence[str], files: Sequence[Path]) -> list[int]:
    """Labels of val images from ILSVRC2012_validation_ground_truth.txt: line n holds the 1-based ILSVRC2012_ID
    of ILSVRC2012_val_<n>.JPEG. Those ids are not the standard order; the devkit's meta.mat (beside the file, in
    ILSVRC2012_devkit_t12/data/) maps them to synsets, as torchvision's ImageNet reads it."""
    wnid_of = _devkit_ids(labels_file.parent / "meta.mat", labels_file)
    index = {wnid: i for i, wnid in enumerate(synsets())}
    ids = []
    for line, text in enumerate(lines, start=1):
        if not (text.isascii() and text.isdigit()) or int(text) not in wnid_of:
            raise UsageError(f"--labels {labels_file} line {line}: {text!r} is not an ILSVRC2012 id (1..1000)")
        ids.append(int(text))
    labels = []
    for path in files:
        n = val_number(path.name)
        if n is None:
            raise UsageError(
                f"--labels {labels_file} labels ILSVRC2012_val_NNNNNNNN.JPEG files; {path.name} is not one"
            )
        if n > len(ids):
            raise UsageError(f"--labels {labels_file} has {len(ids)} lines, none for {path.name}")
        labels.append(index[wnid_of[ids[n - 1]]])
    return labels


def _devkit_ids(meta: Path, labels_file: Path) -> dict[int, str]:
    """{ILSVRC2012_ID: synset} of the 1000 leaf classes in the devkit's meta.mat."""
    if not meta.is_file():
        raise UsageError(
            f"--labels {labels_file.name} holds devkit class ids, whose order is in the devkit's meta.mat: keep "
            f"meta.mat beside it ({meta} is missing)"
        )
    from scipy.io import loadmat

    try:
        table = loadmat(meta, squeeze_me=True)["synsets"]
        leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in table if int(s["num_children"]) == 0}
    except Exception as exc:  # noqa: BLE001 - whatever scipy raises, the file is not the devkit's meta.mat
        raise UsageError(f"{meta} is not the devkit's meta.mat ({type(exc).__name__}: {exc})") from None
    known = set(synsets())
    if len(leaves) != 1000 or not set(leaves.values()) <= known:
        raise UsageError(f"{meta} does not list the 1000 ImageNet-1k classes (found {len(leaves)} leaf synsets)")
    return leaves


def kaggle_labels(labels_file: Path, lines: Sequence[str], files: Sequence[Path]) -> list[int]:
    """Labels from Kaggle's LOC_val_solution.csv: `ImageId,PredictionString`, the first word of the string is the
    image's synset (the boxes after it are for localisation)."""
    index = {wnid: i for i, wnid in enumerate(synsets())}
    by_name: dict[str, int] = {}
    for line, text in enumerate(lines[1:], start=2):
        name, _, boxes = text.partition(",")
        words = boxes.split()
        if not words or words[0] not in index:
            raise UsageError(f"--labels {labels_file} line {line}: no ImageNet-1k synset in {text[:60]!r}")
        by_name[name.strip()] = index[words[0]]
    missing = [f.name for f in files if f.stem not in by_name]
    if missing:
        raise UsageError(
            f"--labels {labels_file} has no label for {len(missing)} of {len(files)} images (first: {missing[0]})"
        )
    return [by_name[f.stem] for f in files]


# ---------------------------------------------------------------- ReaL


def real_labels(path: Path, names: Sequence[str | None]) -> tuple[tuple[int, ...], ...]:
    """ImageNet-ReaL's label sets (real.json: one list per val image, in ILSVRC2012_val number order) for the
    samples named `names`; an image with no ReaL label gets an empty set and is left out of ReaL top-1, as timm's
    RealLabelsImagenet does."""
    if not path.is_file():
        raise UsageError(f"--real-labels {path}: no such file")
    try:
        table = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise UsageError(f"--real-labels {path} is not JSON ({exc})") from None
    if not isinstance(table, list) or not all(
        isinstance(s, list) and all(isinstance(v, int) and 0 <= v < 1000 for v in s) for s in table
    ):
        raise UsageError(f"--real-labels {path}: expected a list of lists of class indices 0..999 (ReaL's real.json)")
    sets = []
    for name in names:
        n = None if name is None else val_number(name)
        if n is None or n > len(table):
            raise UsageError(
                f"--real-labels {path} labels ImageNet val images by number (ILSVRC2012_val_NNNNNNNN); sample "
                f"{name!r} has none{' in the file' if n is not None else ''}"
            )
        sets.append(tuple(table[n - 1]))
    return tuple(sets)


# ---------------------------------------------------------------- class subsets (ImageNet-A, -R, -V2)


def class_subset(images: ImageList, subset: str, num_classes: int) -> ImageList:
    """Class folders mapped onto the model's classes: `synsets` (folders named n01440764, ...: ImageNet-A/R's 200,
    or all 1000), `indices` (folders named 0 .. 999: ImageNet-V2), or a file of model class indices, one per sorted
    class folder (timm's --valid-labels). Fewer classes than the model's restrict its logits to them."""
    if images.classes is None:
        raise UsageError("--class-subset maps class folders onto the model's classes; this data has none")
    classes = images.classes
    if subset == "synsets":
        index = {wnid: i for i, wnid in enumerate(synsets())}
        unknown = [c for c in classes if c not in index]
        if unknown or num_classes != len(index):
            what = f"folder {unknown[0]!r} is not an ImageNet-1k synset" if unknown else f"the model has {num_classes}"
            raise UsageError(f"--class-subset synsets: {what} (synset folders need a 1000-class ImageNet model)")
        targets = [index[c] for c in classes]
    elif subset == "indices":
        bad = [c for c in classes if not (c.isascii() and c.isdigit()) or int(c) >= num_classes]
        if bad:
            raise UsageError(f"--class-subset indices: folder {bad[0]!r} is not a class index below {num_classes}")
        targets = [int(c) for c in classes]
    else:
        targets = _index_file(Path(subset), len(classes), num_classes)
    if len(set(targets)) != len(targets):
        raise UsageError(f"--class-subset {subset}: two class folders map onto the same model class")
    return _mapped(images, targets, num_classes)


def _index_file(path: Path, folders: int, num_classes: int) -> list[int]:
    if not path.is_file():
        raise UsageError(f"--class-subset {path}: no such file (or use synsets or indices)")
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--class-subset {path}: cannot read it ({exc})") from None
    for line, text in enumerate(lines, start=1):
        if not (text.isascii() and text.isdigit()) or int(text) >= num_classes:
            raise UsageError(f"--class-subset {path} line {line}: {text!r} is not a class index below {num_classes}")
    if len(lines) != folders:
        raise UsageError(f"--class-subset {path} has {len(lines)} class indices for {folders} class folders")
    return [int(v) for v in lines]


def _mapped(images: ImageList, targets: list[int], num_classes: int) -> ImageList:
    """Folder c stands for model class targets[c]. All classes: labels become the model's indices. A subset:
    labels index `valid` (the targets, ascending), the logits the accuracy pass keeps."""
    if sorted(targets) == list(range(num_classes)):
        names = [""] * num_classes
        for c, t in enumerate(targets):
            names[t] = images.classes[c]
        return replace(images, labels=tuple(targets[y] for y in images.labels), classes=tuple(names), valid=None)
    valid = sorted(targets)
    rank = {t: k for k, t in enumerate(valid)}
    names = tuple(images.classes[targets.index(t)] for t in valid)
    labels = tuple(rank[targets[y]] for y in images.labels)
    return replace(images, labels=labels, classes=names, valid=tuple(valid))


def is_subset_word(value: Any) -> bool:
    return value in SUBSET_WORDS
