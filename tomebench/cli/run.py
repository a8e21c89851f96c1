"""A measuring command's life: outputs checked, the engine run under a progress bar with Ctrl-C and SIGTERM as
interrupts, rows journalled to the CSV as groups finish, then the summary, the figures and the optional check
against a baseline."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tomebench.cli.app import console, errors
from tomebench.cli.spec import CommandLine
from tomebench.errors import TomebenchError, UsageError
from tomebench.report.tolerances import DEFAULT_METRICS, Tolerances
from tomebench.results.csv import read_csv, write_text_atomic
from tomebench.results.files import check_outputs, remove_stale_temp_files, sweep_outputs
from tomebench.results.journal import refuse_replacing

if TYPE_CHECKING:
    from rich.progress import Progress

    from tomebench.engine.spec import RunSpec
    from tomebench.results.journal import Journal


def default_out(command: str, model: str) -> Path:
    """results/<command>-<model>.csv, the model name made a plain file name: no folder separators, no family colon,
    and no dot (a tag's dot would be taken for the file's suffix, and the figures would land on each other)."""
    return Path("results") / f"{command}-{re.sub(r'[^A-Za-z0-9_-]+', '_', model)}.csv"


def measure(
    command: str, args: CommandLine, make_spec: Callable[[], RunSpec], figure=None, report: bool = False
) -> Path:
    """Check every output (before torch is imported: a refusal costs a fraction of a second), build the spec,
    run it, render; returns the CSV written."""
    baseline = args.baseline
    tolerances = None
    if baseline is not None:
        tolerances = Tolerances(acc=args.acc_tol, speedup=args.speedup_tol)  # bad ones fail now
        try:
            read_csv(baseline)  # an unusable baseline fails now, not after the sweep
        except TomebenchError as exc:
            raise UsageError(f"--baseline: {exc}") from None
    if args.resume and args.overwrite:
        raise UsageError("--resume keeps the rows in --out and --overwrite replaces them: give one of the two")
    out = args.out or default_out(command, args.model)
    check_outputs(
        sweep_outputs(out, report=report), inputs=None if baseline is None else {"the --baseline CSV": baseline}
    )
    if not args.resume:
        refuse_replacing(out, args.overwrite)
    spec = make_spec()
    run(spec, out, args.resume, figure, executor(args), args.overwrite)
    if baseline is not None:
        check(out, baseline, DEFAULT_METRICS, tolerances, report=None, as_json=False)
    return out


def executor(args: CommandLine):
    """None (measure here) or a RayExecutor for --executor ray."""
    kind = args.executor or "local"
    if kind == "local":
        if args.ray_address:
            raise UsageError("--ray-address needs --executor ray")
        return None
    if kind != "ray":
        raise UsageError(f"unknown --executor {kind!r}: use local or ray")
    from tomebench.engine.ray import RayExecutor, import_ray

    import_ray()  # says how to install it, before anything is measured
    return RayExecutor(address=args.ray_address)


class RichProgress:
    """The engine's Progress protocol on a rich progress bar: one task per phase."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task = None

    def phase(self, name: str, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[self.task].total)
        self.task = self.bar.add_task(name, total=total)

    def advance(self, amount: int = 1) -> None:
        self.bar.advance(self.task, amount)

    def note(self, text: str) -> None:
        self.bar.console.print(f"note: {escape(text)}", highlight=False, soft_wrap=True)


