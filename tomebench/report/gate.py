"""The regression gate: compare a CSV against a baseline CSV, row by row, within tolerances.

Reads CSVs only (like plots) and never measures. Rows are joined on their identity columns. Throughput is compared
as `speedup` (against the unpatched model of the same file), never as images/s, because machines differ; GFLOPs
and final tokens are machine-independent and compared almost exactly; accuracy in absolute points.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import pandas as pd

from tomebench.errors import UsageError
from tomebench.report.format import number
from tomebench.report.tolerances import DEFAULT_METRICS, METRICS, Tolerances
from tomebench.results.identity import GATE_IDENTITY, LATER_IDENTITY, canonical

# What makes two rows the same configuration (`tomebench.results.identity`): the device is left out on purpose,
# since a CI runner is not the machine the baseline was made on and speedup is a ratio within one file; the batch
# size and the compile mode stay in (a compiled row is never held to an eager one, nor the reverse).
IDENTITY = GATE_IDENTITY


FAILING = ("regressed", "unmeasured", "not comparable")
LIST_AT_MOST = 5  # a Markdown report lists up to this many one-side-only configurations, else one summary line
NONFINITE = "_nonfinite"  # a column added while joining: the row's cells written as NaN or inf
# How the no-match message names identity columns, and the flag that sets each.
FIELD_NAMES = {
    "infer_batch_size": "batch size",
    "infer_img_size": "image size",
    "reducer_options": "reducer options",
    "prop_attn": "prop_attn",
}
FLAGS = {
    "infer_batch_size": "--batch-size",
    "dtype": "--dtype",
    "compile": "--compile",
    "model": "--model",
    "infer_img_size": "--model-arg img_size=",
    "schedule": "--schedule",
}


@dataclass(frozen=True)
class Finding:
    """One metric of one configuration: baseline vs current, and what that means."""

    config: str
    metric: str
    baseline: float
    current: float
    # "ok", "regressed", "improved", "unmeasured" (in the baseline, missing now: fails) or "not comparable" (a NaN,
    # inf or out-of-range number on either side: fails, since nothing says it holds)
    status: str


@dataclass(frozen=True)
class CheckResult:
    findings: tuple[Finding, ...]
    missing_in_current: tuple[str, ...]  # in the baseline, not measured now: the gate lost coverage
    missing_in_baseline: tuple[str, ...]  # new configurations: reported, not a failure
    errors: tuple[str, ...]  # configurations whose current row carries an error the baseline's did not
    compared: int
    metrics: tuple[str, ...]
    tolerances: Tolerances = field(default_factory=Tolerances)

    known_errors: tuple[str, ...] = ()  # configurations that failed in the baseline too: listed, not failing
    # missing_in_current and missing_in_baseline in one line each, e.g. "27 configurations: tome r=0..8, ..."
    missing_in_current_summary: str = ""
    missing_in_baseline_summary: str = ""

    @property
    def regressions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status in FAILING)

    @property
    def improvements(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == "improved")

    @property
    def passed(self) -> bool:
        return not (self.regressions or self.missing_in_current or self.errors)

    def to_dict(self) -> dict:
        """The result as JSON-safe data: a NaN or inf (an unmeasured or incomparable value) is null."""
        return _finite(self._dict())

    def _dict(self) -> dict:
        return {
            "passed": self.passed,
            "compared": self.compared,
            "metrics": list(self.metrics),
            "tolerances": asdict(self.tolerances),
            "regressions": [asdict(f) for f in self.regressions],
            "not_comparable": [asdict(f) for f in self.findings if f.status == "not comparable"],
            "improvements": [asdict(f) for f in self.improvements],
            "missing_in_current": list(self.missing_in_current),
            "missing_in_baseline": list(self.missing_in_baseline),
            "errors": list(self.errors),
            "known_errors": list(self.known_errors),
        }


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def label(key: tuple) -> str:
    """A configuration as people say it: "model reducer r=8 (constant, fp32, 224px)"."""
    values = dict(zip(IDENTITY, key))
    options = f"[{values['reducer_options']}]" if values["reducer_options"] else ""
    return (
        f"{values['model']} {values['reducer']}{options}"
        f" r={values['r']} "
        f"({values['schedule']}, {values['dtype']}, {values['infer_img_size']}px, batch {values['infer_batch_size']}"
        f"{', prop_attn' if values['prop_attn'] == 'True' else ''}"
        f"{', compiled ' + values['compile'] if values['compile'] else ''})"
    )


def _nonfinite_cells(frame: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per row, the columns whose cell was written as NaN or inf, or held text where a number belongs (read_csv
    records both; pandas alone would make them look like an empty cell, which means "not measured")."""
    marked: dict[int, list[str]] = {}
    for position, column in (*frame.attrs.get("nonfinite_cells", ()), *frame.attrs.get("text_cells", ())):
        marked.setdefault(position, []).append(column)
    return [tuple(marked.get(position, ())) for position in range(len(frame))]


