"""Rows on disk: the CSV a Row list becomes (header from the contract, cells as text) and back, any version;
every file written through a temp file and a rename, so a reader never sees half of one."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tomebench.errors import UsageError, one_line
from tomebench.results.row import COLUMNS, KEY_COLUMNS, NUMERIC_COLUMNS, Row

if TYPE_CHECKING:
    import pandas as pd


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


def write_records(records: Iterable[dict[str, str]], path: Path, extra: Iterable[str] = ()) -> Path:
    """Write CSV cells (column -> text) atomically in the contract's column order, then the `extra` columns (a
    user's own, kept as they were); absent cells are empty."""
    header = [*COLUMNS, *[c for c in extra if c not in COLUMNS]]
    with atomic_file(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for record in records:
            writer.writerow(record.get(name, "") for name in header)
    return Path(path)


def read_header(path: Path) -> list[str]:
    """The column names of a CSV file (for keeping a user's own columns when it is rewritten)."""
    with open(path, newline="") as handle:
        return next(csv.reader(handle), [])


def read_records(path: Path) -> list[dict[str, str]]:
    """The rows of a tomebench CSV as the text of their cells, exactly as written (for appending to it)."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            records = [dict(record) for record in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a readable CSV: {one_line(exc)}") from None
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
    import pandas as pd  # here: the command line reads CSVs only in some commands, and pandas takes a second

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such CSV file: {path}")
    try:
        frame = pd.read_csv(
            path,
            dtype={
                "error": "string",
                "note": "string",
                "git_sha": "string",
                "reducer_options": "string",
                "compile": "string",
            },
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"{path} is not a readable CSV: {one_line(exc)}") from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} is not a tomebench CSV: it lacks the column(s) {', '.join(missing)}")
    absent = [name for name in COLUMNS if name not in frame.columns]
    for name in absent:
        frame[name] = pd.NA
    frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]
    frame.attrs["absent_columns"] = tuple(absent)  # filled in empty above; check refuses to join on those
    frame.attrs["nonfinite_cells"], frame.attrs["text_cells"] = _cells_of(path)
    _numbers(frame)
    return frame


def _to_number(cell: object) -> float:
    """A cell as a float: NaN for text (or empty), inf for an integer too large for a float."""
    try:
        return float(cell)
    except OverflowError:
        return math.inf
    except (TypeError, ValueError):
        return math.nan


def _numbers(frame: pd.DataFrame) -> None:
    """Make every numeric column numeric: text (a hand edit, a spreadsheet's "n/a") becomes NaN here, and
    `_cells_of` records where it was."""
    import pandas as pd

    for column in NUMERIC_COLUMNS:
        # Any column pandas did not read as numbers (object, or pandas 3's "str") holds text somewhere.
        if not pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].map(_to_number).astype(float)


NONFINITE_TEXT = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _cells_of(path: Path) -> tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]:
    """(row position, column) of every cell written as NaN or inf, and of every cell of a numeric column that holds
    text. Read from the raw text: pandas reads a literal "nan" or "n/a" exactly as it reads an empty cell, but an
    empty cell means "not measured", while those mean a measurement went wrong or the file was edited."""
    import pandas as pd

    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    nonfinite, text = [], []
    for column in raw.columns:
        numeric = column in NUMERIC_COLUMNS
        for position, cell in enumerate(raw[column]):
            cell = cell.strip()
            if cell.lower() in NONFINITE_TEXT:
                nonfinite.append((position, column))
            elif numeric and cell and math.isnan(_to_number(cell)):
                text.append((position, column))
    return tuple(nonfinite), tuple(text)
