"""Image folders: discovery, labels files, --limit subsets, decoding (corrupt files included), normalisation.

Every image here is a real JPEG or PNG written with PIL into tmp_path; decoding goes through timm's transform.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from tomebench.data import (
    DeviceNormalize,
    ImageFiles,
    ImageList,
    balanced_subset,
    discover,
    make_loader,
)
from tomebench.errors import TomebenchError, UsageError

# test_vit's data config (as timm resolves it), with ImageNet mean/std so that mean and std differ per channel.
CONFIG = {
    "input_size": (3, 160, 160),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.95,
    "crop_mode": "center",
}


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 40), mode: str = "RGB") -> Path:
    """A random-pixel image of `size` (W, H) saved in the format the suffix names."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)
    return path


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    """ImageNet-style folder: one subfolder per class, alternating JPEG and PNG files."""
    seed = 0
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / cls / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}", seed)
            seed += 1
    return root


def assert_usage_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, TomebenchError)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- discovery


def test_class_folders_give_sorted_labels_and_sorted_files(tmp_path):
    root = class_folder(tmp_path / "val", {"zebra": 2, "ant": 3, "mole": 1})
    write_image(root / "ant" / "nested" / "deep.png", 99)  # images in nested folders belong to the class
    (root / "ant" / "notes.txt").write_text("not an image")
    write_image(root / "ant" / ".hidden.png", 98)
    (root / ".cache").mkdir()  # hidden folders are not classes
    write_image(root / ".cache" / "x.png", 97)
    write_image(root / "mole" / "UPPER.JPG", 96)  # suffixes are case-insensitive

    images = discover(root)

    assert images.classes == ("ant", "mole", "zebra")
    assert images.num_classes == 3
    assert images.name == "val"
    relative = [f.relative_to(root).as_posix() for f in images.files]
    assert relative == [
        "ant/img0.jpg",
        "ant/img1.png",
        "ant/img2.jpg",
        "ant/nested/deep.png",
        "mole/UPPER.JPG",
        "mole/img0.jpg",
        "zebra/img0.jpg",
        "zebra/img1.png",
    ]
    assert images.labels == (0, 0, 0, 0, 1, 1, 2, 2)


def flat_folder(root: Path) -> Path:
    """Three images whose sorted order (a, b, c) differs from the order they are written in."""
    write_image(root / "c.JPG", 0)
    write_image(root / "a.png", 1)
    write_image(root / "b.jpeg", 2)
    (root / "README.txt").write_text("ignored")
    return root


def test_labels_file_one_per_line_in_sorted_file_order(tmp_path):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.txt"
    labels.write_text("7\n0\n\n3\n")  # blank lines are not labels

    images = discover(root, labels)

    assert [f.name for f in images.files] == ["a.png", "b.jpeg", "c.JPG"]
    assert images.labels == (7, 0, 3)
    assert images.classes is None
    assert images.num_classes == 8
    assert images.name == "flat"


@pytest.mark.parametrize("header", ["", "filename,label\n"])
def test_labels_csv_maps_names_whatever_their_order(tmp_path, header):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.csv"
    labels.write_text(header + "c.JPG,5\nb.jpeg, 2\na.png,0\nnot-here.png,9\n")

    images = discover(root, labels)

    assert [f.name for f in images.files] == ["a.png", "b.jpeg", "c.JPG"]
    assert images.labels == (0, 2, 5)
    assert images.num_classes == 6


@pytest.mark.parametrize("lines", ["1\n2\n", "1\n2\n0\n4\n"])
def test_labels_file_of_wrong_length_is_a_usage_error(tmp_path, lines):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.txt"
    labels.write_text(lines)
    with pytest.raises(UsageError) as excinfo:
        discover(root, labels)
    n = len(lines.split())
    assert_usage_error(excinfo, str(labels), f"has {n} labels", "holds 3 images", "sorted file-name order")


