"""Image folders: discovery (hidden files skipped at every depth), labels files, --limit subsets.

Every image here is a real JPEG or PNG written with PIL into tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.data.images import class_folder
from tests.helpers import (
    assert_one_line_message,
    write_image,
)
from tomebench import data as datasets
from tomebench.data import ImageList, balanced_subset, discover
from tomebench.errors import UsageError

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


def test_hidden_files_and_folders_are_skipped_at_every_depth(tmp_path):
    root = tmp_path / "data"
    for name in ("a/x.png", "a/deep/y.png", "b/z.png"):
        write_image(root / name, 0, (24, 20))
    for hidden in (
        "a/.ipynb_checkpoints/x-checkpoint.png",
        "a/deep/.git/objects/w.png",
        "b/.hidden.png",
        ".cache/c/q.png",
    ):
        write_image(root / hidden, 1, (24, 20))
    images = datasets.discover(root)
    assert images.classes == ("a", "b")
    assert [p.relative_to(root).as_posix() for p in images.files] == ["a/deep/y.png", "a/x.png", "b/z.png"]


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
    assert_one_line_message(excinfo, str(labels), f"has {n} labels", "holds 3 images", "sorted file-name order")


def test_labels_csv_missing_a_name_is_a_usage_error(tmp_path):
    root = flat_folder(tmp_path / "flat")
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\na.png,1\nc.JPG,2\n")
    with pytest.raises(UsageError) as excinfo:
        discover(root, labels)
    assert_one_line_message(excinfo, "no label for 1 of 3 images", "b.jpeg")


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
    assert_one_line_message(excinfo, "line 2", fragment)


def test_missing_labels_file_is_a_usage_error(tmp_path):
    root = flat_folder(tmp_path / "flat")
    with pytest.raises(UsageError) as excinfo:
        discover(root, tmp_path / "nope.txt")
    assert_one_line_message(excinfo, "nope.txt", "no such file")


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
        assert_one_line_message(excinfo, *fragments)


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
    assert_one_line_message(excinfo, "--limit must be positive", str(limit))
