"""The bad-input table: every mistake a user makes gets one line saying what is wrong and what to do, a non-zero
exit (2 for usage errors), no traceback, and no output file, partial or otherwise."""

from __future__ import annotations

import os
import shutil

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.helpers import (
    GOLDEN,
    assert_one_line_error,
    invoke,
    write_image,
)

TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu"]
SWEEP = ["--model", "test_vit", "--no-pretrained", "--repeats", "2", "--batch-size", "2"]
COMPARE = ["--no-pretrained", "--repeats", "2", "--batch-size", "2"]


GOLDEN_HEADER = "model,reducer,r,schedule\n"


@pytest.fixture
def place(tmp_path):
    """A working folder holding the inputs each case needs."""
    (tmp_path / "empty").mkdir()
    for i, name in enumerate(("a/1.jpg", "b/2.png")):
        target = tmp_path / "corrupt" / name
        target.parent.mkdir(parents=True)
        target.write_bytes(b"not an image" * i)
    for i in range(3):
        write_image(tmp_path / "flat" / f"img{i}.png", i, (24, 20))
    (tmp_path / "labels.txt").write_text("0\n1\n")  # three images, two labels
    (tmp_path / "labels_bad.csv").write_text("name,label\nimg0.png,1\nimg1.png,cat\nimg2.png,0\n")
    for i, cls in enumerate(("a", "b", "c")):
        write_image(tmp_path / "three" / cls / "x.png", i, (24, 20))
    (tmp_path / "foreign.csv").write_text("name,score\na,1\n")
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (tmp_path / "afile").write_text("")
    (tmp_path / "unknown.toml").write_text('model = "demo"\nbatchsize = 8\n')
    (tmp_path / "wrongtype.toml").write_text('repeats = "many"\n')
    (tmp_path / "base.csv").write_text(GOLDEN_HEADER + "test_vit,tome,0,constant\n")
    os.mkfifo(tmp_path / "pipe.csv")
    # Issue 25's cases: each answered by a traceback or a silent acceptance before.
    (tmp_path / "labels_sup.txt").write_text("0\n1\n\u00b2\n")
    (tmp_path / "labels_latin.txt").write_bytes(b"0\n1\n\xff\n")
    (tmp_path / "nomodel.toml").write_text('r = "13"\n[paper]\ntop1_before = 80.0\ntop1_after = 79.0\nspeedup = 1.5\n')
    (tmp_path / "hfbad").mkdir()
    (tmp_path / "hfbad" / "config.json").write_text(
        '{"model_type": "vit", "image_size": "abc", "architectures": ["ViTForImageClassification"]}'
    )
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))
    shutil.copy(GOLDEN / "sweep.csv", tmp_path / "golden.csv")
    rows = (GOLDEN / "sweep.csv").read_text().splitlines()
    (tmp_path / "twice.csv").write_text("\n".join([*rows, rows[1].replace(",1,", ",0.5,", 1)]) + "\n")
    weights = timm.create_model("test_vit", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "other.safetensors"))
    os.mkfifo(tmp_path / "fifo.png")
    shutil.copy(GOLDEN / "sweep.csv", tmp_path / "run.v2.csv")
    return tmp_path


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none: what a decompression bomb looks like to a reader."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


