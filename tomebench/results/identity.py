"""What makes two rows the same configuration, and how a configuration is named: the one identity and the one
label that the journal (`--resume`), the regression gate, the figures and the console all use.

Cells are compared as text, canonically ("8.0" and "8", True and "True" alike), so a CSV saved by a spreadsheet
still matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# The configuration itself: what was run. A row's identity within one sweep adds the model, the compile mode and
# the batch size asked for (`identity`); the gate joins files of different runs on the configuration and the
# settings that change its numbers (`GATE_IDENTITY`), but not the device: a CI runner is not the machine the
# baseline was made on, and speedup is a ratio within one file.
CONFIGURATION = ("reducer", "r", "schedule", "prop_attn", "reducer_options")
IDENTITY = ("model", *CONFIGURATION, "compile")
GATE_IDENTITY = ("model", *CONFIGURATION, "dtype", "infer_img_size", "infer_batch_size", "compile")
# Identity columns newer than the first CSVs; a file without them measured the defaults (blank: eager).
LATER_IDENTITY = ("reducer_options", "compile")


def canonical(value: object) -> str:
    """An identity cell as text: 8, 8.0 and "8" (True and "True") are one; empty, None and NaN are ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if type(value).__name__ == "NAType":  # pandas' NA, without importing pandas here
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return re.sub(r"^(-?\d+)\.0+$", r"\1", str(value))


def requested_batch(record: Mapping[str, Any]) -> str:
    """The batch a row was asked for: its requested_batch_size; for CSVs older than that column, the batch its
    note says it backed off from ("out of memory at batch N; measured at batch M"), else infer_batch_size."""
    asked = canonical(record.get("requested_batch_size", ""))
    if asked:
        return asked
    backed_off = re.search(r"out of memory at batch (\d+);", canonical(record.get("note", "")))
    return backed_off[1] if backed_off else canonical(record.get("infer_batch_size", ""))


def identity(record: Mapping[str, Any]) -> tuple[str, ...]:
    """A row's identity within a sweep: the cells that name its configuration, and the batch size asked for (a
    sweep over batch sizes has one row per configuration and size)."""
    return tuple(canonical(record.get(name, "")) for name in IDENTITY) + (requested_batch(record),)


def config_label(record: Mapping[str, Any] | Any, with_r: bool = True) -> str:
    """A configuration as people say it, unique within a sweep: "tome r=8", "tome r=8 (decreasing; features=q;
    no prop_attn)"; "unpatched" for the baseline. `record` is a Row, a dict of cells or a pandas row."""
    get = (
        record.get
        if isinstance(record, Mapping) or hasattr(record, "get")
        else (lambda key, default=None: getattr(record, key, default))
    )
    reducer = canonical(get("reducer", ""))
    if reducer == "none":
        return "unpatched"
    schedule, options = canonical(get("schedule", "")), canonical(get("reducer_options", ""))
    extra = [schedule] if schedule not in ("", "constant", "native") else []
    extra += [options] if options else []
    extra += [] if canonical(get("prop_attn", "")).lower() in ("true", "1") else ["no prop_attn"]
    head = f"{reducer} r={canonical(get('r', ''))}" if with_r else reducer
    return head + (f" ({'; '.join(extra)})" if extra else "")
