"""The CSV a sweep writes as it goes, and what `--resume` finds in it.

Each finished group of configurations is saved at once: the whole file is rewritten to a temp file and
renamed over the old one, so the CSV on disk is always complete (never half a row) and in plan order. The
settings of the sweep and the raw repeat times behind every median sit next to it in `<out>.times.json`.

With resume, rows already in the file (matched on their identity) are kept and their configurations are not
measured again; a row that carries an error is measured again. A file measured with other settings, with two
different rows of one configuration, or with a truncated row is refused.

From `begin` to `end` the journal holds `<out>.lock`, so two runs never write the same file. If saving fails
(a full disk), the rows are written to a rescue CSV and the error says where.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Protocol

from tomebench.errors import TomebenchError, UsageError
from tomebench.results.csv import read_header, read_records, row_cells, write_records, write_text_atomic
from tomebench.results.files import OutputLock, remove_stale_temp_files, rescue, sidecar
from tomebench.results.identity import IDENTITY, canonical, identity, requested_batch
from tomebench.results.row import COLUMNS, Row


class Timing(Protocol):
    """The raw times behind a row's medians (`tomebench.measure.timing.Timing`), as the sidecar keeps them."""

    step_times: tuple[float, ...]
    iters_per_repeat: int
    batch_size: int
    error: str | None


# Settings a CSV row shows itself; the rest are only in the sidecar.
# The tomebench version is a setting too: 0.2 changed what `tome`, `prune` and the named schedules compute, so
# rows of different versions must not mix in one file.
ROW_SETTINGS = {
    "model": "model",
    "dtype": "dtype",
    "device": "device",
    "infer_img_size": "img_size",
    "dataset": "dataset",
    "tomebench": "tomebench",
    "compile": "compile",
}


