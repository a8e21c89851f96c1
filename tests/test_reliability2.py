"""Reliability, round two (issue 14): no silent data loss, no traceback, no silently wrong input.

Real files, real processes and tiny models throughout; a full disk is simulated by making `os.replace` fail with
ENOSPC (the one thing a test cannot cause for real), and host memory is really limited with RLIMIT_AS.
"""

from __future__ import annotations

import copy
import csv
import errno
import os
import pickle
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import replace

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from typer.testing import CliRunner

import tomebench
from tomebench import cli
from tomebench import data as datasets
from tomebench.engine.run import run_sweep
from tomebench.engine.setup import Setup
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError
from tomebench.patch import check_reducer_options, patch_info
from tomebench.results.files import lock_path
from tomebench.results.journal import Journal
from tomebench.schedule import (
    distinct_r,
    effective_schedule,
    layer_schedule,
    parse_r_spec,
    saturation_r,
)

runner = CliRunner()
TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--data", "synthetic"]
SPEC = RunSpec(model="test_vit", pretrained=False, r=(0, 4), repeats=1, device="cpu", data="synthetic")


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------- 2. one writer per --out


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "s.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tomebench.results.files import OutputLock; "
         f"lock = OutputLock({str(out)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = invoke("sweep", *TINY, "--r", "0", "--out", out)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    text = " ".join(result.output.split())
    assert f"pid {holder.pid} on" in text and "being written by another tomebench run" in text
    assert not out.exists() and not out.with_suffix(".times.json").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path):
    out = tmp_path / "s.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(out).write_text(f"{int(dead.stdout)} {os.uname().nodename}\n")
    rows = run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    assert len(rows) == 2 and len(read_rows(out)) == 2
    assert not lock_path(out).exists()


def test_the_lock_is_released_when_the_sweep_fails_or_is_interrupted(tmp_path):
    out = tmp_path / "s.csv"

    class Interrupt:
        def phase(self, name, total):
            if name.startswith("timing"):
                assert lock_path(out).exists()  # held while measuring
                raise KeyboardInterrupt

        def advance(self, amount=1):
            pass

    with pytest.raises(KeyboardInterrupt):
        run_sweep(SPEC, Interrupt(), Journal(out))
    assert not lock_path(out).exists()
    out.write_text("name,score\na,1\n")
    with pytest.raises(UsageError, match="not a tomebench CSV"):
        run_sweep(SPEC, sink=Journal(out, resume=True))
    assert not lock_path(out).exists()


def test_a_sigterm_releases_the_lock(tmp_path):
    out = tmp_path / "s.csv"
    code = f"""
        import os, signal
        from tomebench.cli import app
        import tomebench.engine.run as sweep
        real = sweep.run_sweep
        def killing(spec, progress, sink, executor):
            class P:
                def phase(self, name, total):
                    if name.startswith("timing"):
                        os.kill(os.getpid(), signal.SIGTERM)
                def advance(self, amount=1): pass
            return real(spec, P(), sink, executor)
        sweep.run_sweep = killing  # the CLI imports it when it runs, so this is what it calls
        app(["sweep", "--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu",
             "--data", "synthetic", "--r", "0", "--out", {str(out)!r}])
    """
    proc = run_python(code)
    assert proc.returncode == 128 + 15, proc.stderr
    assert "interrupted (SIGTERM)" in proc.stderr and "Traceback" not in proc.stderr
    assert not lock_path(out).exists()


# ---------------------------------------------------------------- 4. devices are never replaced


def test_an_out_that_is_a_device_is_never_replaced(tmp_path):
    device = tmp_path / "null.csv"  # a copy of /dev/null: the real one must not be risked in a test
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    result = invoke("sweep", *TINY, "--r", "0", "--out", device)
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "exists and is a character device, not a regular file" in line
    assert stat.S_ISCHR(device.stat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null.csv"]


# ---------------------------------------------------------------- 5. a full disk keeps the rows


def _full_disk(monkeypatch, suffixes: tuple[str, ...]):
    real = os.replace

    def replace_or_fail(src, dst, *args, **kwargs):
        if str(dst).endswith(suffixes):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace_or_fail)


