"""The files a run writes, checked before anything is measured, and who may write them.

A sweep writes its CSV, the sidecar `<out>.times.json`, plots beside them (and, for `ablate`, a Markdown
report), while `<out>.lock` says which process is writing. Everything here fails with one line before the
first measurement: a folder that cannot be created or written, a path that exists and is not a regular file
(a device, FIFO or socket must never be replaced), or two outputs landing on the same file (`--out x.png`
would be overwritten by its own plot). The lock refuses a second run on the same `--out`; a lock left by a
process that is gone (`kill -9`, a lost node) is taken over.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from tomebench.errors import TomebenchError, UsageError

try:
    import fcntl
except ImportError:  # not on Windows: the pid in the lock file is all there is to go on
    fcntl = None

RESCUE_PREFIX = "tomebench-unsaved-"


def sidecar(path: Path) -> Path:
    """`<out>.times.json`: the sweep's settings and raw repeat times."""
    return Path(path).with_suffix(".times.json")


def lock_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".lock")


def sweep_outputs(out: Path, report: bool = False) -> dict[str, Path]:
    """Every file a measuring command writes for `--out out`, by what it is."""
    out = Path(out)
    stem = out.with_suffix("")
    paths = {
        "the CSV": out,
        "its sidecar": sidecar(out),
        "its lock": lock_path(out),
        "the PNG plot": stem.with_suffix(".png"),
        "the SVG plot": stem.with_suffix(".svg"),
    }
    # Drawn when the CSV has several batch sizes, and when it has accuracy.
    for kind in ("speedup-vs-batch", "top1-vs-gmacs"):
        extra = stem.with_name(f"{stem.name}-{kind}")
        paths.update({f"the {kind} PNG": extra.with_suffix(".png"), f"the {kind} SVG": extra.with_suffix(".svg")})
    if report:
        paths["the Markdown report"] = out.with_suffix(".md")
    return paths


def check_outputs(
    outputs: Mapping[str, Path],
    flag: str = "--out",
    inputs: Mapping[str, Path] | None = None,
    hint: str = "give the CSV a name ending in .csv",
    given: Path | None = None,
) -> None:
    """Refuse, before anything is measured, outputs that would land on each other or on an input, exist and are
    not regular files, or cannot be written. `given` is what the user typed after `flag` (default: the first
    output). Creates nothing (what the check makes, it removes)."""
    first = Path(next(iter(outputs.values())))
    given = given or first
    for what, path in outputs.items():
        _check_name_length(Path(path), what, flag, given)
    seen: dict[str, str] = {}
    for what, path in (inputs or {}).items():  # inputs may be one file (a CSV checked against itself)
        seen.setdefault(os.path.normcase(os.path.realpath(path)), what)
    for what, path in outputs.items():
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise UsageError(f"{flag} {given}: {what} ({path}) would overwrite {seen[key]}; {hint}")
        seen[key] = what
    check_writable(first, flag)
    for what, path in outputs.items():
        path = Path(path)
        if path.is_dir() or (path.exists() and not stat.S_ISREG(path.stat().st_mode)):
            kind = "a directory" if path.is_dir() else _kind(path)
            raise UsageError(
                f"{flag} {given}: {what} {path} exists and is {kind}, not a regular file; give another {flag}"
            )
        if path.absolute().parent != first.absolute().parent:
            check_writable(path, flag)


# A file is written as a sibling temp file ".NAME.XXXXXXXX" and renamed: its name must fit with those 10 characters.
TEMP_NAME_EXTRA = 10


def _check_name_length(path: Path, what: str, flag: str, given: Path) -> None:
    """Refuse a file name longer than the file system allows, for the file or for the temp name it is written as
    (the sidecar and the figures have longer names than the CSV)."""
    folder = next((p for p in [path.absolute().parent, *path.absolute().parents] if p.exists()), Path("/"))
    try:
        most = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        most = 255
    length = len(path.name.encode()) + TEMP_NAME_EXTRA
    if length > most:
        raise UsageError(
            f"{flag} {str(given)[:60]}...: {what} would be named {length} bytes long (written through a "
            f"temp name), more than the {most} this file system allows; give a shorter name"
        )


