"""ImageNet's own layouts: the val folder with the devkit ground truth (ids mapped through meta.mat) or Kaggle's
LOC_val_solution.csv, ReaL labels, and the class subsets of ImageNet-A/R/V2.

The model is test_vit with "colour" weights (tests/data/images.py): it predicts class 0/1/2 for a red/green/blue
image, so every expected accuracy follows from the labels; each source is also checked against the same images
read from a plain labelled folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file
from scipy.io import savemat

from tests.data.images import BLUE, GREEN, RED, colour_image, colour_vit, corrupt
from tests.helpers import assert_one_line_message
from tomebench.data.imagenet import synsets
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError

# (dominant colour or None for a corrupt file, true class in the standard order): top-1 4/7, top-5 6/7
PLAN = [(RED, 0), (GREEN, 1), (BLUE, 2), (RED, 0), (BLUE, 0), (GREEN, 3), (RED, 900), (None, 1)]
TOP1, TOP5, SEEN = 100 * 4 / 7, 100 * 6 / 7, 7


def ilsvrc_id(index: int) -> int:
    """A devkit id for standard class `index`: a fixed permutation of 1..1000, unlike the sorted order."""
    return (index * 7 + 3) % 1000 + 1


@pytest.fixture(scope="module")
def colour_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "colour.safetensors"
    save_file({k: v.contiguous() for k, v in colour_vit().state_dict().items()}, str(path))
    return path


@pytest.fixture
def spec(colour_checkpoint) -> RunSpec:
    return RunSpec(
        model="test_vit", checkpoint=colour_checkpoint, r=(4,), repeats=1, batch_sizes=3, workers=0, device="cpu"
    )


def val_folder(root: Path) -> Path:
    """The val layout: ILSVRC2012_val_0000000N.JPEG, written in reverse so that order comes from the names."""
    for n, (colour, _) in reversed(list(enumerate(PLAN, start=1))):
        path = root / f"ILSVRC2012_val_{n:08d}.JPEG"
        if colour is None:
            corrupt(path, "garbage")
        else:
            colour_image(path, colour, n, (50 + 10 * n, 64))
    return root


def devkit(folder: Path, with_meta: bool = True) -> Path:
    """ILSVRC2012_validation_ground_truth.txt and meta.mat as the devkit has them (data/): meta.mat lists the
    1000 leaf synsets with their ILSVRC2012_ID, plus a non-leaf one that is not a class."""
    folder.mkdir(parents=True)
    gt = folder / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("".join(f"{ilsvrc_id(label)}\n" for _, label in PLAN))
    if with_meta:
        kinds = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
        table = np.zeros((1001,), dtype=kinds)
        for i, wnid in enumerate(synsets()):
            table[i] = (ilsvrc_id(i), wnid, f"class {i}", 0)
        table[1000] = (1001, "n00001740", "entity", 3)
        savemat(folder / "meta.mat", {"synsets": table})
    return gt


def flat_reference(root: Path, spec: RunSpec) -> list[tuple]:
    """The same images in a flat folder with a plain labels file (standard indices): what every source must equal."""
    labels = root.parent / f"{root.name}-labels.txt"
    labels.write_text("".join(f"{label}\n" for _, label in PLAN))
    return accuracy(replace(spec, data=str(root), labels=labels))


def accuracy(spec: RunSpec) -> list[tuple]:
    rows = run_sweep(spec)
    assert all(row.error is None for row in rows), [row.error for row in rows]
    return [(row.top1, row.top5, row.n_images) for row in rows]


def test_devkit_ground_truth_maps_ilsvrc_ids_to_the_standard_order(tmp_path, spec):
    val = val_folder(tmp_path / "ILSVRC2012_img_val")
    gt = devkit(tmp_path / "devkit" / "data")
    got = accuracy(replace(spec, data=str(val), labels=gt))
    assert got == flat_reference(val, spec)
    assert got == [(pytest.approx(TOP1), pytest.approx(TOP5), SEEN)] * 2


def test_kaggle_loc_val_solution_gives_the_same_accuracy(tmp_path, spec):
    val = val_folder(tmp_path / "val")
    csv = tmp_path / "LOC_val_solution.csv"
    rows = [
        f"ILSVRC2012_val_{n:08d},{synsets()[label]} 12 30 200 180 {synsets()[label]} 1 2 3 4\n"
        for n, (_, label) in enumerate(PLAN, 1)
    ]
    csv.write_text("ImageId,PredictionString\n" + "".join(reversed(rows)))
    assert accuracy(replace(spec, data=str(val), labels=csv)) == flat_reference(val, spec)


def test_devkit_without_meta_mat_and_bad_ids_are_one_line_errors(tmp_path, spec):
    val = val_folder(tmp_path / "val")
    gt = devkit(tmp_path / "bare", with_meta=False)
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(val), labels=gt))
    assert_one_line_message(excinfo, "meta.mat", "beside it")
    gt = devkit(tmp_path / "data")
    gt.write_text("1\n2\nfox\n" + "4\n" * 5)
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(val), labels=gt))
    assert_one_line_message(excinfo, "line 3", "not an ILSVRC2012 id")


def test_real_labels_give_real_top1_beside_top1(tmp_path, spec):
    val = val_folder(tmp_path / "val")
    gt = devkit(tmp_path / "data")
    # Predictions are 0, 1, 2, 0, 2, 1, 0 (the corrupt 8th is skipped). ReaL sets: hits on images 1, 3, 5, 7;
    # image 4 has no ReaL label and is left out: real_top1 = 4 / 6.
    real = [[0], [5], [2, 7], [], [2], [3], [0, 1], [1]]
    (tmp_path / "real.json").write_text(str(real))
    rows = run_sweep(replace(spec, data=str(val), labels=gt, real_labels=tmp_path / "real.json"))
    for row in rows:
        assert row.top1 == pytest.approx(TOP1) and row.n_images == SEEN
        assert row.real_top1 == pytest.approx(100 * 4 / 6)
    plain = run_sweep(replace(spec, data=str(val), labels=gt))
    assert all(row.real_top1 is None for row in plain)


def test_real_labels_that_do_not_fit_are_one_line_errors(tmp_path, spec):
    val = val_folder(tmp_path / "val")
    gt = devkit(tmp_path / "data")
    cases = [("{}", "list of lists"), ("[[1]]", "has none in the file"), ("not json", "is not JSON")]
    for text, fragment in cases:
        (tmp_path / "real.json").write_text(text)
        with pytest.raises(UsageError) as excinfo:
            run_sweep(replace(spec, data=str(val), labels=gt, real_labels=tmp_path / "real.json"))
        assert_one_line_message(excinfo, "--real-labels", fragment)


def subset_folder(root: Path, folders: dict[str, int]) -> Path:
    """Class folders of two images each, every image of folder `name` dominated by colour folders[name]."""
    for k, (name, colour) in enumerate(folders.items()):
        for i in range(2):
            colour_image(root / name / f"{i}.png", colour, 10 * k + i)
    return root


def test_imagenet_a_style_synset_folders_restrict_the_logits(tmp_path, spec):
    s = synsets()
    # Restricted to classes 1, 2, 5: green -> 1 and blue -> 2 are right; red's best is 1 or 2, never its own 5.
    root = subset_folder(tmp_path / "imagenet-a", {s[5]: RED, s[1]: GREEN, s[2]: BLUE})
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(root)))
    assert_one_line_message(excinfo, "3 ImageNet class folders", "--class-subset synsets")
    by_synset = accuracy(replace(spec, data=str(root), class_subset="synsets"))
    assert by_synset == [(pytest.approx(100 * 4 / 6), None, 6)] * 2  # no top-5 among 3 classes
    (tmp_path / "valid.txt").write_text("1\n2\n5\n")  # timm's --valid-labels, in sorted folder order
    assert accuracy(replace(spec, data=str(root), class_subset=str(tmp_path / "valid.txt"))) == by_synset
    rows = run_sweep(replace(spec, data=str(root), class_subset="synsets"))
    assert rows[0].dataset == "imagenet-a" and "the model predicts 3 classes" in rows[0].note


def test_imagenet_v2_style_numbered_folders_are_labelled_by_number(tmp_path, spec):
    root = subset_folder(tmp_path / "v2", {"0": RED, "1": GREEN, "2": BLUE, "10": RED})
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(root)))
    assert_one_line_message(excinfo, "named by number", "10 before 2", "--class-subset indices")
    # Among classes 0, 1, 2, 10: folder 10's red images are predicted 0; the rest are right.
    assert accuracy(replace(spec, data=str(root), class_subset="indices")) == [(75.0, None, 8)] * 2


@pytest.mark.parametrize(
    ("subset", "fragment"),
    [("nope.txt", "no such file"), ("indices", "not a class index"), ("synsets", "not an ImageNet-1k synset")],
)
def test_bad_class_subsets_are_one_line_errors(tmp_path, spec, subset, fragment):
    root = subset_folder(tmp_path / "data", {"cat": RED, "dog": GREEN})
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(root), class_subset=subset))
    assert_one_line_message(excinfo, "--class-subset", fragment)
