"""The demo dataset: scikit-learn's 8x8 handwritten digits, with a fixed split.

`load_digits()` ships with scikit-learn (no download), so the demo works offline.
It holds 1,797 images of 8x8 pixels with values 0..16 and labels 0..9.
The split is fixed (stratified, `random_state=0`): 1,437 train and 360 test images.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
TEST_SIZE = 360
SPLIT_SEED = 0
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Sample:
    """One digit: `image` is an (8, 8) uint8 array in 0..255, `label` is in 0..9."""

    image: np.ndarray
    label: int


def load_split() -> tuple[list[Sample], list[Sample]]:
    """Return `(train, test)`: 1,437 and 360 samples, stratified by label, same every call."""
    digits = load_digits()
    # Rescale 0..16 to 0..255 so the PNGs look like ordinary grayscale images.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(int)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    return _samples(train_x, train_y), _samples(test_x, test_y)


def _samples(images: np.ndarray, labels: np.ndarray) -> list[Sample]:
    return [Sample(image=img, label=int(lab)) for img, lab in zip(images, labels)]


def load_samples(split: str = "test") -> list[Sample]:
    """Return the samples of one split, `"train"` or `"test"`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return load_split()[SPLITS.index(split)]


def to_pil(img8x8: np.ndarray) -> Image.Image:
    """Wrap an (8, 8) uint8 array as an 8x8 PIL image of mode "L"."""
    if img8x8.shape != (8, 8) or img8x8.dtype != np.uint8:
        raise ValueError(f"expected an (8, 8) uint8 array, got {img8x8.shape} {img8x8.dtype}")
    return Image.fromarray(img8x8, mode="L")


def expected_files(split: str = "test") -> dict[str, Sample]:
    """Map each relative path `"<label>/<index>.png"` of the split's folder to its sample.

    `index` is the sample's position in the split, zero-padded so that sorted
    file names follow split order.
    """
    return {f"{s.label}/{i:04d}.png": s for i, s in enumerate(load_samples(split))}


def write_image_folder(root: Path, split: str = "test") -> Path:
    """Write the split as an ImageNet-style folder and return `root`.

    Layout: `root/<label>/<index>.png`, class folders "0".."9" (so sorted class
    names equal label indices), each file an 8x8 grayscale PNG. If `root` already
    holds exactly the expected files, nothing is written. Otherwise the folder is
    built in a sibling temporary directory and renamed into place, so a crash never
    leaves a half-written `root`.
    """
    root = Path(root)
    files = expected_files(split)
    if _holds_exactly(root, files):
        return root
    if root.exists():
        raise FileExistsError(f"{root} exists but does not hold the {split!r} digits split")
    root.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp dir keeps the final rename on one file system, hence atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for label in range(NUM_CLASSES):
            (tmp / str(label)).mkdir()
        for rel, sample in files.items():
            to_pil(sample.image).save(tmp / rel)
        tmp.rename(root)
    except OSError:
        # A concurrent writer may have won the rename race with the same files.
        if not _holds_exactly(root, files):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return root


def _holds_exactly(root: Path, files: dict[str, Sample]) -> bool:
    if not root.is_dir():
        return False
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return present == set(files)
