"""The data options of issue 24 through the command line: --valid-labels is --class-subset, the dataset lands in
the CSV's dataset and real_top1 columns, and every bad data input is one line and exit 2."""

from __future__ import annotations

import csv

import pytest

from tests.helpers import assert_one_line_error, invoke, write_image

TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--batch-size", "2"]


@pytest.fixture
def place(tmp_path):
    for i, cls in enumerate(("n01440764", "n01443537")):
        write_image(tmp_path / "imagenet-r" / cls / "x.png", i, (24, 20))
    for n in (1, 2):
        write_image(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", n, (24, 20))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n")
    (tmp_path / "valid.txt").write_text("0\n1\n")
    (tmp_path / "real.json").write_text("[[0], [1]]")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "x.tar").write_bytes(b"not a tar" * 100)
    return tmp_path


def test_valid_labels_is_class_subset_and_the_csv_names_the_dataset(place):
    out = place / "out.csv"
    result = invoke(
        "sweep", *TINY, "--r", "0", "--data", place / "imagenet-r", "--valid-labels", place / "valid.txt", "--out", out
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert {row["dataset"] for row in rows} == {"imagenet-r"} and {row["n_images"] for row in rows} == {"2"}
    assert "real_top1" in rows[0] and rows[0]["real_top1"] == ""


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--data", "{p}/val", "--labels", "{p}/data/ILSVRC2012_validation_ground_truth.txt"], ("meta.mat",)),
        (["--data", "{p}/imagenet-r"], ("--class-subset synsets",)),
        (["--data", "{p}/imagenet-r", "--class-subset", "{p}/none.txt"], ("no such file",)),
        (
            ["--data", "{p}/imagenet-r", "--real-labels", "{p}/real.json", "--class-subset", "synsets"],
            ("a --class-subset",),
        ),
        (["--data", "synthetic", "--real-labels", "{p}/real.json"], ("--real-labels", "drop")),
        (["--data", "wds:{p}/shards/x-{{0..3}}.tar"], ("4 of 4 shards missing",)),
        (["--data", "{p}/shards"], ("not a readable uncompressed tar",)),
        (["--data", "hf:"], ("names no dataset",)),
    ],
)
def test_bad_data_inputs_are_one_line_errors(place, args, fragments):
    args = [a.format(p=place) for a in args]
    assert_one_line_error(invoke("sweep", *TINY, "--r", "0", *args, "--out", place / "o.csv"), 2, *fragments)
    assert not (place / "o.csv").exists()