def test_a_full_disk_while_saving_rows_writes_them_elsewhere_and_says_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "s.csv"
    _full_disk(monkeypatch, (".csv", ".json"))
    result = invoke("sweep", *TINY, "--r", "0,4", "--out", out)
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    text = " ".join(result.output.split())
    assert f"could not save {out} (No space left on device)" in text
    [rescued] = list(tmp_path.glob("tomebench-unsaved-s-*.csv"))
    assert f"all 3 rows measured so far are in {rescued}" in text
    rows = read_rows(rescued)
    assert [(r["reducer"], r["r"]) for r in rows] == [("none", "0"), ("tome", "0"), ("tome", "4")]
    assert all(r["infer_samples_per_sec"] for r in rows)
    assert not out.exists() and not list(out.parent.glob(".s.*"))  # no half-written file, no temp file
    assert not (out.parent / "s.csv.lock").exists()


def test_a_full_disk_while_plotting_keeps_the_csv_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    _full_disk(monkeypatch, (".png", ".svg"))
    result = invoke("sweep", *TINY, "--r", "0", "--out", out)
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "could not write the plot" in line and "No space left on device" in line
    assert f"the rows are saved in {out}" in " ".join(result.output.split())
    assert len(read_rows(out)) == 2
    redraw = invoke("plot", out)
    assert redraw.exit_code == 1 and error_lines(redraw) == ["error: could not write a plot (No space left on device)"]


# ---------------------------------------------------------------- 6. orphan temp files


def test_a_run_removes_its_own_orphan_temp_files_and_no_one_elses(tmp_path):
    out = tmp_path / "s.csv"
    orphans = [tmp_path / ".s.csv.k2x9_q1z", tmp_path / ".s.times.json.a1b2c3d4"]
    others = [tmp_path / ".other.csv.k2x9_q1z", tmp_path / ".s.csv.notmkstemp", tmp_path / "s.csv.k2x9_q1z"]
    for path in orphans + others:
        path.write_text("half a row")
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in others)


# ---------------------------------------------------------------- 7, 12, 13. images


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels (8-bit grey) and holds none: PIL refuses it as a bomb on open."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _image(path, seed: int, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_a_decompression_bomb_counts_as_an_unreadable_image(tmp_path):
    root = tmp_path / "data"
    _png_header_only(root / "a" / "0-bomb.png", 40000, 40000)  # first in file order: the readability probe too
    for i, name in enumerate(("a/1.png", "a/2.png", "b/1.png", "b/2.png")):
        _image(root / name, i)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(root / "a" / "0-bomb.png")
    spec = replace(SPEC, r=(4,), data=str(root), model_kwargs={"num_classes": 2}, workers=0)
    rows = run_sweep(spec)
    assert all(row.error is None and row.n_images == 4 for row in rows)
    assert all("1 unreadable image(s) skipped" in row.note for row in rows)


def test_hidden_files_and_folders_are_skipped_at_every_depth(tmp_path):
    root = tmp_path / "data"
    for name in ("a/x.png", "a/deep/y.png", "b/z.png"):
        _image(root / name, 0)
    for hidden in ("a/.ipynb_checkpoints/x-checkpoint.png", "a/deep/.git/objects/w.png", "b/.hidden.png",
                   ".cache/c/q.png"):
        _image(root / hidden, 1)
    images = datasets.discover(root)
    assert images.classes == ("a", "b")
    assert [p.relative_to(root).as_posix() for p in images.files] == ["a/deep/y.png", "a/x.png", "b/z.png"]