def _keyed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    # read_csv adds the columns an older file lacks; for identity columns that would join on blanks, so refuse.
    absent = set(frame.attrs.get("absent_columns", ()))
    missing = [c for c in IDENTITY if c not in LATER_IDENTITY and (c not in frame.columns or c in absent)]
    if missing:
        raise UsageError(f"{name} lacks the identity column(s) {', '.join(missing)}")
    if frame.empty:
        raise UsageError(f"{name} has no rows")
    frame = frame.copy()
    frame[NONFINITE] = _nonfinite_cells(frame)
    for column in IDENTITY:
        frame[column] = frame[column].map(canonical)
    frame = frame.drop_duplicates()  # an exact repeat is one row
    twice = frame[frame.duplicated(subset=list(IDENTITY), keep=False)]
    if not twice.empty:
        # Which of two measurements of one configuration the gate held would be chance (the regressed one, or the
        # fine one written after it): refuse rather than pass.
        key = tuple(twice.iloc[0][list(IDENTITY)])
        lines = [str(i + 2) for i in twice.index[twice[list(IDENTITY)].apply(tuple, axis=1) == key]]
        raise UsageError(
            f"{name} has {len(lines)} different rows of one configuration ({label(key)}) at lines "
            f"{', '.join(lines)}; keep one per configuration"
        )
    return frame.set_index(list(IDENTITY))


def check(
    current: pd.DataFrame,
    baseline: pd.DataFrame,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    tolerances: Tolerances | None = None,
) -> CheckResult:
    """Join on IDENTITY and compare each metric present on both sides. Raises UsageError if nothing joins."""
    tolerances = tolerances or Tolerances()
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    cur, base = _keyed(current, "the current CSV"), _keyed(baseline, "the baseline CSV")
    shared = [k for k in base.index if k in cur.index]
    if not shared:
        raise UsageError(
            "no configuration of the current CSV matches one of the baseline: nothing to compare; "
            + _differences(cur.index, base.index)
        )
    # An error the baseline already had (say, an expected out-of-memory at a huge r) is no regression.
    errors = tuple(label(k) for k in shared if _text(cur.loc[k].get("error")) and not _text(base.loc[k].get("error")))
    findings = []
    for key in shared:
        if _text(cur.loc[key].get("error")) or _text(base.loc[key].get("error")):
            continue
        for name in metrics:
            finding = _compare(key, name, base.loc[key], cur.loc[key], tolerances.for_metric(name))
            if finding is not None:
                findings.append(finding)
    only_base = [k for k in base.index if k not in cur.index]
    only_cur = [k for k in cur.index if k not in base.index]
    return CheckResult(
        findings=tuple(findings),
        missing_in_current=tuple(label(k) for k in only_base),
        missing_in_baseline=tuple(label(k) for k in only_cur),
        missing_in_current_summary=summarize(only_base),
        missing_in_baseline_summary=summarize(only_cur),
        errors=errors,
        compared=len(shared),
        metrics=tuple(metrics),
        tolerances=tolerances,
        known_errors=tuple(
            label(k) for k in shared if _text(cur.loc[k].get("error")) and _text(base.loc[k].get("error"))
        ),
    )


def _text(value: object) -> str:
    return "" if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else str(value)


