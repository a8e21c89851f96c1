"""The `tomebench` command line. Commands are thin: they take their options by name, build the typed run spec
(`spec`, from text parsed in `parse`), call the engine (`run`), and render through `tomebench.report`.

Every TomebenchError becomes one line on stderr and its exit code; nothing measured is thrown away by a failure
that can be caught before measuring (the output path is checked first). torch, timm and matplotlib are imported
inside the commands that use them, so `--help`, `models` and `--version` start in well under a second.
"""

from tomebench.cli import measure, tools, listing  # noqa: F401, I001  (each registers its commands, in help order)
from tomebench.cli.app import app
from tomebench.cli.listing import models, reducers
from tomebench.cli.measure import ablate_command, compare, schedules_command, sweep
from tomebench.cli.tools import check_command, paper_baseline, plot, train_demo, visualize

__all__ = [
    "ablate_command",
    "app",
    "check_command",
    "compare",
    "models",
    "paper_baseline",
    "plot",
    "reducers",
    "schedules_command",
    "sweep",
    "train_demo",
    "visualize",
]
