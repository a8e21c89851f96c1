"""Output files: one writer per --out (a lock), atomic writes, devices never replaced, a full disk that keeps the
rows, orphan temp files.

Real files and real processes throughout; a full disk is simulated by making `os.replace` fail with ENOSPC (the
one thing a test cannot cause for real)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.helpers import (
    assert_one_line_error,
    invoke,
    python_env,
    read_rows,
    run_python,
)
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError
from tomebench.report import plots
from tomebench.results.csv import atomic_file
from tomebench.results.files import check_writable, lock_path
from tomebench.results.journal import Journal

TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--data", "synthetic"]
SPEC = RunSpec(model="test_vit", pretrained=False, r=(0, 4), repeats=1, device="cpu", data="synthetic")


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "x.csv")
    assert not (tmp_path / "new").exists()  # checking creates nothing; the first write makes the folder
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path)


def test_figures_are_written_atomically(tmp_path):
    from matplotlib.figure import Figure

    target = tmp_path / "fig.png"
    target.write_bytes(b"the old figure")
    with pytest.raises(KeyboardInterrupt), atomic_file(target, "wb") as handle:
        handle.write(b"half a fig")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"the old figure" and sorted(tmp_path.iterdir()) == [target]
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    paths = plots.save(fig, tmp_path / "fig")
    assert target.read_bytes().startswith(b"\x89PNG") and paths[1].read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]


# ---------------------------------------------------------------- one writer per --out


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "s.csv"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tomebench.results.files import OutputLock; "
            f"lock = OutputLock({str(out)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = invoke("sweep", *TINY, "--r", "0", "--out", out)
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(result, 2, f"pid {holder.pid} on", "being written by another tomebench run")
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


# ---------------------------------------------------------------- devices are never replaced


def test_an_out_that_is_a_device_is_never_replaced(tmp_path):
    device = tmp_path / "null.csv"  # a copy of /dev/null: the real one must not be risked in a test
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    result = invoke("sweep", *TINY, "--r", "0", "--out", device)
    assert_one_line_error(result, 2, "exists and is a character device, not a regular file")
    assert stat.S_ISCHR(device.stat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["null.csv"]


# ---------------------------------------------------------------- a full disk keeps the rows


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
    assert_one_line_error(result, 1, after_output=True)
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
    line = assert_one_line_error(result, 1, after_output=True)
    assert "could not write the plot" in line and "No space left on device" in line
    assert f"the rows are saved in {out}" in " ".join(result.output.split())
    assert len(read_rows(out)) == 2
    redraw = invoke("plot", out)
    assert (
        assert_one_line_error(redraw, 1, after_output=True) == "error: could not write a plot (No space left on device)"
    )


# ---------------------------------------------------------------- orphan temp files


def test_a_run_removes_its_own_orphan_temp_files_and_no_one_elses(tmp_path):
    out = tmp_path / "s.csv"
    orphans = [tmp_path / ".s.csv.k2x9_q1z", tmp_path / ".s.times.json.a1b2c3d4"]
    others = [tmp_path / ".other.csv.k2x9_q1z", tmp_path / ".s.csv.notmkstemp", tmp_path / "s.csv.k2x9_q1z"]
    for path in orphans + others:
        path.write_text("half a row")
    run_sweep(replace(SPEC, r=(0,)), sink=Journal(out))
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in others)