def test_16_bit_png_decodes_like_its_8_bit_twin_and_float_images_are_unreadable(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint16)
    Image.fromarray((values * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "plain.png")
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "float.tiff")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really 16-bit on disk
    files = tuple(tmp_path / n for n in ("deep.png", "plain.png", "float.tiff"))
    images = datasets.ImageList(files, (0, 0, 0), None, "t")
    config = dict(input_size=(3, 40, 40), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    dataset = datasets.ImageFiles(images, config)
    (deep, _, ok_deep), (plain, _, ok_plain), (_, _, ok_float) = dataset[0], dataset[1], dataset[2]
    assert ok_deep and ok_plain and not ok_float
    assert torch.equal(deep, plain)
    assert deep.float().mean() < 200  # PIL's own convert("RGB") makes it almost all 255


# ---------------------------------------------------------------- 8. r ranges


def test_a_huge_r_range_is_capped_at_the_model_and_coinciding_r_are_measured_once():
    start = time.perf_counter()
    r = parse_r_spec("0..10000000000000")
    assert isinstance(r, range)
    setup = Setup.build(replace(SPEC, r=r))
    assert time.perf_counter() - start < 30
    # test_vit: 100 patches + cls, so a block merges at most 50 tokens; r 0..50 all differ.
    assert [c.r for c in setup.configs] == [0, *range(51)]
    [note] = setup.notes
    assert note.startswith("10000000000001 r values asked, 51 distinct on test_vit") and "r=50 on" in note
    decreasing = Setup.build(replace(SPEC, r=parse_r_spec("0..100000"), schedule="decreasing"))
    assert len(decreasing.configs) < 200 and decreasing.notes


def test_distinct_r_agrees_with_measuring_every_r():
    for depth, tokens, prefix in ((6, 101, 1), (12, 197, 1), (4, 17, 2), (1, 10, 0)):
        for schedule in ("constant", "decreasing", "increasing", "inflection:0.5", "inflection:-0.25"):
            cap = saturation_r(schedule, depth, tokens, prefix)
            effective = lambda r: effective_schedule(layer_schedule(r, depth, schedule), tokens, prefix)[0]  # noqa
            assert all(effective(cap + k) == effective(cap) for k in (1, 2, 7, 100, 10**9))
            brute = list(dict.fromkeys(effective(r) for r in range(3 * cap + 3)))
            kept, _ = distinct_r(range(0, 10**12), schedule, depth, tokens, prefix)
            assert [effective(r) for r in kept] == brute


def test_the_cli_says_in_one_note_what_it_left_out(tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *TINY, "--r", "60..10000000000000", "--out", out)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "1 distinct on test_vit" in notes[0], result.output
    assert [(r["reducer"], r["r"]) for r in read_rows(out)] == [("none", "0"), ("tome", "60")]


# ---------------------------------------------------------------- 9. batch size


def test_a_synthetic_batch_the_host_cannot_hold_backs_off(tmp_path):
    code = """
        import resource
        from tomebench.engine.setup import Setup
        from tomebench.engine.spec import RunSpec
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        limit = size + (1 << 30)  # room for 1 GiB more: the 12 GiB batch asked for cannot be had, 1/16 of it can
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        setup = Setup.build(RunSpec(model="demo", batch_sizes=1 << 20, device="cpu", data="synthetic"))
        print(len(setup.batch), setup.base.infer_batch_size)
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    fitted, requested = map(int, proc.stdout.split())
    assert requested == 1 << 20 and 1 <= fitted < 1 << 20


def test_a_configuration_checked_on_a_smaller_synthetic_batch_notes_the_batch_asked_for():
    from tomebench.engine.probe import probe as _check

    model = timm.create_model("test_vit", pretrained=False).eval()
    batch = torch.randn(4, 3, 160, 160)
    check = _check(model, lambda: None, batch, lambda: torch.autocast("cpu", enabled=False), torch.device("cpu"), 8)
    assert (check.batch_size, check.backoff_note) == (4, "out of memory at batch 8; measured at batch 4")


# ---------------------------------------------------------------- 20. resume against a damaged CSV


@pytest.fixture
def measured(tmp_path):
    out = tmp_path / "s.csv"
    run_sweep(SPEC, sink=Journal(out))
    return out


def _resume(out):
    return invoke("sweep", *TINY, "--r", "0,4", "--out", out, "--resume")


def test_resume_refuses_two_different_rows_of_one_configuration(measured):
    rows = read_rows(measured)
    bogus = dict(rows[2], speedup="99")
    with open(measured, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerow(bogus)
    before = measured.read_bytes()
    result = _resume(measured)
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    text = " ".join(result.output.split())
    assert "two different rows of one configuration" in text and "r=4" in text and "lines 4 and 5" in text
    assert measured.read_bytes() == before


def test_resume_refuses_a_truncated_row(measured):
    text = measured.read_text()
    measured.write_text(text[: text.rindex(",", 0, len(text) - 40)] + "\n")  # the last row loses its tail
    before = measured.read_bytes()
    result = _resume(measured)
    assert result.exit_code == 2, result.output
    [line] = error_lines(result)
    assert "truncated or malformed row(s): line 4" in " ".join(result.output.split())
    assert measured.read_bytes() == before


def test_resume_collapses_a_row_repeated_exactly(measured):
    lines = measured.read_text().splitlines(keepends=True)
    measured.write_text("".join(lines + [lines[-1]]))
    result = _resume(measured)
    assert result.exit_code == 0, result.output
    assert "all 3 configurations are already in" in " ".join(result.output.split())


# ---------------------------------------------------------------- 21-23. the Python API


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).eval()


def test_a_patched_model_pickles_and_copies(vit):
    x = torch.randn(2, 3, 160, 160)
    plain = vit(x)
    tomebench.patch(vit, "kmeans", r=4, iters=2)
    patched = vit(x)
    for clone in (pickle.loads(pickle.dumps(vit)), copy.deepcopy(vit)):
        assert patch_info(clone).r == patch_info(vit).r and patch_info(clone).options == {"iters": 2}
        assert torch.equal(clone(x), patched)
        tomebench.unpatch(clone)
        assert type(clone) is timm.models.vision_transformer.VisionTransformer and not hasattr(clone, "_tome")
        assert torch.equal(clone(x), plain)


def test_a_patched_model_saved_with_torch_save_loads_in_a_fresh_process(vit, tmp_path):
    x = torch.randn(2, 3, 160, 160)
    plain = vit(x)
    tomebench.patch(vit, r=8, schedule="decreasing")
    torch.save({"model": vit, "x": x}, tmp_path / "m.pt")
    code = f"""
        import torch, tomebench
        saved = torch.load({str(tmp_path / "m.pt")!r}, weights_only=False)
        model, x = saved["model"], saved["x"]
        patched = model(x)
        from tomebench.patch import patch_info
        info = patch_info(model)
        tomebench.unpatch(model)
        torch.save({{"patched": patched, "plain": model(x), "r": info.r, "cls": type(model).__name__,
                    "state": model.state_dict()}}, {str(tmp_path / "out.pt")!r})
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "out.pt")
    assert back["r"] == patch_info(vit).r and back["cls"] == "VisionTransformer"
    assert torch.equal(back["patched"], vit(x)) and torch.equal(back["plain"], plain)
    tomebench.unpatch(vit)
    assert all(torch.equal(back["state"][k], v) for k, v in vit.state_dict().items())


