"""What the console shows, built from CSV frames and check results only: the sweep's summary table, the check
table and its verdict, and the ablation's tables (rich renderables; printing is the command's business)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from tomebench.report.format import fmt
from tomebench.report.gate import CheckResult, change

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_ROWS = 60  # a longer CSV (a schedule search) is not printed row by row


def long_summary(frame: pd.DataFrame, shown: int = 5) -> str:
    """One line for a CSV too long to print row by row (over SUMMARY_ROWS): how many rows, and which reducers have
    error rows with the first error of each (at most `shown` reducers), so a failure is not hidden by the length."""
    failed = frame[frame["error"].notna()]
    line = f"{len(frame)} rows (too many to print; every one is in the CSV), {len(failed)} with an error"
    if failed.empty:
        return line
    parts = []
    for reducer, rows in list(failed.groupby("reducer", sort=False))[:shown]:
        first = str(rows["error"].iloc[0]).splitlines()[0]
        parts.append(f"{reducer} ({len(rows)}): {first[:100]}{'...' if len(first) > 100 else ''}")
    more = failed["reducer"].nunique() - len(parts)
    return line + ": " + "; ".join(parts) + (f"; and {more} more reducer(s)" if more > 0 else "")


def summary(frame: pd.DataFrame) -> Table:
    """Speedup (with its p10-p90) first: it is paired within a timing group. A row's images/s is shown next to its
    own group's unpatched images/s, the only number it may be compared with."""
    import pandas as pd

    from tomebench.report.plots import bars_label, speedup_bounds

    first = frame.iloc[0]
    several = frame["infer_batch_size"].nunique() > 1
    compiled = f" · compiled ({first['compile']})" if isinstance(first["compile"], str) else ""
    batch = "" if several else f" · batch {first['infer_batch_size']}"
    table = Table(title=f"{first['model']} · {first['device']} · {first['dtype']}{batch}{compiled}")
    # Batch, compile time and latency only when the CSV has them (a batch axis, --compile, --latency).
    extra = {
        "batch": several,
        "compile s": frame["compile_s"].notna().any(),
        "latency p50 ms": frame["latency_ms_p50"].notna().any(),
    }
    for name in (
        "reducer",
        "r",
        *[k for k, shown in extra.items() if shown and k == "batch"],
        "speedup",
        "interval" if bars_label(frame).startswith("95%") else "p10-p90",
        "img/s",
        "unpatched img/s",
        "GFLOPs",
        "tokens",
        "top-1",
        "top-5",
        *[k for k, shown in extra.items() if shown and k != "batch"],
    ):
        table.add_column(name, justify="left" if name == "reducer" else "right", no_wrap=True)
    table.add_column("note / error", overflow="fold", min_width=20)
    low, high = speedup_bounds(frame)
    for row, p10, p90 in zip(frame.itertuples(index=False), low, high):
        reducer = row.reducer + (f" [{row.reducer_options}]" if isinstance(row.reducer_options, str) else "")
        message = next((m for m in (row.error, row.note) if isinstance(m, str) and m), "")
        spread = "-" if pd.isna(p10) or pd.isna(p90) else f"{p10:.2f}-{p90:.2f}"
        cells = {
            "batch": str(row.infer_batch_size),
            "compile s": fmt(row.compile_s),
            "latency p50 ms": fmt(row.latency_ms_p50, ".2f"),
        }
        table.add_row(
            escape(reducer),
            str(row.r),
            *[cells[k] for k, shown in extra.items() if shown and k == "batch"],
            fmt(row.speedup, ".2f"),
            spread,
            fmt(row.infer_samples_per_sec),
            fmt(row.baseline_samples_per_sec),
            fmt(row.infer_gflops, ".3g"),
            fmt(row.tokens_final, "d"),
            fmt(row.top1, ".2f"),
            fmt(row.top5, ".2f"),
            *[cells[k] for k, shown in extra.items() if shown and k != "batch"],
            escape(message),
        )
    return table


