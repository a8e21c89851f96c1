"""The one way a cell becomes text for people, and back: NaN, NA, None and text in a number column all read as
missing, never as a traceback."""

from __future__ import annotations

import math


def number(value: object) -> float | None:
    """A cell as a float: None when empty (pandas reads an empty cell as NaN; a literal "nan" cell is told apart
    by `read_csv`'s nonfinite_cells) or not a number; inf for an integer too large for a float."""
    if value is None or type(value).__name__ == "NAType":
        return None
    try:
        out = float(value)
    except OverflowError:
        return math.inf
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def fmt(value: object, spec: str = ".1f") -> str:
    """A number for a table cell ("-" when missing); text that is not a number is shown as it is."""
    if isinstance(value, str):
        parsed = number(value)
        return value if parsed is None else format(parsed, spec)
    parsed = number(value)
    if parsed is None:
        return "-"
    if spec.endswith("d"):
        return format(int(parsed), spec)
    return format(parsed, spec)