def _compare(key: tuple, name: str, base: pd.Series, cur: pd.Series, tol: float) -> Finding | None:
    metric = METRICS[name]
    column = metric.column
    b, c = number(base.get(column)), number(cur.get(column))
    bad_base, bad_cur = column in base.get(NONFINITE, ()), column in cur.get(NONFINITE, ())
    if b is None and not bad_base:
        return None  # the baseline never measured it (an empty cell): nothing to hold the current run to
    if bad_base or bad_cur or not math.isfinite(b) or (c is not None and not math.isfinite(c)):
        # A NaN/inf cell (or a number too large for a float) says nothing about whether the metric holds.
        return Finding(label(key), name, _shown(b), _shown(c), "not comparable")
    if c is None:
        # Measured in the baseline but not now (a throughput-only run against an accuracy baseline): not green.
        return Finding(label(key), name, b, float("nan"), "unmeasured")
    if name == "speedup":
        return Finding(label(key), name, b, c, _speedup_status(b, c, _spread(base), _spread(cur), tol))
    allowed = tol * abs(b) if metric.relative else tol
    gain = (c - b) if metric.higher_is_better else (b - c)
    # The tiny epsilon keeps a change that equals the tolerance (up to float rounding) within it.
    status = "regressed" if gain < -allowed - 1e-9 else "improved" if gain > allowed + 1e-9 else "ok"
    return Finding(label(key), name, b, c, status)


def _spread(row: pd.Series) -> tuple[float, float] | None:
    """(p10, p90) of a row's paired speedup, when the CSV has them."""
    low, high = number(row.get("speedup_p10")), number(row.get("speedup_p90"))
    return (low, high) if low is not None and high is not None else None


def _speedup_status(base: float, cur: float, base_spread, cur_spread, tol: float) -> str:
    """A speedup regressed only when its measured spread clears the tolerance: the current run's p90 below the
    baseline's p10 less the tolerance (improved: p10 above p90 plus it). A timing as noisy as the margin it is
    held to says nothing either way; without spreads (older CSVs) the medians are compared."""
    low, high = cur_spread or (cur, cur)
    base_low, base_high = base_spread or (base, base)
    if high < base_low * (1 - tol) - 1e-9:
        return "regressed"
    if low > base_high * (1 + tol) + 1e-9:
        return "improved"
    return "ok"


def _shown(value: float | None) -> float:
    return float("nan") if value is None else value


def _differences(current: pd.Index, baseline: pd.Index) -> str:
    """Which identity fields keep the two files apart: "batch size 128 (current) vs 32 (baseline)". Fields with
    no value in common come first and alone, since any one of them rules out every match."""
    disjoint, different = [], []
    for position, field_name in enumerate(IDENTITY):
        now, then = {key[position] for key in current}, {key[position] for key in baseline}
        if now != then:
            text = f"{FIELD_NAMES.get(field_name, field_name)} {_values(now)} (current) vs {_values(then)} (baseline)"
            if field_name in FLAGS and len(then) == 1 and next(iter(then)):
                flag = FLAGS[field_name]
                text += f": measure again with {flag}{'' if flag.endswith('=') else ' '}{next(iter(then))}"
            (different if now & then else disjoint).append(text)
    if not disjoint and not different:
        return "each field's values occur on both sides, but never in the same combination"
    return "they differ in " + "; ".join(disjoint or different)


def _values(values: set[str], most: int = 4) -> str:
    values = [v if v != "" else "(blank)" for v in sorted(values)]
    return ", ".join(values[:most]) + (f" and {len(values) - most} more" if len(values) > most else "")


def summarize(keys: list[tuple]) -> str:
    """Configurations in one line: "27 configurations: tome r=0..8, prune r=0..8 (demo, fp32, 32px, batch 32)"."""
    if not keys:
        return ""
    by_variant: dict[str, list[str]] = {}
    settings = set()
    for key in keys:
        values = dict(zip(IDENTITY, key))
        options = f"[{values['reducer_options']}]" if values["reducer_options"] else ""
        schedule = "" if values["schedule"] == "constant" else f" {values['schedule']}"
        by_variant.setdefault(f"{values['reducer']}{options}{schedule}", []).append(values["r"])
        settings.add(
            f"{values['model']}, {values['dtype']}, {values['infer_img_size']}px, batch {values['infer_batch_size']}"
        )
    variants = ", ".join(f"{name} r={_r_range(rs)}" for name, rs in by_variant.items())
    where = f" ({settings.pop()})" if len(settings) == 1 else f" ({len(settings)} settings)"
    return f"{len(keys)} configuration{'s' if len(keys) != 1 else ''}: {variants}{where}"


