"""Text from the command line or a `--config` file as typed values: r and batch-size ranges, reducer options,
model arguments, reducer lists. Everything here is checked without importing torch, so a typo is refused in a
fraction of a second."""

from __future__ import annotations

import re

from tomebench.errors import UsageError
from tomebench.schedule import parse_r_spec

MAX_BATCH_AXIS = 64  # as tomebench.engine.spec: each batch size times every configuration again
MAX_BATCH_SIZE = 1 << 20  # as tomebench.engine.spec


def batch_sizes(text: str) -> tuple[int, ...]:
    """--batch-size as the CLI takes it, in --r's syntax: "32", "1,8,32,128", "1..64:8" (a few sizes only)."""
    for number in re.findall(r"\d+", str(text)):
        if len(number) > 7 and int(number) > MAX_BATCH_SIZE:
            raise UsageError(
                f"--batch-size {int(number)} is absurd: at most {MAX_BATCH_SIZE} images per batch "
                "(a batch that does not fit is halved until it does)"
            )
    try:
        values = parse_r_spec(str(text))
    except UsageError as exc:
        raise UsageError(
            str(exc)
            .replace("bad r range", "bad --batch-size")
            .replace("bad r", "bad --batch-size")
            .replace("r counts tokens removed per layer", "a batch size")
            .replace("r is tokens per block", "a batch size is images")
        ) from None
    if len(values) > MAX_BATCH_AXIS:
        raise UsageError(
            f"--batch-size {text} asks for {len(values)} batch sizes; at most {MAX_BATCH_AXIS} "
            "(each one times every configuration again)"
        )
    return tuple(values)


def names(text: str) -> tuple[str, ...]:
    """ "tome, prune" -> ("tome", "prune")."""
    return tuple(name.strip() for name in str(text).split(",") if name.strip())


def key_values(items: list[str], flag: str, form: str = "KEY=VALUE") -> list[tuple[str, int | float | bool | str]]:
    """["a=1", "b=avg"] -> [("a", 1), ("b", "avg")]; numbers and true/false keep their types."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            raise UsageError(f"bad {flag} {item!r}: write {form}")
        pairs.append((key.strip(), option_value(value.strip())))
    return pairs


def reducer_options(items: list[str]) -> dict[str, dict]:
    """["kmeans.iters=3", "prune.seed=1"] -> {"kmeans": {"iters": 3}, "prune": {"seed": 1}}, keyed by the names as
    written (the spec resolves them to the registered ones)."""
    options: dict[str, dict] = {}
    for head, value in key_values(items, "--opt", "REDUCER.KEY=VALUE, e.g. kmeans.iters=3"):
        reducer, dot, key = head.partition(".")
        if not (dot and reducer.strip() and key.strip()):
            raise UsageError(f"bad --opt {head}={value}: write REDUCER.KEY=VALUE, e.g. kmeans.iters=3")
        options.setdefault(reducer.strip(), {})[key.strip()] = value
    return options


def option_value(text: str) -> int | float | bool | str:
    """ "3" -> 3, "0.5" -> 0.5, "true" -> True, anything else stays text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
