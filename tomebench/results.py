"""The one row type, the CSV contract of MEASURE.md, and the environment every row carries.

The header is derived from `Row`'s fields, in order; new columns are only ever appended, so a CSV written by
one version of tomebench is readable by the next (`read_csv` fills columns an older file lacks with NaN).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import subprocess
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd

from tomebench.errors import UsageError
from tomebench.outputs import check_writable  # noqa: F401  (its home was here; callers still import it from here)


@dataclass(frozen=True)
class Environment:
    """Where a row was measured: device, library versions and the tomebench commit."""

    device_name: str
    torch: str
    timm: str
    tomebench: str
    git_sha: str
    timestamp: str


@dataclass(frozen=True)
class Row:
    """One measured configuration (model, reducer, r, schedule). Columns as in MEASURE.md; None -> empty cell."""

    model: str
    reducer: str
    r: int
    schedule: str
    prop_attn: bool
    infer_img_size: int
    infer_batch_size: int
    dtype: str
    device: str
    infer_samples_per_sec: float | None = None
    infer_samples_per_sec_p10: float | None = None
    infer_samples_per_sec_p90: float | None = None
    infer_step_time: float | None = None  # median milliseconds per batch
    speedup: float | None = None  # against the unpatched model measured in the same run
    infer_gflops: float | None = None
    tokens_final: int | None = None
    peak_mem_mb: float | None = None  # CUDA only
    top1: float | None = None
    top5: float | None = None
    n_images: int | None = None
    dataset: str | None = None
    param_count: float | None = None  # millions
    error: str | None = None
    note: str | None = None  # clamped r, noisy timing, skipped images: what a reader should know
    reducer_options: str | None = None  # non-default reducer options, "key=value,..." sorted; part of the identity
    device_name: str | None = None
    torch: str | None = None
    timm: str | None = None
    tomebench: str | None = None
    git_sha: str | None = None
    timestamp: str | None = None
    # Appended later (older CSVs lack them; `read_csv` fills them empty). Raw images/s of different timing groups
    # are not comparable, so each row names its own reference and the spread of its paired speedup.
    baseline_samples_per_sec: float | None = None  # the unpatched model's images/s in this row's timing group
    speedup_p10: float | None = None  # p10 and p90 of the per-round paired ratios whose median is `speedup`
    speedup_p90: float | None = None
    # Appended by issue 17 (compiled configurations and latency).
    compile_s: float | None = None  # --compile: seconds this configuration's first call spent compiling
    latency_ms_p50: float | None = None  # --latency: per-image latency at batch 1
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_speedup: float | None = None  # the unpatched model's latency_ms_p50 / this row's, same group
    compile: str | None = None  # the torch.compile mode, empty when eager; part of the identity

    def with_environment(self, env: Environment) -> Row:
        return replace(self, **asdict(env))


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))
# Columns that identify a configuration; a CSV without them is not one of ours.
KEY_COLUMNS: tuple[str, ...] = ("model", "reducer", "r", "schedule")


def capture_environment(device_name: str) -> Environment:
    import timm
    import torch

    from tomebench import __version__

    return Environment(
        device_name=device_name,
        torch=torch.__version__,
        timm=timm.__version__,
        tomebench=__version__,
        git_sha=_git_sha(),
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _git_sha() -> str:
    """The commit of the tomebench checkout (with "-dirty" for uncommitted changes), or "" outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """Open a sibling temp file for writing ("w" text, "wb" bytes); rename it onto path only if the block completes,
    so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any file the user writes
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(rows: Iterable[Row], path: Path) -> Path:
    """Write rows atomically (temp file + rename), so a crash never leaves a half-written CSV."""
    return write_records((row_cells(row) for row in rows), path)


def row_cells(row: Row) -> dict[str, str]:
    """A row as the text of its CSV cells."""
    return {name: _cell(getattr(row, name)) for name in COLUMNS}


def write_records(records: Iterable[dict[str, str]], path: Path) -> Path:
    """Write CSV cells (column -> text) atomically in the contract's column order; absent cells are empty."""
    with atomic_file(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for record in records:
            writer.writerow(record.get(name, "") for name in COLUMNS)
    return Path(path)


def read_records(path: Path) -> list[dict[str, str]]:
    """The rows of a tomebench CSV as the text of their cells, exactly as written (for appending to it)."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            records = [dict(record) for record in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable CSV: {exc}") from None
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        raise UsageError(f"{path} is not a tomebench CSV: it lacks the column(s) {', '.join(missing)}")
    return [{k: ("" if v is None else v) for k, v in record.items() if k is not None} for record in records]


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a tomebench CSV, any version: columns it lacks are added empty, extra columns are kept."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such CSV file: {path}")
    try:
        frame = pd.read_csv(path, dtype={"error": "string", "note": "string", "git_sha": "string", "reducer_options": "string",
                                           "compile": "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} is not a tomebench CSV: it lacks the column(s) {', '.join(missing)}")
    absent = [name for name in COLUMNS if name not in frame.columns]
    for name in absent:
        frame[name] = pd.NA
    frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
    frame.attrs["absent_columns"] = tuple(absent)  # filled in empty above; check refuses to join on those
    frame.attrs["nonfinite_cells"] = _nonfinite_cells(path)
    return frame


NONFINITE_TEXT = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _nonfinite_cells(path: Path) -> tuple[tuple[int, str], ...]:
    """(row position, column) of every cell written as NaN or inf. pandas reads a literal "nan" exactly as it reads
    an empty cell, but an empty cell means "not measured" and a NaN one means a measurement went wrong."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return tuple((position, column) for column in raw.columns
                 for position, text in enumerate(raw[column]) if text.strip().lower() in NONFINITE_TEXT)
