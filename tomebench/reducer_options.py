"""A reducer's keyword options, read from its function's signature: the one source for `--opt` checks and for
`tomebench reducers`, so a new option is listed and validated without being written down anywhere else."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """One keyword option: its default, its choices (a Literal annotation) or its plain type (int, float, ...)."""

    name: str
    default: object
    choices: tuple | None = None
    kind: type | None = None

    def describe(self) -> str:
        """As `tomebench reducers` shows it: "features=k (k|q|v|x)", "iters=5 (int)"."""
        allowed = "|".join(map(str, self.choices)) if self.choices else (self.kind.__name__ if self.kind else "")
        return f"{self.name}={self.default}" + (f" ({allowed})" if allowed else "")


def options_of(fn: Callable) -> list[Option]:
    """The options of a reducer `fn(tokens, r, **options)`: every parameter after the first two, in order."""
    hints = typing.get_type_hints(fn)
    found = []
    for parameter in list(inspect.signature(fn).parameters.values())[2:]:
        hint = hints.get(parameter.name)
        literal = typing.get_origin(hint) is typing.Literal
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        found.append(Option(parameter.name, default, typing.get_args(hint) if literal else None,
                            hint if hint in (int, float, bool, str) else None))
    return found
