"""The commands around measuring: `check` (the regression gate), `plot` (redraw a CSV's figures), `visualize`
(which patches each token holds), `paper-baseline` (published figures as baselines) and `train-demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tomebench.cli.app import Command, app, console, fail
from tomebench.cli.options import AccTolOpt, CheckpointOpt, ModelOpt, OptionOpt, PretrainedOpt, SpeedupTolOpt
from tomebench.cli.run import check as run_check
from tomebench.errors import TomebenchError, UsageError
from tomebench.report.tolerances import DEFAULT_METRICS, METRICS, Tolerances
from tomebench.results.csv import read_csv
from tomebench.results.files import check_outputs, check_writable
from tomebench.schedule import parse_r_spec


@app.command("check", cls=Command, short_help="Hold a CSV to a baseline: exit 1 on regression, 2 on unusable input.")
def check_command(
    current: Annotated[Path, typer.Argument(metavar="CURRENT.csv", help="A CSV written by tomebench.")],
    baseline: Annotated[Path, typer.Option(metavar="FILE.csv", help="The baseline CSV to hold it to.")],
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    gflops_tol: Annotated[
        float, typer.Option(metavar="FRACTION", help="Allowed relative GFLOPs increase.")
    ] = Tolerances.gflops,
    metric: Annotated[
        Optional[list[str]],
        typer.Option(metavar="METRIC", help=f"Metric to hold (repeatable): {', '.join(METRICS)}. Default: all."),
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option(metavar="FILE.md", help="Write a Markdown summary (for a PR comment).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Check CURRENT.csv against a baseline: exit 0 when all holds, 1 on regression, 2 on unusable input."""
    try:
        tolerances = Tolerances(acc=acc_tol, speedup=speedup_tol, gflops=gflops_tol)
        run_check(current, baseline, tuple(metric or DEFAULT_METRICS), tolerances, report, as_json)
    except TomebenchError as exc:
        raise fail(UsageError(str(exc))) from None


@app.command(cls=Command, short_help="Redraw the figures of a CSV.")
def plot(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="A CSV written by tomebench.")],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="STEM", help="File name stem; default: the CSV's path without .csv"),
    ] = None,
) -> None:
    """Redraw the figures of a CSV: speed vs accuracy, top-1 vs r, speedup vs r, GFLOPs vs r (at the largest batch
    size when the CSV has several) and speedup vs batch size (when it has several); PNG and SVG."""
    from tomebench.report import plots

    try:
        frame = read_csv(csv_path)
        _say_unplottable_cells(frame)
        stem = (out or csv_path).with_suffix("")
        # As plots.save names them: a dot in the stem would make every figure the same file.
        drawers = plots.figures()
        figures = {
            f"the {kind} {ext[1:].upper()}": stem.with_name(f"{stem.name}-{kind}").with_suffix(ext)
            for kind in drawers
            for ext in (".png", ".svg")
        }
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
        raise fail(exc) from None
    except OSError as exc:  # a full disk while saving a figure
        raise fail(TomebenchError(f"could not write a plot ({exc.strerror or exc})")) from None


def _say_unplottable_cells(frame) -> None:
    """A note per cell that is text or NaN/inf where a number belongs: the figures leave that point out, and the
    reader should know why it is missing rather than take it for unmeasured."""
    cells = [(p, c, "not a number") for p, c in frame.attrs.get("text_cells", ())]
    cells += [(p, c, "NaN or inf") for p, c in frame.attrs.get("nonfinite_cells", ())]
    for position, column, what in sorted(cells)[:5]:
        console.print(f"note: line {position + 2}: {column} is {what}; the figures leave that value out")
    if len(cells) > 5:
        console.print(f"note: {len(cells) - 5} more such cell(s)")


@app.command(cls=Command, short_help="Draw which patches were merged into the same token.")
def visualize(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files to show.")],
    model: ModelOpt = "demo",
    r: Annotated[
        Optional[int], typer.Option("--r", metavar="R", help="Tokens removed per block. Default: the model's full r.")
    ] = None,
    reducer: Annotated[str, typer.Option(metavar="NAME", help="Registered reducer.")] = "tome",
    layers: Annotated[
        Optional[str],
        typer.Option(metavar="BLOCKS", help="Blocks after which to show the groups, e.g. 2,4,8. Default: the last."),
    ] = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    opt: OptionOpt = None,
    alpha: Annotated[
        float,
        typer.Option(
            metavar="A", help="Opacity of the group colours over the image: 0 shows only the image, 1 only the groups."
        ),
    ] = 0.4,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE.png", help="Figure file (PNG; an SVG is written next to it).")
    ] = Path("results/visualize.png"),
) -> None:
    """Draw which patches each reducer merged (or dropped) into the same token, over the image, translucently
    (--alpha) so the image stays visible."""
    from tomebench.cli.parse import reducer_options
    from tomebench.patch import check_reducer_options
    from tomebench.reducers import REDUCERS
    from tomebench.report import plots
    from tomebench.studies import visualize as vis

    try:
        if not 0 <= alpha <= 1:
            raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
        options = {REDUCERS.canonical(k): v for k, v in reducer_options(opt or []).items()}
        name = REDUCERS.canonical(reducer)
        check_reducer_options(options)
        check_writable(out)
        blocks = None if layers is None else parse_r_spec(layers)  # a long range stays lazy: checked by its ends
        fig = vis.draw(images, model, r, name, blocks, pretrained, checkpoint, options.get(name, {}), alpha)
        for path in plots.save(fig, out.with_suffix("")):
            console.print(f"wrote {path}")
    except TomebenchError as exc:
        raise fail(exc) from None
    except OSError as exc:  # a full disk while saving the figure
        raise fail(TomebenchError(f"could not write {out} ({exc.strerror or exc})")) from None


@app.command("paper-baseline", cls=Command, short_help="Published figures in paper configs -> baseline CSVs for check.")
def paper_baseline(
    configs: Annotated[list[Path], typer.Argument(metavar="CONFIG", help="Config files with a [paper] table.")],
    out_dir: Annotated[Path, typer.Option(metavar="FOLDER", help="Folder for one baseline CSV per config.")] = Path(
        "results/baselines/paper"
    ),
) -> None:
    """Turn the published figures in paper configs into baseline CSVs for `tomebench check`."""
    from tomebench.results.csv import write_csv
    from tomebench.studies.paper import paper_rows

    try:
        for path in configs:
            target = out_dir / f"{path.stem}.csv"
            check_writable(target)
            write_csv(paper_rows(path), target)
            console.print(f"wrote {target}")
    except TomebenchError as exc:
        raise fail(exc) from None


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
        raise fail(exc) from None
    with console.status(f"training the demo ViT for {epochs} epochs"):
        result = train(target, epochs=epochs, seed=seed)
    console.print(
        f"wrote {target}: test top-1 {result['test_top1']:.2f}% after {result['train_time_s']:.0f} s "
        f"({result['epochs']} epochs, seed {result['seed']})"
    )
