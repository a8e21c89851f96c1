"""The paper's design study (its Table 1): each ToMe option varied alone from the defaults, in one sweep.

`plan` gives the configurations (run by the sweep engine in one group: interleaved timing, one data pass);
`tables` reads them back from the CSV as one small table per factor, laid out like the paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from tomebench.engine.spec import Config
from tomebench.models import LoadedModel
from tomebench.patch import default_prop_attn, depth, num_input_tokens, num_prefix_tokens
from tomebench.reducers import REDUCERS
from tomebench.report.format import fmt, number
from tomebench.schedule import full_r

REDUCER = "tome"
PROP_ATTN = "prop_attn"
TITLES = {
    "features": "similarity features",
    "distance": "distance",
    "heads": "heads",
    "combine": "combining",
    "partition": "partition into A and B",
    PROP_ATTN: "proportional attention",
}


def factors() -> dict[str, tuple]:
    """Each ablated option of tome and its choices, the default first (read from the reducer's signature)."""
    return {
        option.name: (option.default, *[c for c in option.choices if c != option.default])
        for option in REDUCERS.get(REDUCER).options
        if option.choices
    }


def plan(r: int | None = None) -> Callable[[LoadedModel], list[Config]]:
    """The study's configurations for a model: the defaults first, then every other choice of one factor at a
    time, proportional attention flipped last. r None: the model's full r (the paper's r=8 for ViT-L/16)."""

    def configs(loaded: LoadedModel) -> list[Config]:
        model = loaded.model
        rr = r if r is not None else full_r(num_input_tokens(model), num_prefix_tokens(model), depth(model))
        prop = default_prop_attn(model, REDUCERS.get(REDUCER))
        planned = [Config(REDUCER, rr, "constant", prop)]
        for factor, choices in factors().items():
            planned += [Config(REDUCER, rr, "constant", prop, ((factor, choice),)) for choice in choices[1:]]
        planned.append(Config(REDUCER, rr, "constant", not prop))
        return planned

    return configs


@dataclass(frozen=True)
class Line:
    """One choice of a factor as measured (None where its row failed or was not measured)."""

    choice: str
    default: bool
    top1: float | None
    samples_per_sec: float | None
    speedup: float | None
    error: str | None = None


@dataclass(frozen=True)
class FactorTable:
    factor: str
    title: str
    lines: tuple[Line, ...]


def tables(frame: pd.DataFrame) -> list[FactorTable]:
    """One table per factor from an ablation CSV. The defaults row is the first tome row without options."""
    rows = frame[frame["reducer"] == REDUCER]
    options = rows["reducer_options"].fillna("").astype(str)
    plain = rows[options == ""]
    if plain.empty:
        raise ValueError("no tome row with default options: not an ablation CSV")
    default = plain.iloc[0]
    out = []
    for factor, choices in factors().items():
        lines = [_line(default, str(choices[0]), True)]
        for choice in choices[1:]:
            match = rows[options == f"{factor}={choice}"]
            if not match.empty:
                lines.append(_line(match.iloc[0], str(choice), False))
        out.append(FactorTable(factor, TITLES.get(factor, factor), tuple(lines)))
    on = bool(default["prop_attn"])
    flipped = plain[plain["prop_attn"].astype(bool) != on]
    lines = [_line(default, "on" if on else "off", True)]
    if not flipped.empty:
        lines.append(_line(flipped.iloc[0], "off" if on else "on", False))
    out.append(FactorTable(PROP_ATTN, TITLES[PROP_ATTN], tuple(lines)))
    return out


def _line(row: pd.Series, choice: str, default: bool) -> Line:
    error = row.get("error")
    return Line(
        choice,
        default,
        number(row.get("top1")),
        number(row.get("infer_samples_per_sec")),
        number(row.get("speedup")),
        error if isinstance(error, str) and error else None,
    )


def to_markdown(frame: pd.DataFrame) -> str:
    """The tables as Markdown, headed by the model, r and the unpatched baseline."""
    first = frame.iloc[0]
    tome_rows = frame[frame["reducer"] == REDUCER]
    r = int(tome_rows.iloc[0]["r"]) if not tome_rows.empty else 0
    base = frame[frame["reducer"] == "none"]
    parts = [
        f"## ToMe ablation: {first['model']}, r={r} ({first['device']}, {first['dtype']}, "
        f"batch {first['infer_batch_size']})",
        "",
    ]
    if not base.empty:
        b = base.iloc[0]
        parts += [
            f"Unpatched: top-1 {fmt(number(b.get('top1')), '.2f')}, "
            f"{fmt(number(b.get('infer_samples_per_sec')), '.1f')} img/s.",
            "",
        ]
    for table in tables(frame):
        parts += [
            f"### {table.title}",
            "",
            f"| {table.factor} | top-1 | img/s | speedup |",
            "| --- | ---: | ---: | ---: |",
        ]
        for line in table.lines:
            name = f"**{line.choice}** (default)" if line.default else line.choice
            if line.error:
                parts.append(f"| {name} | error: {line.error} | | |")
            else:
                speedup = "-" if line.speedup is None else f"{line.speedup:.2f}x"
                parts.append(f"| {name} | {fmt(line.top1, '.2f')} | {fmt(line.samples_per_sec, '.1f')} | {speedup} |")
        parts.append("")
    return "\n".join(parts)