def test_labels_csv_missing_a_name_is_a_usage_error(tmp_path):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\na.png,1\nc.JPG,2\n")
    with pytest.raises(UsageError) as excinfo:
        discover(root, labels)
    assert_usage_error(excinfo, "no label for 1 of 3 images", "b.jpeg")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("1\ncat\n2\n", "'cat' is not a class index"), ("a.png,1\nb.jpeg,1,2\nc.JPG,0\n", "expected `name,label`")],
)
def test_malformed_labels_are_usage_errors(tmp_path, text, fragment):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    with pytest.raises(UsageError) as excinfo:
        discover(root, labels)
    assert_usage_error(excinfo, "line 2", fragment)


def test_missing_labels_file_is_a_usage_error(tmp_path):
    root = flat_folder(tmp_path / "flat")
    with pytest.raises(UsageError) as excinfo:
        discover(root, tmp_path / "nope.txt")
    assert_usage_error(excinfo, "nope.txt", "no such file")


def test_bad_data_folders_are_one_line_usage_errors(tmp_path):
    missing = tmp_path / "missing"
    a_file = write_image(tmp_path / "single.png", 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    flat = flat_folder(tmp_path / "flat")
    hollow = tmp_path / "hollow"
    for cls in ("a", "b"):
        (hollow / cls).mkdir(parents=True)
        (hollow / cls / "readme.txt").write_text("no images here")
    cases = [
        (missing, None, ("missing", "no such folder")),
        (a_file, None, ("single.png", "is not a folder")),
        (empty, None, ("empty", "no class subfolders and no images")),
        (flat, None, ("no class subfolders", "--labels")),
        (hollow, None, ("2 class folder(s)", "no images")),
        (empty, flat / "README.txt", ("holds no image files",)),
    ]
    for root, labels, fragments in cases:
        with pytest.raises(UsageError) as excinfo:
            discover(root, labels)
        assert_usage_error(excinfo, *fragments)


# ---------------------------------------------------------------- --limit


def synthetic_list(counts: list[int]) -> ImageList:
    """An ImageList with counts[c] files of class c, classes interleaved in file order (no disk needed)."""
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    order = sorted(range(len(labels)), key=lambda i: (i * 7919) % len(labels))  # a fixed shuffle
    files = tuple(Path(f"f{i:03d}.png") for i in range(len(labels)))
    return ImageList(files, tuple(labels[i] for i in order), tuple(f"c{c}" for c in range(len(counts))), "syn")


@pytest.mark.parametrize("limit", [1, 4, 7, 10, 14])
def test_balanced_subset_is_balanced_ordered_and_deterministic(limit):
    images = synthetic_list([6, 5, 7])

    subset = balanced_subset(images, limit)

    assert len(subset.files) == len(subset.labels) == limit
    counts = Counter(subset.labels)
    shares = [counts.get(c, 0) for c in range(3)]
    assert max(shares) - min(shares) <= 1
    assert sorted(shares, reverse=True) == shares  # the extra images go to the lowest class indices
    # every chosen (file, label) pair is one of the original pairs, and folder order is kept
    pairs = list(zip(images.files, images.labels))
    positions = [pairs.index(p) for p in zip(subset.files, subset.labels)]
    assert positions == sorted(positions)
    # within a class, the first files in folder order are taken
    for c in range(3):
        own = [f for f, lab in pairs if lab == c]
        assert [f for f, lab in zip(subset.files, subset.labels) if lab == c] == own[: shares[c]]
    assert balanced_subset(images, limit) == subset
    assert subset.classes == images.classes and subset.name == images.name


def test_balanced_subset_gives_exhausted_classes_all_they_have():
    images = synthetic_list([10, 2, 10])
    assert Counter(balanced_subset(images, 12).labels) == {0: 5, 1: 2, 2: 5}


@pytest.mark.parametrize("limit", [None, 18, 1000])
def test_balanced_subset_without_effective_limit_returns_everything(limit):
    images = synthetic_list([6, 5, 7])
    assert balanced_subset(images, limit) == images


@pytest.mark.parametrize("limit", [0, -3])
def test_balanced_subset_rejects_non_positive_limits(limit):
    with pytest.raises(UsageError) as excinfo:
        balanced_subset(synthetic_list([2, 2]), limit)
    assert_usage_error(excinfo, "--limit must be positive", str(limit))


# ---------------------------------------------------------------- decoding


def reference_pixels(path: Path) -> torch.Tensor:
    """uint8 (3, 160, 160) by torchvision alone: shortest side to floor(160 / 0.95), centre crop."""
    pipeline = transforms.Compose(
        [transforms.Resize(168, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(160)]
    )
    with Image.open(path) as img:
        return torch.from_numpy(np.array(pipeline(img.convert("RGB")))).permute(2, 0, 1)


def test_image_files_decode_like_torchvision_and_flag_corrupt_files(tmp_path):
    good = [
        write_image(tmp_path / "0.jpg", 0, (200, 120)),
        write_image(tmp_path / "1.png", 1, (90, 170)),
        write_image(tmp_path / "2.png", 2, (60, 60), mode="RGBA"),
        write_image(tmp_path / "3.png", 3, (64, 80), mode="L"),
    ]
    garbage = tmp_path / "4.jpg"
    garbage.write_bytes(b"this is not a JPEG " * 20)
    truncated = tmp_path / "5.png"
    whole = write_image(tmp_path / "whole.png", 5, (120, 120)).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    empty = tmp_path / "6.jpeg"
    empty.write_bytes(b"")
    files = (*good, garbage, truncated, empty)
    dataset = ImageFiles(ImageList(files, (0, 1, 2, 3, 4, 5, 6), None, "mixed"), CONFIG)

    assert len(dataset) == 7
    for i, path in enumerate(good):
        pixels, label, readable = dataset[i]
        assert readable is True and label == i
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 160, 160)
        assert torch.equal(pixels, reference_pixels(path))
    for i in (4, 5, 6):
        pixels, label, readable = dataset[i]
        assert readable is False and label == i
        assert pixels.shape == (3, 160, 160) and pixels.dtype == torch.uint8 and not pixels.any()


def test_make_loader_batches_in_file_order(tmp_path):
    root = class_folder(tmp_path / "data", {"a": 3, "b": 2})
    (root / "b" / "img9.jpg").write_bytes(b"\x00" * 50)  # corrupt
    images = discover(root)
    batches = list(make_loader(images, CONFIG, batch_size=4, workers=0, pin_memory=False))

    assert [len(b[1]) for b in batches] == [4, 2]
    pixels = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    readable = torch.cat([b[2] for b in batches])
    assert pixels.dtype == torch.uint8 and pixels.shape == (6, 3, 160, 160)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert readable.dtype == torch.bool and readable.tolist() == [True] * 5 + [False]
    for i, path in enumerate(images.files[:5]):
        assert torch.equal(pixels[i], reference_pixels(path))


# ---------------------------------------------------------------- normalisation


def test_device_normalize_matches_torchvision(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", i, (160, 160)) for i in range(3)]
    images = [Image.open(p).convert("RGB") for p in paths]
    uint8 = torch.stack([torch.from_numpy(np.array(img)).permute(2, 0, 1) for img in images])  # (B, 3, H, W)
    expected = torch.stack(
        [transforms.Normalize(CONFIG["mean"], CONFIG["std"])(transforms.functional.to_tensor(img)) for img in images]
    )

    normalize = DeviceNormalize(CONFIG, torch.device("cpu"))
    before = uint8.clone()
    out = normalize(uint8)

    assert out.dtype == torch.float32 and out.shape == (3, 3, 160, 160)
    assert out.device == normalize.device
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(uint8, before)  # the host batch is left alone