def check_writable(path: Path, flag: str = "--out") -> None:
    """Fail before measuring, not after, when `path` cannot be written: it is a folder, a device, FIFO or socket,
    or its folder cannot be created or written (probed by really creating a temp file there). Leaves nothing."""
    path = Path(path)
    if path.is_dir():
        example = path / ("check.md" if flag == "--report" else "sweep.csv")
        raise UsageError(f"{flag} {path} is a directory; give a file name such as {example}")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(
            f"{flag} {path} exists and is {_kind(path)}, not a regular file; tomebench only replaces "
            "regular files, so give another file name"
        )
    parent = path.absolute().parent
    existing = next(p for p in [parent, *parent.parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write {flag} {path}: {existing} is a file, not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {flag} {path}: permission denied")
    _probe(parent, path, flag)


def _probe(folder: Path, path: Path, flag: str) -> None:
    """Create the missing folders and a temp file in `folder`, then remove all of it: access() says yes to root
    even where the file system says no (/proc, a read-only mount, a full quota)."""
    created: list[Path] = []
    try:
        for missing in reversed([p for p in [folder, *folder.parents] if not p.exists()]):
            missing.mkdir()
            created.append(missing)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = f"cannot create {exc.filename}" if exc.filename else "cannot create a file there"
        raise UsageError(f"cannot write {flag} {path}: {where} ({exc.strerror or exc})") from None
    finally:
        for made in reversed(created):
            try:
                made.rmdir()
            except OSError:
                pass  # another process put something there meanwhile: it is no longer ours to remove


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def remove_stale_temp_files(paths: Iterable[Path]) -> list[Path]:
    """Remove the temp files (`.name.XXXXXXXX`, from `results.atomic_file`) a killed run left beside `paths`.
    Only call this while holding the paths' lock: a running writer's temp file would look the same."""
    removed = []
    for path in paths:
        path = Path(path)
        pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}")
        if not path.parent.is_dir():
            continue
        for candidate in path.parent.iterdir():
            if pattern.fullmatch(candidate.name) and candidate.is_file():
                candidate.unlink(missing_ok=True)
                removed.append(candidate)
    return removed


class OutputLock:
    """`<out>.lock`, holding "pid host": one writer per output file.

    The file is locked with flock, which the kernel releases when the process dies however it dies, so a lock
    file whose flock is free was left by a process that is gone and is taken over. Where flock is missing, a
    lock naming a dead pid on this host is taken over.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        self.path = lock_path(target)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retried only if the file was replaced between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._lock(fd):
                    raise UsageError(
                        f"{self.target} is being written by another tomebench run ({self._holder()}); "
                        f"wait for it to finish or give another --out (lock: {self.path})"
                    )
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                    self._fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise TomebenchError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _lock(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError:
                pass  # a file system without flock (some network mounts): fall back to the pid
        pid, host = _read_holder(fd)
        return pid is None or pid == os.getpid() or host != socket.gethostname() or not _alive(pid)

    def _holder(self) -> str:
        try:
            pid, host = _read_holder(os.open(self.path, os.O_RDONLY), close=True)
        except OSError:
            pid, host = None, None
        return f"pid {pid} on {host}" if pid is not None else "a process that has not written its pid yet"


def _read_holder(fd: int, close: bool = False) -> tuple[int | None, str | None]:
    try:
        text = os.pread(fd, 256, 0).decode(errors="replace").split()
    finally:
        if close:
            os.close(fd)
    if len(text) >= 2 and text[0].isdigit():
        return int(text[0]), text[1]
    return None, None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def rescue(records: list[dict[str, str]], columns: Iterable[str], out: Path) -> Path | None:
    """Write rows that could not be saved to `out` to a new CSV in the working directory, else the system temp
    folder, with plain writes (no rename: the failure may be in renaming). Returns its path, or None if it could
    be written nowhere."""
    columns = list(columns)
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            fd, name = tempfile.mkstemp(prefix=f"{RESCUE_PREFIX}{Path(out).stem}-", suffix=".csv", dir=folder)
            with os.fdopen(fd, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                for record in records:
                    writer.writerow(record.get(c, "") for c in columns)
            return Path(name)
        except OSError:
            continue
    return None
