"""The `tomebench` Typer application, its consoles, and the one way a TomebenchError leaves a command: one line on
stderr and its exit code."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tomebench import __version__
from tomebench.errors import TomebenchError

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


class Command(typer.core.TyperCommand):
    """A command whose arguments are listed by their metavar alone: typer would append its idea of the type
    (`IMAGE <list[Path]>`), which says less than the name does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = lambda ctx: None


def fail(exc: TomebenchError) -> typer.Exit:
    """The exit of a command that failed: its one-line message on stderr, its exit code."""
    errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


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