def check_table(result: CheckResult) -> Table:
    """One line per compared configuration: each metric as baseline -> current, and what failed; configurations on
    one side only in one line per side."""
    table = Table(title=f"check: {result.compared} configurations compared")
    table.add_column("configuration", overflow="fold")
    for name in result.metrics:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    by_config: dict[str, dict] = {}
    for finding in result.findings:
        by_config.setdefault(finding.config, {})[finding.metric] = finding
    for config, found in by_config.items():
        cells = [_check_cell(found.get(m)) for m in result.metrics]
        statuses = []
        for status, style in (
            ("regressed", "bold red"),
            ("unmeasured", "bold red"),
            ("not comparable", "bold red"),
            ("improved", "green"),
        ):
            hit = [
                f"{f.metric} {change(f)}" if status in ("regressed", "improved") else f.metric
                for f in found.values()
                if f.status == status
            ]
            if hit:
                statuses.append(f"[{style}]{status}: {escape(', '.join(hit))}[/]")
        table.add_row(escape(config), *cells, "; ".join(statuses) or "ok")
    blank = ["-"] * len(result.metrics)
    for configs, status in (
        (result.errors, "[bold red]error[/]"),
        (result.known_errors, "error (in the baseline too)"),
    ):
        for config in configs:
            table.add_row(escape(config), *blank, status)
    for summary_line, status in (
        (result.missing_in_current_summary, "[bold red]missing now[/]"),
        (result.missing_in_baseline_summary, "new"),
    ):
        if summary_line:
            table.add_row(escape(summary_line), *blank, status)
    return table


def _check_cell(finding) -> str:
    if finding is None:
        return "-"
    if finding.status == "unmeasured":
        return f"{finding.baseline:.4g} -> unmeasured"
    return f"{finding.baseline:.4g} -> {finding.current:.4g}"


def check_verdict(result: CheckResult) -> str:
    incomparable = sum(f.status == "not comparable" for f in result.findings)
    regressions = len(result.regressions) - incomparable
    parts = (
        [f"{regressions} regression(s)"]
        + ([f"{incomparable} not comparable"] if incomparable else [])
        + [
            f"{len(result.improvements)} improvement(s)",
            f"{len(result.errors)} error row(s)",
            f"{len(result.missing_in_current)} missing",
            f"{len(result.missing_in_baseline)} new",
        ]
    )
    head = "[bold green]check passed[/]" if result.passed else "[bold red]check failed[/]"
    return f"{head}: {', '.join(parts)}"


def explanation(frame: pd.DataFrame) -> str:
    """What a row's speed figures mean, in one line (two different numbers that look like a contradiction)."""
    from tomebench.report.plots import bars_label

    text = (
        "speedup = the median over rounds of (unpatched time / this time), both timed in the same round, with "
        f"its {bars_label(frame)}; it can differ from img/s over unpatched img/s, a ratio of two medians of "
        "different rounds"
    )
    if frame["latency_ms_p50"].notna().any():
        text += "; latency_speedup compares single-image p50 latencies (batch 1), a different regime from throughput"
    return text


def verdict(frame: pd.DataFrame) -> str:
    """One line: whether the timing can rank the configurations, and which rows it cannot."""
    from tomebench.report.plots import RANKABLE, too_noisy, usable
    from tomebench.results.identity import config_label

    measured = usable(frame)
    measured = measured[measured["reducer"] != "none"]
    if measured.empty:
        return "timing: nothing was timed"
    noisy = too_noisy(measured)
    if noisy.empty:
        return f"timing: usable, every speedup known to within ±{RANKABLE:.0%} (its interval)"
    names = [config_label(row) for _, row in noisy.iterrows()]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (
        f"timing: too noisy to rank {len(noisy)} of {len(measured)} rows (interval beyond ±{RANKABLE:.0%}): {shown}; "
        "time longer (--time-budget SECONDS) or on a quieter machine"
    )