def _r_range(values: list[str]) -> str:
    """["0", "1", "2", "4"] -> "0..2,4"; non-numbers as they are."""
    try:
        numbers = sorted({int(v) for v in values})
    except ValueError:
        return ",".join(values)
    runs, start = [], numbers[0]
    for previous, current in zip(numbers, numbers[1:] + [None]):
        if current != previous + 1 if current is not None else True:
            runs.append(f"{start}" if start == previous else f"{start}..{previous}")
            start = current
    return ",".join(runs)


def to_markdown(result: CheckResult, current_name: str, baseline_name: str) -> str:
    """A summary for a pull-request comment. Every cell and list item is escaped (a `|` in a model name would
    otherwise split a table cell)."""
    tol = result.tolerances
    verdict = "passed" if result.passed else "FAILED"
    lines = [
        f"## tomebench check: {verdict}",
        "",
        f"{_code(current_name)} against {_code(baseline_name)}: {result.compared} configurations compared on "
        f"{', '.join(result.metrics)} (tolerances: accuracy {tol.acc} points, speedup {tol.speedup:.0%}, "
        f"GFLOPs {tol.gflops:.1%}).",
        "",
    ]
    incomparable = tuple(f for f in result.findings if f.status == "not comparable")
    failing = tuple(f for f in result.regressions if f.status != "not comparable")
    for title, findings in (
        ("Regressions", failing),
        ("Not comparable (NaN, inf or out of range)", incomparable),
        ("Improvements", result.improvements),
    ):
        if findings:
            lines += [
                f"### {title}",
                "",
                "| configuration | metric | baseline | current | change |",
                "| --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {md_cell(f.config)} | {f.metric} | {f.baseline:.4g} | {f.current:.4g} | {change(f)} |"
                for f in findings
            ]
            lines.append("")
    for title, items in (
        ("Rows with an error", result.errors),
        ("Failing in the baseline too (not counted)", result.known_errors),
    ):
        if items:
            lines += [f"### {title}", ""] + [f"- {md_cell(item)}" for item in items] + [""]
    for title, summary, items in (
        ("In the baseline, missing now", result.missing_in_current_summary, result.missing_in_current),
        ("New (not in the baseline)", result.missing_in_baseline_summary, result.missing_in_baseline),
    ):
        if len(items) > LIST_AT_MOST:
            # One line, the full list folded away: a sweep's worth of new rows would bury the verdict.
            lines += [f"### {title}", "", md_cell(summary), "", "<details><summary>all of them</summary>", ""]
            lines += [f"- {md_cell(item)}" for item in items] + ["", "</details>", ""]
        elif items:
            lines += [f"### {title}", ""] + [f"- {md_cell(item)}" for item in items] + [""]
    if result.passed and not result.improvements:
        lines.append("Everything within tolerance.")
    return "\n".join(lines).rstrip() + "\n"


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell or list item: pipes, backslashes, emphasis, code and HTML characters
    and line breaks escaped, so it shows as written. (An underscore inside a word is never emphasis on GitHub, so
    model names stay readable in the raw text.)"""
    text = " ".join(str(text).split())
    for char in "\\`*<>|":
        text = text.replace(char, "\\" + char)
    return text


def _code(text: str) -> str:
    """Inline code that survives backticks in the text (a longer fence around it)."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def change(f: Finding) -> str:
    """The move from baseline to current: relative for relative metrics, else in the column's unit."""
    if f.status == "unmeasured":
        return "not measured"
    if f.status == "not comparable":
        return "not comparable"
    if METRICS[f.metric].relative and f.baseline:
        return f"{(f.current - f.baseline) / abs(f.baseline):+.1%}"
    return f"{f.current - f.baseline:+.4g}"
