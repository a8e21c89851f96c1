"""A reducer's keyword options, read from its function's signature: the one source for `--opt` checks, for
`tomebench reducers` and for the rows' `reducer_options`, so a new option is listed and validated without being
written down anywhere else.

    def kmeans(tokens, r, iters: Annotated[int, Range(0, 100)] = 5) -> Plan: ...

A `Literal` annotation gives the choices; `Range` bounds a number (each number of a `tuple[int, ...]`, a list of
blocks); `Applies(partition="random")` says the option changes nothing unless the other options have those values
(such an option is left out of a row's identity).
Options are checked once, when a configuration is planned, never inside the forward. Keyword-only parameters
(after `*`) are not options: the reducer's `per_block` declaration sets them for each block.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tomebench.errors import UsageError


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a numeric option."""

    low: float | None = None
    high: float | None = None


class Applies:
    """The option has an effect only when the other options named here have these values."""

    def __init__(self, **when: object) -> None:
        self.when = tuple(sorted(when.items()))


@dataclass(frozen=True)
class Option:
    """One keyword option: its default, its choices (a Literal annotation) or its plain type (int, float, ...),
    its bounds and the settings under which it has an effect."""

    name: str
    default: object
    choices: tuple | None = None
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    applies_when: tuple[tuple[str, object], ...] = ()

    def describe(self) -> str:
        """As `tomebench reducers` shows it: "features=k (k|q|v|x)", "iters=5 (int, 0..100)"."""
        if self.choices:
            allowed = "|".join(map(str, self.choices))
        else:
            allowed = "whole numbers" if self.kind is tuple else self.kind.__name__ if self.kind else ""
            if self.low is not None or self.high is not None:
                low = "" if self.low is None else _num(self.low)
                high = "" if self.high is None else _num(self.high)
                bounds = f"{low}..{high}"
                allowed = f"{allowed}, {bounds}" if allowed else bounds
        when = _condition(self.applies_when)
        default = ",".join(map(str, self.default)) if self.kind is tuple else self.default
        return f"{self.name}={default}" + (f" ({allowed})" if allowed else "") + (f"; only {when}" if when else "")

    def check(self, reducer: str, value: object) -> object:
        """The value, if this option accepts it (an int where a float is asked becomes a float); else UsageError."""
        shown = f"{reducer}.{self.name}={value!r}"
        if self.choices is not None:
            if value not in self.choices:
                raise UsageError(f"{reducer}.{self.name}={value}: choose one of {', '.join(map(str, self.choices))}")
            return value
        if self.kind is tuple:
            return self._whole_numbers(shown, value)
        if self.kind is not None and not _fits(value, self.kind):
            raise UsageError(f"{shown}: expected a value of type {self.kind.__name__}")
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise UsageError(f"{shown}: expected a finite number")
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise UsageError(
                f"{shown}: out of range; {self.name} must be between {_num(self.low)} and {_num(self.high)}"
            )
        return value

    def _whole_numbers(self, shown: str, value: object) -> tuple[int, ...]:
        """A list of whole numbers as a sorted tuple without repeats: (3, 6, 9), [3, 6, 9], "3,6,9" (as the command
        line writes it), a single 3, or "" / () for none."""
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            try:
                value = [int(part) for part in parts]
            except ValueError:
                raise UsageError(f"{shown}: expected whole numbers separated by commas, e.g. 3,6,9") from None
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(_fits(v, int) for v in value):
            raise UsageError(f"{shown}: expected whole numbers, e.g. 3,6,9")
        for v in value:
            if self.low is not None and v < self.low or self.high is not None and v > self.high:
                low, high = ("" if b is None else _num(b) for b in (self.low, self.high))
                raise UsageError(f"{shown}: {v} is out of range; each must be in {low}..{high}")
        return tuple(sorted(set(value)))


def _num(value: float | None) -> str:
    if value is None:
        return "-inf"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _fits(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def options_of(fn: Callable) -> list[Option]:
    """The options of a reducer `fn(tokens, r, **options)`: every parameter after the first two, in order, but the
    keyword-only ones (set per block by the reducer's `per_block`, never by a user)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    found = []
    for parameter in list(inspect.signature(fn).parameters.values())[2:]:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            continue
        hint = hints.get(parameter.name)
        extras: tuple = ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
        literal = typing.get_origin(hint) is typing.Literal
        if typing.get_origin(hint) is tuple:  # tuple[int, ...]: a list of whole numbers (blocks)
            hint = tuple
        bounds = next((e for e in extras if isinstance(e, Range)), Range())
        applies = next((e.when for e in extras if isinstance(e, Applies)), ())
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        found.append(
            Option(
                parameter.name,
                default,
                typing.get_args(hint) if literal else None,
                hint if hint in (int, float, bool, str, tuple) else None,
                bounds.low,
                bounds.high,
                applies,
            )
        )
    return found


def validate(reducer: str, options: tuple[Option, ...], given: Mapping[str, object]) -> dict[str, object]:
    """The given options, each checked against its declaration (unknown keys, choices, types, ranges)."""
    accepted = {option.name: option for option in options}
    checked = {}
    for key, value in given.items():
        if key not in accepted:
            known = ", ".join(accepted) or "none"
            raise UsageError(f"reducer {reducer} has no option {key!r} (its options: {known})")
        checked[key] = accepted[key].check(reducer, value)
    return checked


def canonical(
    options: tuple[Option, ...], given: Mapping[str, object], keep: tuple[str, ...] = ()
) -> tuple[tuple[str, object], ...]:
    """Checked options as sorted (key, value) pairs, leaving out those equal to their default (unless named in
    `keep`) and those that have no effect with the other settings (`Applies`): what a row's identity and
    `reducer_options` hold."""
    accepted = {option.name: option for option in options}
    full = {name: option.default for name, option in accepted.items()} | dict(given)
    kept = []
    for key, value in sorted(given.items()):
        option = accepted[key]
        if (value == option.default and key not in keep) or not all(full.get(k) == v for k, v in option.applies_when):
            continue
        kept.append((key, value))
    return tuple(kept)


def inert(options: tuple[Option, ...], given: Mapping[str, object]) -> list[str]:
    """The given options that change nothing with the other settings, as "tome.seed (only with partition=random)"
    texts, for a note."""
    accepted = {option.name: option for option in options}
    full = {name: option.default for name, option in accepted.items()} | dict(given)
    return [
        f"{key} (only {_condition(accepted[key].applies_when)})"
        for key in sorted(given)
        if accepted[key].applies_when and not all(full.get(k) == v for k, v in accepted[key].applies_when)
    ]


def _condition(applies_when: tuple[tuple[str, object], ...]) -> str:
    """An Applies condition as a reader says it: "with partition=random", or "without prune_kept" where the
    condition is that an option is left empty (DiffRate's target applies only without a schedule of one's own)."""
    return ", ".join(f"without {k}" if v == "" else f"with {k}={v}" for k, v in applies_when)