class Journal:
    """The sweep's `Sink` on disk: out CSV plus sidecar, written after every group."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self.extra: list[str] = []  # a user's own columns in the file resumed: kept, after the contract's
        self.planned: list[Row] = []
        self.settings: dict = {}
        self.records: dict[int, dict[str, str]] = {}  # planned index -> its row's cells
        self.others: list[dict[str, str]] = []  # rows of the old file this sweep does not plan: kept as they are
        self.groups: list[dict] = []  # raw times, one dict per measured group
        self.finished: set[int] = set()  # measured by this sweep or already in the file without error
        self.resumed = 0
        self.lock = OutputLock(self.path)

    def begin(self, settings: dict, planned: list[Row]) -> set[int]:
        self.lock.acquire()
        try:
            # Holding the lock, any temp file of ours is an orphan of a run killed while renaming.
            remove_stale_temp_files([self.path, sidecar(self.path)])
            return self._begin(settings, planned)
        except BaseException:
            self.lock.release()
            raise

    def end(self) -> None:
        """The sweep is over (finished, failed or interrupted): let other runs write the file."""
        self.lock.release()

    def _begin(self, settings: dict, planned: list[Row]) -> set[int]:
        self.settings, self.planned = settings, planned
        if not self.resume:
            refuse_replacing(self.path, self.overwrite)
            return set()
        if not self.path.exists():
            return set()
        try:
            records = read_records(self.path)
            _check_complete_rows(self.path)
            self.extra = [c for c in read_header(self.path) if c not in COLUMNS]
        except Exception as exc:  # noqa: BLE001 - TomebenchError or worse: either way, not a file to resume
            message = str(exc).removeprefix("--resume: ")
            raise UsageError(f"--resume: {message}") from None
        unique = _unique(self.path, records)
        previous = self._previous()
        self._check_settings(settings, records, previous.get("settings"))
        self.groups = list(previous.get("groups", []))
        by_key = {identity(record): record for record in records}
        for i, row in enumerate(planned):
            record = by_key.pop(identity(row_cells(row)), None)
            if record is not None:
                self.records[i] = record
                if not record.get("error"):
                    self.finished.add(i)
        self.others = list(by_key.values())
        self.resumed = len(self.finished)
        if len(unique) < len(records):  # exact repeats: the file is written back once, each configuration once
            self._write(self._records())
        return set(self.finished)

    def _records(self) -> list[dict[str, str]]:
        return [self.records[i] for i in sorted(self.records)] + self.others

    def _write(self, records: list[dict[str, str]]) -> None:
        write_records(records, self.path, self.extra)

    def add(self, rows: list[Row], raw_times: dict[str, Timing]) -> None:
        keys = {identity(row_cells(row)): i for i, row in enumerate(self.planned)}
        added = [keys[identity(row_cells(row))] for row in rows]
        for i, row in zip(added, rows):
            # A user's own cells (a comment column) stay with the configuration when it is measured again.
            kept = {c: self.records[i].get(c, "") for c in self.extra} if i in self.records else {}
            self.records[i] = row_cells(row) | kept
        self.groups.append(
            {
                label: {
                    "step_times_s": list(t.step_times),
                    "iters_per_repeat": t.iters_per_repeat,
                    "batch_size": t.batch_size,
                    "error": t.error,
                }
                for label, t in raw_times.items()
            }
        )
        records = self._records()
        try:
            # The times first: a crash between the two writes leaves times without their rows, never the reverse.
            write_text_atomic(
                sidecar(self.path), json.dumps({"settings": self.settings, "groups": self.groups}, indent=1)
            )
            self._write(records)
        except OSError as exc:
            # A full disk or a vanished mount must not take the measured rows with it.
            saved = rescue(records, [*COLUMNS, *self.extra], self.path)
            where = (
                f"all {len(records)} rows measured so far are in {saved}"
                if saved
                else ("and no copy could be written anywhere either")
            )
            raise TomebenchError(f"could not save {self.path} ({exc.strerror or exc}); {where}") from None
        self.finished.update(added)  # only once they are on disk: an interrupted write must not count them

    def missing(self) -> list[Row]:
        """Planned configurations with no row yet."""
        return [row for i, row in enumerate(self.planned) if i not in self.finished]

    def _previous(self) -> dict:
        try:
            data = json.loads(sidecar(self.path).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _check_settings(self, settings: dict, records: list[dict[str, str]], previous: dict | None) -> None:
        hint = "use another --out, or drop --resume to measure everything again"
        if previous:
            for key, value in settings.items():
                if key in previous and previous[key] != value:
                    raise UsageError(
                        f"--resume: {self.path} was measured with {key} {previous[key]!r}, this run "
                        f"has {value!r}; {hint}"
                    )
        for record in records:
            for column, key in ROW_SETTINGS.items():
                want = "" if settings.get(key) is None else str(settings[key])
                have = canonical(record.get(column, want))
                # Rows without accuracy (errors, throughput only) leave dataset blank: nothing to compare.
                if have != want and not (column == "dataset" and not have):
                    raise UsageError(
                        f"--resume: {self.path} has a row with {column} {have!r}, this run has {want!r}; {hint}"
                    )
            _check_subset(self.path, settings, record, hint)
            sizes = settings["batch_size"] if isinstance(settings["batch_size"], list) else [settings["batch_size"]]
            used = requested_batch(record) or str(sizes[0])
            if used not in [str(size) for size in sizes]:
                asked = ",".join(str(size) for size in sizes)
                raise UsageError(
                    f"--resume: {self.path} was measured at batch {used}, this run asks for {asked}; {hint}"
                )


def _check_subset(path: Path, settings: dict, record: dict[str, str], hint: str) -> None:
    """A row's images (readable and not) must be this run's subset: with the sidecar gone, a CSV measured with
    another --limit would otherwise mix rows over 20 and 30 images."""
    files = settings.get("n_files")
    seen, unreadable = canonical(record.get("n_images", "")), canonical(record.get("n_unreadable", ""))
    if files is None or not seen.isdigit():
        return
    total = int(seen) + (int(unreadable) if unreadable.isdigit() else 0)
    if total != files if unreadable.isdigit() else int(seen) > files:
        raise UsageError(f"--resume: {path} has a row measured on {total} image(s), this run evaluates {files}; {hint}")


def refuse_replacing(path: Path, overwrite: bool) -> None:
    """An existing CSV is never replaced unasked: measured rows (maybe hours of them), or a file that is not even
    tomebench's. The message says how to go on."""
    if overwrite or not path.exists() or not path.is_file():
        return
    try:
        rows = len(read_records(path))
        what = f"holds {rows} row(s) of an earlier run"
    except UsageError:
        what = "is not a tomebench CSV"
    raise UsageError(
        f"{path} exists and {what}; pass --resume to keep its rows and measure only what is missing, "
        "--overwrite to replace it, or give another --out"
    )


def _check_complete_rows(path: Path) -> None:
    """Refuse a row with fewer or more cells than the header (a truncated or hand-edited line)."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        bad = [(reader.line_num, len(row)) for row in reader if row and len(row) != len(header)]
    if bad:
        lines = ", ".join(f"line {line} ({cells} of {len(header)} cells)" for line, cells in bad[:5])
        raise UsageError(
            f"--resume: {path} has {len(bad)} truncated or malformed row(s): {lines}; remove them "
            "(their configurations are then measured again) or drop --resume"
        )


def _unique(path: Path, records: list[dict[str, str]]) -> list[dict[str, str]]:
    """One record per configuration: exact repeats collapse, different rows of one configuration are refused
    (which one a reader took would be chance)."""
    first: dict[tuple[str, ...], int] = {}
    kept = []
    for n, record in enumerate(records):
        key = identity(record)
        if key not in first:
            first[key] = n
            kept.append(record)
        elif records[first[key]] != record:
            label = " ".join(f"{k}={v}" for k, v in zip(IDENTITY, key) if v)
            raise UsageError(
                f"--resume: {path} has two different rows of one configuration ({label}): lines "
                f"{first[key] + 2} and {n + 2}; delete the wrong one or drop --resume"
            )
    return kept