def run(spec: RunSpec, out: Path, resume: bool = False, figure=None, executor=None, overwrite: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tomebench.engine.run import run_sweep
    from tomebench.report import plots
    from tomebench.results.journal import Journal

    journal = Journal(out, resume, overwrite)
    columns = (TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with signals_as_interrupts() as received:
        try:
            with Progress(*columns, console=console, transient=False) as bar:
                measured = run_sweep(spec, RichProgress(bar), journal, executor)
        except KeyboardInterrupt:
            raise interrupted(journal, out, received[-1] if received else signal.SIGINT) from None
    if not measured and not journal.resumed:
        raise TomebenchError("nothing was measured")
    if not measured:
        console.print(f"all {len(journal.planned)} configurations are already in {out}; nothing to measure")
    elif journal.resumed:
        console.print(f"resumed: {journal.resumed} configuration(s) kept from {out}, {len(measured)} measured now")
    from tomebench.report.console import SUMMARY_ROWS, explanation, long_summary, summary, verdict

    frame = read_csv(out)
    if len(frame) <= SUMMARY_ROWS:
        console.print(summary(frame))
    else:
        console.print(long_summary(frame), highlight=False, soft_wrap=True)
    from tomebench.results.files import sidecar

    console.print(explanation(frame), highlight=False, soft_wrap=True)
    console.print(verdict(frame), highlight=False, soft_wrap=True)
    console.print(f"wrote {out} (settings and raw repeat times: {sidecar(out)})")
    draw(frame, out, figure or plots.main_figure)
    if frame["error"].notna().all():
        raise TomebenchError(f"every configuration failed; see the error column of {out}")


def draw(frame, out: Path, figure) -> None:
    """The run's figures next to its CSV; a figure that cannot be written says the rows are safe."""
    from tomebench.report import plots

    stem = out.with_suffix("")
    by_batch = stem.with_name(f"{stem.name}-speedup-vs-batch")
    by_cost = stem.with_name(f"{stem.name}-top1-vs-gmacs")
    try:
        remove_stale_temp_files([p.with_suffix(e) for p in (stem, by_batch, by_cost) for e in (".png", ".svg")])
        for path in plots.save(figure(plots.at_largest_batch(frame)), stem):
            console.print(f"wrote {path}")
        if len(plots.batch_sizes(frame)) > 1:
            for path in plots.save(plots.speedup_vs_batch(frame), by_batch):
                console.print(f"wrote {path}")
        if figure is plots.main_figure and plots.usable(frame)["top1"].notna().any():
            for path in plots.save(plots.top1_vs_gmacs(plots.at_largest_batch(frame)), by_cost):
                console.print(f"wrote {path}")
    except ValueError as exc:  # nothing plottable, e.g. every configuration failed
        errors.print(f"no plot: {exc}")
    except OSError as exc:  # a full disk: the rows are safe, say so rather than show a traceback
        raise TomebenchError(
            f"could not write the plot {stem}.png/.svg ({exc.strerror or exc}); the rows are saved in {out}"
        ) from None


@contextmanager
def signals_as_interrupts():
    """SIGTERM (a job scheduler, `kill`) stops the sweep like Ctrl-C does; yields the signals received."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupted(journal: Journal, out: Path, signum: int) -> typer.Exit:
    """Say what was kept and what was not, and exit as a process stopped by that signal would (128 + n)."""
    from tomebench.results.identity import config_label

    missing = journal.missing()
    kept = len(journal.planned) - len(missing)
    labels = ", ".join(config_label(row) for row in missing)
    where = f"are in {out}" if out.exists() else "were saved"
    errors.print(
        f"[bold red]interrupted[/] ({signal.Signals(signum).name}): {kept} of {len(journal.planned)} configurations "
        f"{where}; not measured: {escape(labels)}. Run the same command with --resume to measure only those.",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(128 + signum)


def ablation_report(out: Path) -> None:
    """The ablation's tables, one per factor, on the console and as Markdown next to the CSV."""
    from tomebench.studies import ablate

    frame = read_csv(out)
    for table in ablation_tables(frame):
        console.print(table)
    try:
        written = write_text_atomic(out.with_suffix(".md"), ablate.to_markdown(frame))
    except OSError as exc:
        raise TomebenchError(
            f"could not write {out.with_suffix('.md')} ({exc.strerror or exc}); the rows are saved in {out}"
        ) from None
    console.print(f"wrote {written}")


def check(current: Path, baseline: Path, metrics, tolerances: Tolerances, report: Path | None, as_json: bool):
    """Hold a CSV to a baseline and say so; exit 1 on a regression."""
    from tomebench.report.console import check_table, check_verdict
    from tomebench.report.gate import check as check_csv
    from tomebench.report.gate import to_markdown

    if report is not None:
        # The report must never land on the CSVs it reads (a Markdown file over the current run's rows).
        check_outputs(
            {"the Markdown report": report},
            "--report",
            {"the current CSV": current, "the baseline CSV": baseline},
            "give the report its own name, e.g. check.md",
            report,
        )
    result = check_csv(read_csv(current), read_csv(baseline), tuple(metrics), tolerances)
    if report is not None:
        write_text_atomic(report, to_markdown(result, str(current), str(baseline)))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        console.print(check_table(result))
        console.print(check_verdict(result))
    if not result.passed:
        raise typer.Exit(1)


def ablation_tables(frame) -> list:
    """The ablation's tables, one per factor, as the console shows them."""
    from rich.table import Table

    from tomebench.report.format import fmt
    from tomebench.studies import ablate

    shown = []
    for table in ablate.tables(frame):
        out = Table(title=table.title, title_justify="left")
        for name in (table.factor, "top-1", "img/s", "speedup"):
            out.add_column(name, justify="left" if name == table.factor else "right")
        for line in table.lines:
            out.add_row(
                f"[bold]{escape(line.choice)}[/] (default)" if line.default else escape(line.choice),
                line.error and "error" or fmt(line.top1, ".2f"),
                fmt(line.samples_per_sec),
                fmt(line.speedup, ".2f"),
            )
        shown.append(out)
    return shown
