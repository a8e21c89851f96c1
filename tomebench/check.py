"""The regression gate: compare a CSV against a baseline CSV, row by row, within tolerances.

Reads CSVs only (like plots) and never measures. Rows are joined on their identity columns. Throughput is compared
as `speedup` (against the unpatched model of the same file), never as images/s, because machines differ; GFLOPs
and final tokens are machine-independent and compared almost exactly; accuracy in absolute points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from tomebench.errors import UsageError

# What makes two rows the same configuration. The device is left out on purpose: a CI runner is not the machine
# the baseline was made on, and speedup is a ratio within one file. Batch size stays in: random pruning draws per
# image of a batch, so its accuracy is reproducible only at the same batch size.
# The compile mode too: a compiled row is never held to an eager one (nor the reverse).
IDENTITY = ("model", "reducer", "r", "schedule", "prop_attn", "reducer_options", "dtype", "infer_img_size",
            "infer_batch_size", "compile")
# Identity columns newer than the first CSVs; a file without them measured the defaults (blank: eager).
LATER_IDENTITY = ("reducer_options", "compile")


@dataclass(frozen=True)
class Metric:
    column: str
    higher_is_better: bool
    relative: bool  # tolerance as a fraction of the baseline (else absolute, in the column's unit)


METRICS = {
    "top1": Metric("top1", True, False),
    "top5": Metric("top5", True, False),
    "speedup": Metric("speedup", True, True),
    "gflops": Metric("infer_gflops", False, True),
    "tokens": Metric("tokens_final", False, False),
}
DEFAULT_METRICS = ("top1", "top5", "speedup", "gflops", "tokens")


@dataclass(frozen=True)
class Tolerances:
    """How far a metric may move the wrong way before it is a regression."""

    acc: float = 0.1  # top-1/top-5 points: 50 images of ImageNet-val; fp32 CPU accuracy reproduces exactly
    speedup: float = 0.10  # relative: the p10-p90 spread a quiet machine shows
    gflops: float = 0.001  # relative: the flop count is deterministic; this only absorbs CSV rounding
    tokens: float = 0.0

    def for_metric(self, name: str) -> float:
        return {"top1": self.acc, "top5": self.acc, "speedup": self.speedup, "gflops": self.gflops}.get(
            name, self.tokens
        )


@dataclass(frozen=True)
class Finding:
    """One metric of one configuration: baseline vs current, and what that means."""

    config: str
    metric: str
    baseline: float
    current: float
    status: str  # "ok", "regressed", "improved", or "unmeasured" (in the baseline, missing now: fails)


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

    @property
    def regressions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status in ("regressed", "unmeasured"))

    @property
    def improvements(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == "improved")

    @property
    def passed(self) -> bool:
        return not (self.regressions or self.missing_in_current or self.errors)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "compared": self.compared,
            "metrics": list(self.metrics),
            "tolerances": asdict(self.tolerances),
            "regressions": [asdict(f) for f in self.regressions],
            "improvements": [asdict(f) for f in self.improvements],
            "missing_in_current": list(self.missing_in_current),
            "missing_in_baseline": list(self.missing_in_baseline),
            "errors": list(self.errors),
            "known_errors": list(self.known_errors),
        }


def label(key: tuple) -> str:
    """A configuration as people say it: "model reducer r=8 (constant, fp32, 224px)"."""
    values = dict(zip(IDENTITY, key))
    return (
        f"{values['model']} {values['reducer']}{'[' + values['reducer_options'] + ']' if values['reducer_options'] else ''}"
        f" r={values['r']} "
        f"({values['schedule']}, {values['dtype']}, {values['infer_img_size']}px, batch {values['infer_batch_size']}"
        f"{', prop_attn' if values['prop_attn'] == 'True' else ''}"
        f"{', compiled ' + values['compile'] if values['compile'] else ''})"
    )


def _keyed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    # read_csv adds the columns an older file lacks; for identity columns that would join on blanks, so refuse.
    absent = set(frame.attrs.get("absent_columns", ()))
    missing = [c for c in IDENTITY if c not in LATER_IDENTITY and (c not in frame.columns or c in absent)]
    if missing:
        raise UsageError(f"{name} lacks the identity column(s) {', '.join(missing)}")
    if frame.empty:
        raise UsageError(f"{name} has no rows")
    frame = frame.copy()
    for column in IDENTITY:
        frame[column] = frame[column].map(_canonical)
    # A file with the same configuration twice (appended runs): the last measurement counts.
    return frame.drop_duplicates(subset=list(IDENTITY), keep="last").set_index(list(IDENTITY))


def _canonical(value: object) -> str:
    """Identity values as text, so 8, 8.0 and "8" (or True and "True") join."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


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
        raise UsageError("no configuration of the current CSV matches one of the baseline (joined on "
                         f"{', '.join(IDENTITY)}): nothing to compare")
    # An error the baseline already had (say, an expected out-of-memory at a huge r) is no regression.
    errors = tuple(
        label(k) for k in shared if _text(cur.loc[k].get("error")) and not _text(base.loc[k].get("error"))
    )
    findings = []
    for key in shared:
        if _text(cur.loc[key].get("error")) or _text(base.loc[key].get("error")):
            continue
        for name in metrics:
            finding = _compare(key, name, base.loc[key], cur.loc[key], tolerances.for_metric(name))
            if finding is not None:
                findings.append(finding)
    return CheckResult(
        findings=tuple(findings),
        missing_in_current=tuple(label(k) for k in base.index if k not in cur.index),
        missing_in_baseline=tuple(label(k) for k in cur.index if k not in base.index),
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
    b, c = pd.to_numeric(base.get(metric.column), errors="coerce"), pd.to_numeric(cur.get(metric.column), errors="coerce")
    if pd.isna(b):
        return None  # the baseline never measured it: nothing to hold the current run to
    if pd.isna(c):
        # Measured in the baseline but not now (a throughput-only run against an accuracy baseline): not green.
        return Finding(label(key), name, float(b), float("nan"), "unmeasured")
    allowed = tol * abs(b) if metric.relative else tol
    gain = (c - b) if metric.higher_is_better else (b - c)
    # The tiny epsilon keeps a change that equals the tolerance (up to float rounding) within it.
    status = "regressed" if gain < -allowed - 1e-9 else "improved" if gain > allowed + 1e-9 else "ok"
    return Finding(label(key), name, float(b), float(c), status)


def to_markdown(result: CheckResult, current_name: str, baseline_name: str) -> str:
    """A summary for a pull-request comment."""
    tol = result.tolerances
    verdict = "passed" if result.passed else "FAILED"
    lines = [
        f"## tomebench check: {verdict}",
        "",
        f"`{current_name}` against `{baseline_name}`: {result.compared} configurations compared on "
        f"{', '.join(result.metrics)} (tolerances: accuracy {tol.acc} points, speedup {tol.speedup:.0%}, "
        f"GFLOPs {tol.gflops:.1%}).",
        "",
    ]
    for title, findings in (("Regressions", result.regressions), ("Improvements", result.improvements)):
        if findings:
            lines += [f"### {title}", "", "| configuration | metric | baseline | current | change |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {f.config} | {f.metric} | {f.baseline:.4g} | {f.current:.4g} | {change(f)} |" for f in findings]
            lines.append("")
    for title, items in (
        ("Rows with an error", result.errors),
        ("Failing in the baseline too (not counted)", result.known_errors),
        ("In the baseline, missing now", result.missing_in_current),
        ("New (not in the baseline)", result.missing_in_baseline),
    ):
        if items:
            lines += [f"### {title}", ""] + [f"- {item}" for item in items] + [""]
    if result.passed and not result.improvements:
        lines.append("Everything within tolerance.")
    return "\n".join(lines).rstrip() + "\n"


def change(f: Finding) -> str:
    """The move from baseline to current: relative for relative metrics, else in the column's unit."""
    if f.status == "unmeasured":
        return "not measured"
    if METRICS[f.metric].relative and f.baseline:
        return f"{(f.current - f.baseline) / abs(f.baseline):+.1%}"
    return f"{f.current - f.baseline:+.4g}"