CASES = {
    "unknown model": (["sweep", "--model", "vit_bb"], 2, ["unknown model 'vit_bb'", "did you mean vit_b"]),
    "unknown reducer": (["sweep", *TINY, "--reducer", "tomee"], 2, ["unknown reducer 'tomee'", "did you mean tome"]),
    "reversed r range": (["sweep", *TINY, "--r", "24..0"], 2, ["bad r range '24..0'", "0..24"]),
    "r range of letters": (["sweep", *TINY, "--r", "a..b"], 2, ["bad r 'a..b'", "a range (0..24 or 0..24:4)"]),
    "r range step 0": (["sweep", *TINY, "--r", "0..24:0"], 2, ["step must be >= 1"]),
    "negative r": (["sweep", *TINY, "--r", "-4"], 2, ["bad r '-4'", "must be >= 0"]),
    "missing data path": (["sweep", *TINY, "--data", "{tmp}/nowhere"], 2, ["nowhere: no such folder"]),
    "empty data folder": (["sweep", *TINY, "--data", "{tmp}/empty"], 2, ["is empty", "no class subfolders"]),
    "no readable image": (
        ["sweep", *TINY, "--data", "{tmp}/corrupt", "--model-arg", "num_classes=2"],
        2,
        ["none of the 2 images", "could be read"],
    ),
    "class count mismatch": (
        ["sweep", *TINY, "--data", "{tmp}/three"],
        2,
        ["has 3 class folders", "predicts 1000 classes"],
    ),
    "labels file too short": (
        ["sweep", *TINY, "--data", "{tmp}/flat", "--labels", "{tmp}/labels.txt"],
        2,
        ["labels.txt"],
    ),
    "labels file not numbers": (
        ["sweep", *TINY, "--data", "{tmp}/flat", "--labels", "{tmp}/labels_bad.csv"],
        2,
        ["'cat' is not a class index"],
    ),
    "out is a folder": (["sweep", *TINY, "--out", "{tmp}"], 2, ["is a directory", "give a file name"]),
    "out under a file": (["sweep", *TINY, "--out", "{tmp}/afile/s.csv"], 2, ["afile is a file, not a folder"]),
    "resume into an unreadable out": (
        ["sweep", *TINY, "--out", "{tmp}/binary.csv", "--resume"],
        2,
        ["--resume", "binary.csv"],
    ),
    "check a CSV not ours": (
        ["check", "{tmp}/foreign.csv", "--baseline", "{tmp}/foreign.csv"],
        2,
        ["is not a tomebench CSV"],
    ),
    "plot a CSV not ours": (["plot", "{tmp}/foreign.csv"], 2, ["is not a tomebench CSV"]),
    "plot a file that is not a CSV": (["plot", "{tmp}/binary.csv"], 2, ["binary.csv"]),
    "cuda without CUDA": (["sweep", "--device", "cuda"], 2, ["no CUDA GPU is available", "--device cpu"]),
    "dtype the device lacks": (["sweep", "--device", "cpu", "--dtype", "fp16"], 2, ["fp16 needs a GPU"]),
    "unknown dtype": (["sweep", "--device", "cpu", "--dtype", "fp8"], 2, ["unknown dtype 'fp8'"]),
    "unknown key in TOML": (["sweep", "--config", "{tmp}/unknown.toml"], 2, ["unknown key 'batchsize'"]),
    "wrong type in TOML": (["sweep", "--config", "{tmp}/wrongtype.toml"], 2, ["repeats"]),
    "negative group size": (["sweep", *TINY, "--group-size", "-1"], 2, ["--group-size must be >= 0"]),
    # Issue 14: caught before anything is measured, in one line.
    "out in a folder that cannot be made": (
        ["sweep", *TINY, "--out", "/proc/forbidden/x.csv"],
        2,
        ["cannot write --out /proc/forbidden/x.csv", "cannot create /proc/forbidden"],
    ),
    "out named like its plot": (
        ["sweep", *TINY, "--out", "{tmp}/result.png"],
        2,
        ["the PNG plot", "would overwrite the CSV", "ending in .csv"],
    ),
    "out named like its SVG plot": (["compare", *TINY, "--out", "{tmp}/result.svg"], 2, ["would overwrite the CSV"]),
    "ablate out named like its report": (
        ["ablate", *TINY, "--out", "{tmp}/x.md"],
        2,
        ["the Markdown report", "would overwrite the CSV"],
    ),
    "out is the baseline": (
        ["sweep", *TINY, "--out", "{tmp}/base.csv", "--baseline", "{tmp}/base.csv"],
        2,
        ["would overwrite the --baseline CSV"],
    ),
    "out is a FIFO": (["sweep", *TINY, "--out", "{tmp}/pipe.csv"], 2, ["is a FIFO, not a regular file"]),
    "plot of out is a FIFO": (
        ["sweep", *TINY, "--out", "{tmp}/fifo.csv"],
        2,
        ["fifo.csv: the PNG plot", "fifo.png exists and is a FIFO, not a regular file"],
    ),
    "plot figures landing on each other": (
        ["plot", "{tmp}/run.v2.csv"],
        2,
        ["run.v2.csv: the top1-vs-r PNG", "would overwrite the speed-accuracy PNG"],
    ),
    "absurd batch size": (["sweep", *TINY, "--batch-size", "10000000"], 2, ["--batch-size 10000000 is absurd"]),
    "overflowing batch size": (["sweep", *TINY, "--batch-size", "99999999999999999999"], 2, ["is absurd"]),
    "model argument timm rejects": (
        ["sweep", *TINY, "--model-arg", "global_pool=zz"],
        2,
        ["cannot create test_vit with {'global_pool': 'zz'}", "AssertionError"],
    ),
    "empty reducer list": (["compare", *TINY, "--reducers", ""], 2, ["--reducers is empty"]),
    "NaN target speedup": (
        ["schedules", *TINY, "--samples", "0", "--target-speedup", "nan"],
        2,
        ["--target-speedup a number >= 1", "nan"],
    ),
    "zero epochs": (["train-demo", "--epochs", "0", "--out", "{tmp}/w.safetensors"], 2, ["--epochs must be >= 1"]),
    "negative epochs": (["train-demo", "--epochs", "-1", "--out", "{tmp}/w.safetensors"], 2, ["--epochs must be >= 1"]),
    # Issue 25: tracebacks before, one line now.
    "r range past a C integer": (["sweep", *TINY, "--r", "0..100000000000000000000"], 2, ["bad r range", "at most"]),
    "visualize layers past any depth": (
        ["visualize", "{tmp}/flat/img0.png", "--layers", "1..10000000000000", "-o", "{tmp}/out/v.png"],
        2,
        ["--layers 1..10000000000000 is outside 1..8"],
    ),
    "visualize a decompression bomb": (
        ["visualize", "{tmp}/bomb.png", "-o", "{tmp}/out/v.png"],
        2,
        ["cannot read image", "DecompressionBombError"],
    ),
    "paper config without a model": (
        ["paper-baseline", "{tmp}/nomodel.toml", "--out-dir", "{tmp}/out"],
        2,
        ["a paper config names its model"],
    ),
    "unknown pretrained tag": (
        ["sweep", "--model", "vit_tiny_patch16_224.bogus_tag", "--device", "cpu"],
        2,
        ["vit_tiny_patch16_224 has no pretrained tag 'bogus_tag'", "augreg_in21k"],
    ),
    "hf config with a text size": (
        ["sweep", "--model", "hf:{tmp}/hfbad", "--no-pretrained", "--device", "cpu"],
        2,
        ["image_size = 'abc'", "not a positive whole number"],
    ),
    "labels with a non-ASCII digit": (
        ["sweep", "--model", "demo", "--data", "{tmp}/flat", "--labels", "{tmp}/labels_sup.txt"],
        2,
        ["line 3", "is not a class index"],
    ),
    "labels not UTF-8": (
        ["sweep", "--model", "demo", "--data", "{tmp}/flat", "--labels", "{tmp}/labels_latin.txt"],
        2,
        ["is not UTF-8 text"],
    ),
    "out name too long": (["sweep", *TINY, "--out", "{tmp}/" + "x" * 250 + ".csv"], 2, ["give a shorter name"]),
    "out sidecar name too long": (["sweep", *TINY, "--out", "{tmp}/" + "x" * 236 + ".csv"], 2, ["temp name"]),
    # Issue 25: silently wrong before, refused now.
    "out a CSV that is not tomebench's": (
        ["sweep", *TINY, "--out", "{tmp}/foreign.csv"],
        2,
        ["foreign.csv exists and is not a tomebench CSV", "--overwrite"],
    ),
    "out a measured CSV without resume": (
        ["sweep", *TINY, "--out", "{tmp}/golden.csv"],
        2,
        ["golden.csv exists and holds 6 row(s)", "--resume", "--overwrite"],
    ),
    "resume and overwrite at once": (
        ["sweep", *TINY, "--resume", "--overwrite"],
        2,
        ["--resume keeps the rows in --out and --overwrite replaces them"],
    ),
    "labels with synthetic data": (
        ["sweep", *TINY, "--data", "synthetic", "--labels", "{tmp}/labels.txt"],
        2,
        ["--labels is for a flat image folder"],
    ),
    "limit with synthetic data": (["sweep", *TINY, "--data", "synthetic", "--limit", "5"], 2, ["drop --limit"]),
    "a per-block schedule with r": (
        ["sweep", *TINY, "--r", "0..8", "--schedule", "1,1,1,1,1,1"],
        2,
        ["gives every block its r; it takes no --r"],
    ),
    "num_classes against the published head": (
        ["sweep", "--model", "demo", "--model-arg", "num_classes=5"],
        2,
        ["have a 10-class head", "num_classes=5 would replace it"],
    ),
    "negative num_classes": (["sweep", *TINY, "--model-arg", "num_classes=-1"], 2, ["a whole number >= 0"]),
    "a checkpoint of another architecture": (
        ["sweep", "--model", "demo", "--checkpoint", "{tmp}/other.safetensors"],
        2,
        ["is not a tomebench_demo_vit", "other shapes"],
    ),
    "kmeans iters past reason": (
        ["sweep", *TINY, "--reducer", "kmeans", "--opt", "kmeans.iters=100000000000"],
        2,
        ["kmeans.iters=100000000000: out of range"],
    ),
    "repeats past reason": (["sweep", *TINY, "--repeats", "100000000000000000000"], 2, ["is absurd"]),
    "samples past reason": (["schedules", *TINY, "--samples", "100000000000"], 2, ["--samples 100000000000 is absurd"]),
    "an empty dtype": (["sweep", *TINY, "--dtype", ""], 2, ["unknown dtype ''"]),
    "sweep given several reducers": (
        ["sweep", *TINY, "--reducer", "prune,tome"],
        2,
        ["tomebench compare --reducers prune,tome"],
    ),
    "check report onto the CSV it reads": (
        ["check", "{tmp}/golden.csv", "--baseline", "{tmp}/golden.csv", "--report", "{tmp}/golden.csv"],
        2,
        ["would overwrite the current CSV"],
    ),
    "check a CSV with one configuration twice": (
        ["check", "{tmp}/twice.csv", "--baseline", "{tmp}/golden.csv"],
        2,
        ["different rows of one configuration"],
    ),
    "compile as a bare flag": (["sweep", *TINY, "--compile", "--repeats", "0"], 2, ["--repeats must be >= 1"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, place, monkeypatch):
    args, code, fragments = CASES[case]
    monkeypatch.chdir(place)
    before = {p: p.lstat().st_mtime_ns for p in place.rglob("*")}
    args = [a.replace("{tmp}", str(place)) for a in args]
    default_out = ["--out", str(place / "out" / "s.csv")] if args[0] == "sweep" and "--out" not in args else []
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke(*args, *default_out)
    assert_one_line_error(result, code, *fragments)
    # Nothing written: no new file (not even a temp file), no file changed.
    after = {p: p.lstat().st_mtime_ns for p in place.rglob("*")}
    assert after == before


# ---------------------------------------------------------------- the same mistakes, one at a time


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--model", "vit_bb"], ["unknown model 'vit_bb'", "did you mean vit_b"]),
        (["--reducer", "tomee", "--no-pretrained"], ["unknown reducer 'tomee'", "did you mean tome"]),
        (["--r", "24..0"], ["bad r range", "0..24"]),
        (["--r", "0..8:0"], ["step must be >= 1"]),
        (["--r", "abc"], ["bad r 'abc'"]),
        (["--schedule", "sideways"], ["bad schedule"]),
        (["--dtype", "fp16", "--device", "cpu"], ["fp16 needs a GPU"]),
        (["--dtype", "fp8", "--device", "cpu"], ["unknown dtype"]),
        (["--device", "tpu"], ["unknown device"]),
        (["--batch-size", "0", "--device", "cpu"], ["--batch-size must be >= 1"]),
        (["--checkpoint", "/nonexistent/w.safetensors", "--model", "test_vit"], ["checkpoint file not found"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, fragments, tmp_path):
    result = invoke("sweep", *args, "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu(tmp_path):
    result = invoke("sweep", "--device", "cuda", "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, "no CUDA GPU")


def test_unwritable_out_fails_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("sweep", *SWEEP, "--out", str(blocker / "sub" / "x.csv"))
    assert_one_line_error(result, 2, "is a file, not a folder")
    result = invoke("sweep", *SWEEP, "--out", str(tmp_path))
    assert_one_line_error(result, 2, "is a directory")


def test_offline_pretrained_weights_say_what_to_do(tmp_path):
    result = invoke("sweep", "--model", "test_vit", "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 1, "not reachable", "--checkpoint", "--no-pretrained")


def test_class_count_mismatch_suggests_num_classes(tmp_path):
    weights = tmp_path / "ten.safetensors"
    save_file(timm.create_model("test_vit", num_classes=10).state_dict(), str(weights))
    result = invoke("sweep", "--model", "test_vit", "--checkpoint", str(weights), "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, "--model-arg num_classes=10")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--opt", "kmeans.nope=1"], ["reducer kmeans has no option 'nope'", "iters"]),
        (["--opt", "bad"], ["bad --opt 'bad'", "REDUCER.KEY=VALUE"]),
        (["--opt", "kmean.iters=1"], ["unknown reducer 'kmean'", "did you mean"]),
        (["--reducers", "tome,nosuch"], ["unknown reducer 'nosuch'"]),
    ],
)
def test_bad_compare_input_is_one_line_and_exit_2(args, fragments, tmp_path):
    result = invoke("compare", "--model", "test_vit", *COMPARE, "--r", "4", *args, "--out", str(tmp_path / "x.csv"))
    assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "x.csv").exists()


def test_bad_compile_mode_exits_2(tmp_path):
    result = invoke(
        "sweep", "--model", "test_vit", "--no-pretrained", "--compile-mode", "fastest", "--out", tmp_path / "x.csv"
    )
    assert_one_line_error(result, 2, "unknown --compile mode 'fastest'")
