"""The commands that list what tomebench knows: `models` (the families and the names each takes) and `reducers`
(each registered reducer with its options)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from tomebench.adapters import FAMILIES
from tomebench.cli.app import app, console


@app.command(short_help="List the model families and the names each takes (timm, tv:, hf:).")
def models() -> None:
    """List each model family and the names it takes: timm aliases (any timm name works too), torchvision ViTs
    with their weights (tv:), transformers ViT/DeiT classifiers (hf:)."""
    for entry in FAMILIES:
        table = Table(title=f"{entry.name}: {entry.obj.summary}")
        table.add_column("name", no_wrap=True)
        table.add_column("resolves to", no_wrap=True)
        table.add_column("what", overflow="fold")
        for row in entry.obj.catalog():
            table.add_row(*row)
        console.print(table)


@app.command(short_help="List the reducers, their options, defaults and choices.")
def reducers() -> None:
    """List the registered reducers (built-ins and plug-ins) with what each declares (kind, where it acts, what it
    reads, its budget knob, where its rules come from) and its options (for --opt REDUCER.KEY=VALUE): each option's
    default and its allowed values, read from the reducer function's signature."""
    from tomebench.reducers import PLUGIN_ERRORS, REDUCERS

    # One block per reducer, one option per line, never folded: an option is something to copy into --opt.
    console.print(
        "Registered reducers; options as --opt REDUCER.KEY=VALUE, default first, then the choices.\n",
        highlight=False,
        soft_wrap=True,
    )
    for entry in REDUCERS:
        aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
        spec = entry.obj
        console.print(
            f"[bold]{entry.name}[/bold]{escape(aliases)}: {escape(entry.description)}", highlight=False, soft_wrap=True
        )
        if spec.kind != "none":
            needs = ", ".join(sorted(spec.needs)) or "nothing"
            console.print(
                f"    {spec.kind}, acts {spec.acts}, reads {needs}, knob {spec.knob}, proportional "
                f"attention {'on' if spec.prop_attn else 'off'} by default",
                highlight=False,
                soft_wrap=True,
            )
            if spec.source:
                console.print(f"    from {escape(spec.source)}", highlight=False, soft_wrap=True)
        for option in spec.options:
            console.print(f"    {escape(option.describe())}", highlight=False, soft_wrap=True)
        console.print()
    for line in PLUGIN_ERRORS:
        console.print(f"note: {escape(line)}", highlight=False, soft_wrap=True)
