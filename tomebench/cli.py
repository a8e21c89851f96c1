"""The `tomebench` command line. Commands are thin: they build a spec, call the engine, and render.

Every TomebenchError becomes one line on stderr and its exit code; nothing measured is thrown away by a
failure that can be caught before measuring (the output path is checked first).

torch, timm and matplotlib are imported inside the commands that use them, so `--help`, `models` and `--version`
start in well under a second.
"""

from __future__ import annotations

import json
import math
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tomebench import __version__
from tomebench.adapters import ADAPTERS
from tomebench.check import DEFAULT_METRICS, METRICS, CheckResult, Tolerances, change, to_markdown
from tomebench.check import check as check_csv
from tomebench.config import load as load_config
from tomebench.errors import TomebenchError, UsageError
from tomebench.outputs import check_outputs, check_writable, remove_stale_temp_files, sweep_outputs
from tomebench.results import read_csv, write_text_atomic
from tomebench.schedule import parse_r_spec, parse_r_values

if TYPE_CHECKING:
    import pandas as pd

    from tomebench.journal import Journal
    from tomebench.sweep import SweepSpec

app = typer.Typer(
    add_completion=False,
    # Plain help: rich markup would eat every [bracket] in it ('tomebench[ray]', a [paper] table).
    rich_markup_mode=None,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="Measure what token reduction (ToMe and friends) buys a Vision Transformer (timm, torchvision, transformers).",
)
console = Console()
if not console.is_terminal:
    # Piped output has no terminal width; rich would assume 80 columns and fold every table.
    console.width = max(console.width, 160)
errors = Console(stderr=True)


class _Command(typer.core.TyperCommand):
    """A command whose arguments are listed by their metavar alone: typer would append its idea of the type
    (`IMAGE <list[Path]>`), which says less than the name does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = lambda ctx: None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tomebench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Measure what token reduction (ToMe and friends) buys a Vision Transformer (timm, torchvision, transformers)."""

ModelOpt = Annotated[str, typer.Option("--model", "-m", metavar="NAME",
                                       help="Alias (see `tomebench models`), any timm name, tv:ARCH[.WEIGHTS] "
                                       "(torchvision) or hf:ID (transformers).")]
