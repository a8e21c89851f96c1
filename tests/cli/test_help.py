"""Help, version and start-up: the golden help text, help without type metavars, the engine's defaults stated,
and commands that answer without importing torch."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import (
    GOLDEN,
    invoke,
    run_python,
)

GOLDEN_HELP = GOLDEN / "sweep-help.txt"


def help_text(*args: str) -> str:
    # A fixed width: click wraps help to the terminal, and a golden text must not depend on who runs the test.
    result = invoke(*args, "--help", env={"COLUMNS": "100"}, terminal_width=100, prog_name="tomebench")
    assert result.exit_code == 0, result.output
    return result.output


def test_sweep_help_matches_the_golden_text():
    # Regenerate deliberately after changing an option: tests/golden/sweep-help.txt is what a user reads.
    assert help_text("sweep") == GOLDEN_HELP.read_text()


@pytest.mark.parametrize(
    "command",
    ["", "sweep", "compare", "ablate", "schedules", "check", "plot", "visualize", "paper-baseline", "train-demo"],
)
def test_help_keeps_brackets_and_shows_no_type_metavars(command):
    text = help_text(*([command] if command else []))
    for odd in ("<bool>", "<str>", "<int>", "<float>", "<path>", "list[", "<list"):
        assert odd not in text, (odd, text)
    if command in ("sweep", "compare"):
        assert "pip install 'tomebench[ray]'" in " ".join(text.split())
        assert "Default: 7 on CPU, 10 on CUDA." in " ".join(text.split())
    if command == "paper-baseline":
        assert "a [paper] table" in text


def test_top_level_command_list_is_whole_sentences():
    lines = help_text().split("Commands:")[1].splitlines()
    assert lines and not any(line.rstrip().endswith("...") for line in lines), lines


def test_help_states_the_engine_defaults():
    from tomebench.engine.accuracy import workers
    from tomebench.engine.spec import RunSpec
    from tomebench.measure.timing import NOISY_SPREAD, TimingPlan

    text = " ".join(help_text("sweep").split())
    cuda = TimingPlan.for_device(torch.device("cuda")).repeats
    assert f"Default: {TimingPlan().repeats} on CPU, {cuda} on CUDA" in text
    assert f"spread above {NOISY_SPREAD:.0%} of its median" in text
    assert f"[default: {RunSpec().max_retime}]" in text
    assert workers(None) == min(4, __import__("os").cpu_count() or 1) and "at most 4" in text


def test_version():
    from tomebench import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"tomebench {__version__}"


def test_help_models_and_version_import_neither_torch_nor_timm_nor_matplotlib():
    heavy = "[m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules]"
    for args in (["--help"], ["models"], ["--version"]):
        code = (
            f"import sys\nfrom tomebench import cli\ntry:\n    cli.app({args!r})\nexcept SystemExit:\n    pass\n"
            f"print({heavy})"
        )
        proc = run_python(code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == "[]", args