@pytest.mark.parametrize("r", [np.int64(4), torch.tensor(4), np.array(4), 4])
def test_patch_takes_any_whole_number(vit, r):
    assert patch_info(tomebench.patch(vit, r=r)).r == (4,) * len(vit.blocks)


@pytest.mark.parametrize("r", ["8", 4.5, True, torch.tensor(4.0), [4, "4"], None])
def test_patch_refuses_r_that_is_not_a_whole_number(vit, r):
    with pytest.raises(UsageError, match="r must"):
        tomebench.patch(vit, r=r)
    assert patch_info(vit) is None  # refused before anything was changed


@pytest.mark.parametrize(("options", "cli_opt"), [({"bogus": 1}, "tome.bogus=1"),
                                                  ({"features": "zz"}, "tome.features=zz"),
                                                  ({"iters": "x"}, None)])
def test_patch_checks_reducer_options_as_the_cli_does(vit, tmp_path, options, cli_opt):
    reducer = "kmeans" if "iters" in options else "tome"
    with pytest.raises(UsageError) as refused:
        tomebench.patch(vit, reducer, r=4, **options)
    assert patch_info(vit) is None
    with pytest.raises(UsageError) as checked:
        check_reducer_options({reducer: options})
    assert str(refused.value) == str(checked.value)
    if cli_opt:
        result = invoke("sweep", *TINY, "--opt", cli_opt, "--out", tmp_path / "s.csv")
        assert result.exit_code == 2 and error_lines(result) == [f"error: {refused.value}"], result.output