ROpt = Annotated[
    Optional[str], typer.Option("--r", metavar="R",
                                help="r values: 16, 0,8,16, 0..24 or 0..24:4. Default: 0 to the model's full r.")
]
ScheduleOpt = Annotated[
    str,
    typer.Option(metavar="SCHEDULE",
                 help="constant, decreasing (2r down to 0), increasing (0 up to 2r), inflection:T (the authors' "
                 "schedule: T in [-1, 1], -1 decreasing, 1 increasing), inflection-exact:T (same line, total exactly "
                 "r x depth) or one r per block: 16,12,8,..."),
]
PropAttnOpt = Annotated[
    Optional[bool], typer.Option("--prop-attn/--no-prop-attn", help="Proportional attention. Default: the paper's.")
]
BatchOpt = Annotated[
    Optional[str],
    typer.Option(metavar="N[,N...]", help="Images per batch: 32, or several as --r takes them (1,8,32,128): every "
                 "configuration at every size, each paired with the unpatched model at that size. Default: 256 on "
                 "CUDA, 32 on CPU."),
]
CompileOpt = Annotated[
    Optional[str],
    # A value is required: Typer's bundled click has no options with an optional value (`--compile` alone).
    typer.Option("--compile", metavar="MODE",
                 help="torch.compile every configuration and the unpatched model (each its own compiled module, "
                 "static shapes) in this mode: default, max-autotune or reduce-overhead (CUDA graphs on GPU). "
                 "Compile time goes to compile_s, never into throughput. Default: eager."),
]
LatencyOpt = Annotated[
    bool, typer.Option("--latency", help="Also time >= 100 single-image calls: latency_ms_p50/p90/p99 and "
                       "latency_speedup (at p50).")
]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto (cuda if available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[Optional[str], typer.Option(metavar="DTYPE",
                                                 help="fp32, fp16 or bf16 (autocast). Default: fp16 on CUDA, fp32 "
                                                 "on CPU.")]
DataOpt = Annotated[
    Optional[str],
    typer.Option(metavar="DATA", help="synthetic (throughput only), demo (the digits test split) or an image folder. "
                 "Default: demo for the demo model, else synthetic."),
]
LabelsOpt = Annotated[Optional[Path], typer.Option(metavar="FILE",
                                                   help="Labels for a flat image folder: one per line, or name,label.")]
LimitOpt = Annotated[Optional[int], typer.Option(metavar="N",
                                                 help="Evaluate a class-balanced, deterministic subset of N images.")]
PretrainedOpt = Annotated[bool, typer.Option("--pretrained/--no-pretrained", help="Load pretrained weights via timm.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(metavar="FILE",
                                                       help="Local .safetensors/.pth weights to load instead.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE.csv",
                                                help="CSV to write. Default: results/<command>-<model>.csv")]
# The defaults are the device's TimingPlan and sweep's worker count (a test holds this text to them).
RepeatsOpt = Annotated[
    Optional[int], typer.Option(metavar="N", help="Timed repeats per configuration. Default: 7 on CPU, 10 on CUDA.")
]
WorkersOpt = Annotated[
    Optional[int], typer.Option(metavar="N", help="DataLoader workers for the accuracy pass. Default: the number of "
                                "CPU cores, at most 4.")
]
MaxRetimeOpt = Annotated[
    int, typer.Option(metavar="N", help="Time a group again, up to N times, while one of its rows has a p10-p90 "
                      "spread above 10% of its median; the quietest attempt is kept. 0: never.")
]


def _fail(exc: TomebenchError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


class _RichProgress:
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


def _run(spec: SweepSpec, out: Path, resume: bool = False, figure=None, executor=None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tomebench import plots
    from tomebench.journal import Journal, sidecar
    from tomebench.sweep import run_sweep

    figure = figure or plots.main_figure
    journal = Journal(out, resume)
    columns = (TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _signals_as_interrupts() as received:
        try:
            with Progress(*columns, console=console, transient=False) as bar:
                measured = run_sweep(spec, _RichProgress(bar), journal, executor)
        except KeyboardInterrupt:
            raise _interrupted(journal, out, received[-1] if received else signal.SIGINT) from None
    if not measured and not journal.resumed:
        raise TomebenchError("nothing was measured")
    if not measured:
        console.print(f"all {len(journal.planned)} configurations are already in {out}; nothing to measure")
    elif journal.resumed:
        console.print(f"resumed: {journal.resumed} configuration(s) kept from {out}, {len(measured)} measured now")
    frame = read_csv(out)
    if len(frame) <= SUMMARY_ROWS:
        console.print(_summary(frame))
    else:
        console.print(f"{len(frame)} rows, {int(frame['error'].notna().sum())} with an error (too many to list)")
    console.print(f"wrote {out} (settings and raw repeat times: {sidecar(out)})")
    stem = out.with_suffix("")
    by_batch = stem.with_name(f"{stem.name}-speedup-vs-batch")
    sizes = plots.batch_sizes(frame)
    try:
        remove_stale_temp_files([stem.with_suffix(".png"), stem.with_suffix(".svg"), by_batch.with_suffix(".png"),
                                 by_batch.with_suffix(".svg")])
        for path in plots.save(figure(plots.at_largest_batch(frame)), stem):
            console.print(f"wrote {path}")
        if len(sizes) > 1:
            for path in plots.save(plots.speedup_vs_batch(frame), by_batch):
                console.print(f"wrote {path}")
    except ValueError as exc:  # nothing plottable, e.g. every configuration failed
        errors.print(f"no plot: {exc}")
    except OSError as exc:  # a full disk: the rows are safe, say so rather than show a traceback
        raise TomebenchError(f"could not write the plot {stem}.png/.svg ({exc.strerror or exc}); the rows are saved "
                             f"in {out}") from None
    if frame["error"].notna().all():
        raise TomebenchError(f"every configuration failed; see the error column of {out}")


SUMMARY_ROWS = 60  # a longer CSV (a schedule search) is not printed row by row


def _ablation_report(out: Path) -> None:
    """The ablation's tables, one per factor, on the console and as Markdown next to the CSV."""
    from tomebench import ablate

    frame = read_csv(out)
    for table in ablate.tables(frame):
        shown = Table(title=table.title, title_justify="left")
        for name in (table.factor, "top-1", "img/s", "speedup"):
            shown.add_column(name, justify="left" if name == table.factor else "right")
        for line in table.lines:
            shown.add_row(f"[bold]{line.choice}[/] (default)" if line.default else line.choice,
                          line.error and "error" or _fmt(line.top1, ".2f"), _fmt(line.samples_per_sec),
                          _fmt(line.speedup, ".2f"))
        console.print(shown)
    try:
        report = write_text_atomic(out.with_suffix(".md"), ablate.to_markdown(frame))
    except OSError as exc:
        raise TomebenchError(f"could not write {out.with_suffix('.md')} ({exc.strerror or exc}); the rows are saved "
                             f"in {out}") from None
    console.print(f"wrote {report}")


@contextmanager
def _signals_as_interrupts():
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


def _interrupted(journal: Journal, out: Path, signum: int) -> typer.Exit:
    """Say what was kept and what was not, and exit as a process stopped by that signal would (128 + n)."""
    from tomebench.sweep import config_label

    missing = journal.missing()
    kept = len(journal.planned) - len(missing)
    labels = ", ".join(config_label(row) for row in missing)
    where = f"are in {out}" if out.exists() else "were saved"
    errors.print(
        f"[bold red]interrupted[/] ({signal.Signals(signum).name}): {kept} of {len(journal.planned)} configurations "
        f"{where}; not measured: {escape(labels)}. Run the same command with --resume to measure only those.",
        highlight=False, soft_wrap=True,
    )
    return typer.Exit(128 + signum)


def _fmt(value, spec: str = ".1f") -> str:
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    return format(value, spec)


def _summary(frame: pd.DataFrame) -> Table:
    """Speedup (with its p10-p90) first: it is paired within a timing group. A row's images/s is shown next to its
    own group's unpatched images/s, the only number it may be compared with."""
    import pandas as pd

    from tomebench.plots import speedup_bounds

    first = frame.iloc[0]
    several = frame["infer_batch_size"].nunique() > 1
    compiled = f" · compiled ({first['compile']})" if isinstance(first["compile"], str) else ""
    batch = "" if several else f" · batch {first['infer_batch_size']}"
    table = Table(title=f"{first['model']} · {first['device']} · {first['dtype']}{batch}{compiled}")
    # Batch, compile time and latency only when the CSV has them (a batch axis, --compile, --latency).
    extra = {"batch": several, "compile s": frame["compile_s"].notna().any(),
             "latency p50 ms": frame["latency_ms_p50"].notna().any()}
    for name in ("reducer", "r", *[k for k, shown in extra.items() if shown and k == "batch"], "speedup", "p10-p90",
                 "img/s", "unpatched img/s", "GFLOPs", "tokens", "top-1", "top-5",
                 *[k for k, shown in extra.items() if shown and k != "batch"]):
        table.add_column(name, justify="left" if name == "reducer" else "right", no_wrap=True)
    table.add_column("note / error", overflow="fold", min_width=20)
    low, high = speedup_bounds(frame)
    for row, p10, p90 in zip(frame.itertuples(index=False), low, high):
        reducer = row.reducer + (f" [{row.reducer_options}]" if isinstance(row.reducer_options, str) else "")
        tokens = None if pd.isna(row.tokens_final) else int(row.tokens_final)
        message = next((m for m in (row.error, row.note) if isinstance(m, str) and m), "")
        spread = "-" if pd.isna(p10) or pd.isna(p90) else f"{p10:.2f}-{p90:.2f}"
        cells = {"batch": str(row.infer_batch_size), "compile s": _fmt(row.compile_s),
                 "latency p50 ms": _fmt(row.latency_ms_p50, ".2f")}
        table.add_row(
            escape(reducer),
            str(row.r),
            *[cells[k] for k, shown in extra.items() if shown and k == "batch"],
            _fmt(row.speedup, ".2f"),
            spread,
            _fmt(row.infer_samples_per_sec),
            _fmt(row.baseline_samples_per_sec),
            _fmt(row.infer_gflops, ".3g"),
            _fmt(tokens, "d"),
            _fmt(row.top1, ".2f"),
            _fmt(row.top5, ".2f"),
            *[cells[k] for k, shown in extra.items() if shown and k != "batch"],
            escape(message),
        )
    return table


def _default_out(command: str, model: str) -> Path:
    return Path("results") / f"{command}-{model.replace('/', '_').replace(':', '_')}.csv"


OptionOpt = Annotated[
    Optional[list[str]],
    typer.Option("--opt", metavar="REDUCER.KEY=VALUE",
                 help="Reducer option REDUCER.KEY=VALUE, e.g. kmeans.iters=3 or prune.seed=1 (repeatable)."),
]


BaselineOpt = Annotated[
    Optional[Path], typer.Option(metavar="FILE.csv",
                                 help="After the run, check the CSV against this baseline (exit 1 on regression).")
]
AccTolOpt = Annotated[float, typer.Option(metavar="POINTS", help="Allowed top-1/top-5 drop, in absolute points.")]
SpeedupTolOpt = Annotated[float, typer.Option(metavar="FRACTION", help="Allowed relative speedup drop (0.1 = 10%).")]


ConfigOpt = Annotated[
    Optional[Path], typer.Option(metavar="FILE.toml",
                                 help="TOML file of these options (see configs/); flags given here override it.")
]
ModelArgOpt = Annotated[
    Optional[list[str]], typer.Option("--model-arg", metavar="KEY=VALUE",
                                      help="KEY=VALUE for timm.create_model (repeatable).")
]
SPEC_FIELDS = ("model", "schedule", "prop_attn", "device", "dtype", "data", "labels", "limit",
               "pretrained", "checkpoint", "repeats", "workers", "group_size", "max_retime", "compile", "latency")
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Keep the rows already in --out and measure only the missing configurations.")
]
ExecutorOpt = Annotated[
    str, typer.Option(metavar="EXECUTOR",
                      help="local (this machine) or ray (a Ray cluster; pip install 'tomebench[ray]').")
]
RayAddressOpt = Annotated[
    Optional[str], typer.Option(metavar="ADDRESS",
                                help="Ray cluster to join (ray://host:10001 or host:6379). Default: RAY_ADDRESS, "
                                "else a local Ray started for the run.")
]
GroupOpt = Annotated[
    int,
    typer.Option(metavar="N",
                 help="Configurations timed together (interleaved with the unpatched model) and evaluated in one "
                 "data pass; each group's rows are saved as it finishes. 0: all in one group."),
]


def _measure(ctx: typer.Context, command: str, params: dict) -> None:
    """What sweep and compare share: options (config file, then flags), the engine, CSV, table, plot, check."""
    from tomebench import ablate
    from tomebench import schedule_search as search
    from tomebench.sweep import SweepSpec, parse_batch_sizes, parse_key_values, parse_reducer_options

    try:
        params = _with_config(ctx, params)
        plan: dict = {}
        if command == "ablate":
            r = params["r"]
            if r is not None and not (isinstance(r, int) or str(r).strip().isdigit()):
                raise UsageError(f"ablate takes one r, a whole number >= 0; got {r!r}")
            r = None if r is None else int(r)  # a config file's r arrives as text
            plan = dict(configs=ablate.plan(r), group_size=0)  # one group: one pass, all interleaved
        elif command == "schedules":
            plan = dict(configs=search.plan(params["samples"], params["target_speedup"], params["seed"]))
        else:
            plan = dict(
                reducers=(params["reducer"],) if command == "sweep" else _names(params["reducers"]),
                r=None if params["r"] is None else parse_r_spec(params["r"]),
                reducer_options=parse_reducer_options(params["opt"] or []),
            )
        batch = params.get("batch_size")
        if batch is not None:
            sizes = parse_batch_sizes(str(batch))
            plan["batch_size"] = sizes[0] if len(sizes) == 1 else sizes  # one size stays a number, as before
        spec = SweepSpec(
            model_kwargs={k: v for k, v in (parse_key_values(params["model_arg"] or [], "--model-arg"))},
            **{name: params[name] for name in SPEC_FIELDS if name in params},
            **plan,
        )
        baseline = params.get("baseline")
        if baseline is not None:
            tolerances = Tolerances(acc=params["acc_tol"], speedup=params["speedup_tol"])  # bad ones fail now
            try:
                read_csv(baseline)  # an unusable baseline fails now, not after the sweep
            except TomebenchError as exc:
                raise UsageError(f"--baseline: {exc}") from None
        out = params["out"] or _default_out(command, spec.model)
        check_outputs(sweep_outputs(out, report=command == "ablate"),
                      inputs=None if baseline is None else {"the --baseline CSV": baseline})
        figure = {"schedules": search.figure}.get(command)
        _run(spec, out, params["resume"], figure, _executor(params))
        if command == "ablate":
            _ablation_report(out)
        if baseline is not None:
            _check(out, baseline, DEFAULT_METRICS, tolerances, report=None, as_json=False)
    except TomebenchError as exc:
        raise _fail(exc) from None


def _executor(params: dict):
    """None (measure here) or a RayExecutor for --executor ray."""
    kind = params.get("executor") or "local"
    if kind == "local":
        if params.get("ray_address"):
            raise UsageError("--ray-address needs --executor ray")
        return None
    if kind != "ray":
        raise UsageError(f"unknown --executor {kind!r}: use local or ray")
    from tomebench.distributed import RayExecutor, import_ray

    import_ray()  # says how to install it, before anything is measured
    return RayExecutor(address=params.get("ray_address"))


def _with_config(ctx: typer.Context, params: dict) -> dict:
    """Fill options from --config wherever the command line did not set them."""
    if params.get("config") is None:
        return params
    options, _ = load_config(params["config"], allowed=set(params) | {"model_kwargs"})
    if "model_kwargs" in options:
        options["model_arg"] = options.pop("model_kwargs")
    merged = dict(params)
    for key, value in options.items():
        # By name: typer may bundle its own click, whose ParameterSource is a different enum class.
        source = ctx.get_parameter_source(key)
        if getattr(source, "name", None) != "COMMANDLINE":
            merged[key] = value
    return merged


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _check(current: Path, baseline: Path, metrics, tolerances: Tolerances, report: Path | None, as_json: bool):
    if report is not None:
        check_writable(report, "--report")
    result = check_csv(read_csv(current), read_csv(baseline), tuple(metrics), tolerances)
    if report is not None:
        write_text_atomic(report, to_markdown(result, str(current), str(baseline)))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(_check_table(result))
        console.print(_check_verdict(result))
    if not result.passed:
        raise typer.Exit(1)


def _check_table(result: CheckResult) -> Table:
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
        for status, style in (("regressed", "bold red"), ("unmeasured", "bold red"), ("not comparable", "bold red"),
                              ("improved", "green")):
            hit = [f"{f.metric} {change(f)}" if status in ("regressed", "improved") else f.metric
                   for f in found.values() if f.status == status]
            if hit:
                statuses.append(f"[{style}]{status}: {escape(', '.join(hit))}[/]")
        table.add_row(escape(config), *cells, "; ".join(statuses) or "ok")
    blank = ["-"] * len(result.metrics)
    for configs, status in ((result.errors, "[bold red]error[/]"),
                            (result.known_errors, "error (in the baseline too)")):
        for config in configs:
            table.add_row(escape(config), *blank, status)
    for summary, status in ((result.missing_in_current_summary, "[bold red]missing now[/]"),
                            (result.missing_in_baseline_summary, "new")):
        if summary:
            table.add_row(escape(summary), *blank, status)
    return table


def _check_cell(finding) -> str:
    if finding is None:
        return "-"
    if finding.status == "unmeasured":
        return f"{finding.baseline:.4g} -> unmeasured"
    return f"{finding.baseline:.4g} -> {finding.current:.4g}"


def _check_verdict(result: CheckResult) -> str:
    incomparable = sum(f.status == "not comparable" for f in result.findings)
    regressions = len(result.regressions) - incomparable
    parts = [f"{regressions} regression(s)"] + ([f"{incomparable} not comparable"] if incomparable else []) + [
             f"{len(result.improvements)} improvement(s)",
             f"{len(result.errors)} error row(s)", f"{len(result.missing_in_current)} missing",
             f"{len(result.missing_in_baseline)} new"]
    head = "[bold green]check passed[/]" if result.passed else "[bold red]check failed[/]"
    return f"{head}: {', '.join(parts)}"


@app.command("check", cls=_Command, short_help="Hold a CSV to a baseline: exit 1 on regression, 2 on unusable input.")
def check_command(
    current: Annotated[Path, typer.Argument(metavar="CURRENT.csv", help="A CSV written by tomebench.")],
    baseline: Annotated[Path, typer.Option(metavar="FILE.csv", help="The baseline CSV to hold it to.")],
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    gflops_tol: Annotated[float, typer.Option(metavar="FRACTION",
                                              help="Allowed relative GFLOPs increase.")] = Tolerances.gflops,
    metric: Annotated[
        Optional[list[str]], typer.Option(metavar="METRIC",
                                          help=f"Metric to hold (repeatable): {', '.join(METRICS)}. Default: all.")
    ] = None,
    report: Annotated[Optional[Path], typer.Option(metavar="FILE.md",
                                                   help="Write a Markdown summary (for a PR comment).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Check CURRENT.csv against a baseline: exit 0 when all holds, 1 on regression, 2 on unusable input."""
    try:
        tolerances = Tolerances(acc=acc_tol, speedup=speedup_tol, gflops=gflops_tol)
        _check(current, baseline, tuple(metric or DEFAULT_METRICS), tolerances, report, as_json)
    except TomebenchError as exc:
        raise _fail(UsageError(str(exc))) from None


@app.command(short_help="Sweep r for one reducer: speedup, GFLOPs, tokens, accuracy.")
def sweep(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    r: ROpt = None,
    reducer: Annotated[str, typer.Option(metavar="NAME",
                                         help="Registered reducer (see `tomebench reducers`).")] = "tome",
    schedule: ScheduleOpt = "constant",
    prop_attn: PropAttnOpt = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    opt: OptionOpt = None,
    baseline: BaselineOpt = None,
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    resume: ResumeOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sweep r for one reducer: throughput (interleaved with the unpatched model), GFLOPs, accuracy."""
    params = dict(locals())
    params.pop("ctx")
    _measure(ctx, "sweep", params)


@app.command(short_help="Compare reducers at the same r, in one interleaved run.")
def compare(
    ctx: typer.Context,
    reducers: Annotated[str, typer.Option(metavar="NAMES", help="Comma-separated reducers, compared in one run.")] = (
        "tome,prune,attn-prune,kmeans"
    ),
    model: ModelOpt = "demo",
    r: ROpt = None,
    schedule: ScheduleOpt = "constant",
    prop_attn: PropAttnOpt = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    opt: OptionOpt = None,
    baseline: BaselineOpt = None,
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    resume: ResumeOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compare reducers at the same r: one run, interleaved timing, one data pass, one CSV and Pareto plot."""
    params = dict(locals())
    params.pop("ctx")
    _measure(ctx, "compare", params)


@app.command("ablate", short_help="The paper's Table 1: every ToMe option varied alone.")
def ablate_command(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    r: Annotated[Optional[int], typer.Option("--r", metavar="R",
                                             help="Tokens merged per block. Default: the model's full r.")] = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    resume: ResumeOpt = False,
    max_retime: MaxRetimeOpt = 2,
    config: ConfigOpt = None,
) -> None:
    """The paper's Table 1: every ToMe option varied alone from the defaults, in one run (interleaved timing, one
    data pass). Writes the CSV, a Markdown table per factor (<out>.md) and the speed-accuracy plot."""
    params = dict(locals())
    params.pop("ctx")
    if r is not None and r < 0:
        raise _fail(UsageError(f"--r must be >= 0, got {r}"))
    _measure(ctx, "ablate", params)


@app.command("schedules", short_help="The paper's schedule search (Figures 2 and 7).")
def schedules_command(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    samples: Annotated[int, typer.Option(metavar="N", help="Random per-block schedules to measure.")] = 100,
    target_speedup: Annotated[
        float, typer.Option(metavar="X", help="Centre of the search: the constant r whose GFLOPs drop by this factor.")
    ] = 1.5,
    seed: Annotated[int, typer.Option(metavar="N",
                                      help="Seed of the schedule sampler (same seed, same schedules).")] = 0,
    batch_size: BatchOpt = None,
    compile: CompileOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    resume: ResumeOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    config: ConfigOpt = None,
) -> None:
    """The paper's schedule search (Figures 2 and 7): random per-block schedules around a target speedup, measured
    against the constant, decreasing and increasing ones; plots them and the average r per block of the best."""
    params = dict(locals())
    params.pop("ctx")
    _measure(ctx, "schedules", params)


def _figures():
    """What `plot` draws: name -> figure builder (a function, so matplotlib is imported only when drawing)."""
    from tomebench import plots

    one = plots.at_largest_batch  # one point per configuration: a CSV with several batch sizes shows the largest
    return {
        "speed-accuracy": lambda frame: plots.speed_accuracy(one(frame)),
        "top1-vs-r": lambda frame: plots.metric_vs_r(one(frame), "top1", "top-1 accuracy (%)"),
        "speedup-vs-r": lambda frame: plots.metric_vs_r(one(frame), "speedup", plots.SPEEDUP_LABEL),
        "gflops-vs-r": lambda frame: plots.metric_vs_r(one(frame), "infer_gflops", "GFLOPs per image"),
        "speedup-vs-batch": plots.speedup_vs_batch,
    }


@app.command(cls=_Command, short_help="Redraw the figures of a CSV.")
def plot(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="A CSV written by tomebench.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", metavar="STEM",
                                     help="File name stem; default: the CSV's path without .csv")
    ] = None,
) -> None:
    """Redraw the figures of a CSV: speed vs accuracy, top-1 vs r, speedup vs r, GFLOPs vs r (at the largest batch
    size when the CSV has several) and speedup vs batch size (when it has several); PNG and SVG."""
    from tomebench import plots

    try:
        frame = read_csv(csv_path)
        stem = (out or csv_path).with_suffix("")
        # As plots.save names them: a dot in the stem would make every figure the same file.
        drawers = _figures()
        figures = {f"the {kind} {ext[1:].upper()}": stem.with_name(f"{stem.name}-{kind}").with_suffix(ext)
                   for kind in drawers for ext in (".png", ".svg")}
        check_outputs(figures, "-o", {"the CSV": csv_path}, "give a file name stem without a dot", out or csv_path)
        written = 0
        for kind, draw in drawers.items():
            try:
                figure = draw(frame)
            except ValueError as exc:  # e.g. no accuracy in a throughput-only CSV
                console.print(f"skipped {kind}: {exc}")
                continue
            for path in plots.save(figure, stem.with_name(f"{stem.name}-{kind}")):
                console.print(f"wrote {path}")
            written += 1
        if not written:
            raise TomebenchError(f"{csv_path} has no measured row to plot")
    except TomebenchError as exc:
        raise _fail(exc) from None
    except OSError as exc:  # a full disk while saving a figure
        raise _fail(TomebenchError(f"could not write a plot ({exc.strerror or exc})")) from None


@app.command(cls=_Command, short_help="Draw which patches were merged into the same token.")
def visualize(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files to show.")],
    model: ModelOpt = "demo",
    r: Annotated[Optional[int], typer.Option("--r", metavar="R",
                                             help="Tokens removed per block. Default: the model's full r.")] = None,
    reducer: Annotated[str, typer.Option(metavar="NAME", help="Registered reducer.")] = "tome",
    layers: Annotated[
        Optional[str], typer.Option(metavar="BLOCKS",
                                    help="Blocks after which to show the groups, e.g. 2,4,8. Default: the last.")
    ] = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    opt: OptionOpt = None,
    alpha: Annotated[
        float, typer.Option(metavar="A", help="Opacity of the group colours over the image: 0 shows only the "
                            "image, 1 only the groups.")
    ] = 0.4,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE.png",
                                      help="Figure file (PNG; an SVG is written next to it).")] = Path(
        "results/visualize.png"
    ),
) -> None:
    """Draw which patches each reducer merged (or dropped) into the same token, over the image, translucently
    (--alpha) so the image stays visible."""
    from tomebench import plots
    from tomebench import visualize as vis
    from tomebench.reducers import REDUCERS
    from tomebench.sweep import check_reducer_options, parse_reducer_options

    try:
        if not 0 <= alpha <= 1:
            raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
        options = parse_reducer_options(opt or [])
        name = REDUCERS.canonical(reducer)
        check_reducer_options(options)
        check_writable(out)
        blocks = None if layers is None else parse_r_values(layers)
        fig = vis.draw(images, model, r, name, blocks, pretrained, checkpoint, options.get(name, {}), alpha)
        for path in plots.save(fig, out.with_suffix("")):
            console.print(f"wrote {path}")
    except TomebenchError as exc:
        raise _fail(exc) from None
    except OSError as exc:  # a full disk while saving the figure
        raise _fail(TomebenchError(f"could not write {out} ({exc.strerror or exc})")) from None


@app.command("paper-baseline", cls=_Command,
             short_help="Published figures in paper configs -> baseline CSVs for check.")
def paper_baseline(
    configs: Annotated[list[Path], typer.Argument(metavar="CONFIG", help="Config files with a [paper] table.")],
    out_dir: Annotated[Path, typer.Option(metavar="FOLDER", help="Folder for one baseline CSV per config.")] = Path(
        "results/baselines/paper"
    ),
) -> None:
    """Turn the published figures in paper configs into baseline CSVs for `tomebench check`."""
    from tomebench.paper import paper_rows
    from tomebench.results import write_csv

    try:
        for path in configs:
            target = out_dir / f"{path.stem}.csv"
            check_writable(target)
            write_csv(paper_rows(path), target)
            console.print(f"wrote {target}")
    except TomebenchError as exc:
        raise _fail(exc) from None


@app.command(short_help="List the model families and the names each takes (timm, tv:, hf:).")
def models() -> None:
    """List each model family and the names it takes: timm aliases (any timm name works too), torchvision ViTs
    with their weights (tv:), transformers ViT/DeiT classifiers (hf:)."""
    for entry in ADAPTERS:
        table = Table(title=f"{entry.name}: {entry.obj.summary}")
        table.add_column("name", no_wrap=True)
        table.add_column("resolves to", no_wrap=True)
        table.add_column("what", overflow="fold")
        for row in entry.obj.catalog():
            table.add_row(*row)
        console.print(table)


@app.command(short_help="List the reducers, their options, defaults and choices.")
def reducers() -> None:
    """List the registered reducers with their options (for --opt REDUCER.KEY=VALUE): each option's default and
    its allowed values, read from the reducer function's signature."""
    from tomebench.reducer_options import options_of
    from tomebench.reducers import REDUCERS

    # One block per reducer, one option per line, never folded: an option is something to copy into --opt.
    console.print("Registered reducers; options as --opt REDUCER.KEY=VALUE, default first, then the choices.\n",
                  highlight=False, soft_wrap=True)
    for entry in REDUCERS:
        aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
        console.print(f"[bold]{entry.name}[/bold]{escape(aliases)}: {escape(entry.description)}", highlight=False,
                      soft_wrap=True)
        for option in options_of(entry.obj):
            console.print(f"    {escape(option.describe())}", highlight=False, soft_wrap=True)
        console.print()


@app.command("train-demo", short_help="Re-train the bundled demo ViT (about 3 minutes on CPU).")
def train_demo(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to save the weights.")] = Path(
        "results/demo_vit.safetensors"
    ),
    epochs: Annotated[int, typer.Option(metavar="N", help="Training epochs.")] = 60,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed for init, shuffling and augmentation.")] = 0,
) -> None:
    """Re-train the bundled demo ViT on the digits train split (about 3 minutes on 2 quiet CPU cores)."""
    from tomebench.demo.train import train_demo as train

    # Not the bundled file by default: a short trial run must not replace the model `make demo` ships with.
    target = out
    try:
        if epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {epochs}: the demo model would be saved untrained")
        check_writable(target)
    except TomebenchError as exc:
        raise _fail(exc) from None
    with console.status(f"training the demo ViT for {epochs} epochs"):
        result = train(target, epochs=epochs, seed=seed)
    console.print(
        f"wrote {target}: test top-1 {result['test_top1']:.2f}% after {result['train_time_s']:.0f} s "
        f"({result['epochs']} epochs, seed {result['seed']})"
    )


