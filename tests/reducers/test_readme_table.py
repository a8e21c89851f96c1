"""The README's reducer table comes from the registry: every registered reducer and its options are in it."""

from __future__ import annotations

from tests.helpers import REPO
from tomebench.reducers import REDUCERS

README = REPO / "README.md"


def test_the_readme_lists_every_registered_reducer_with_its_options():
    text = README.read_text()
    table = text[text.index("| name (aliases) |") :].split("\n\n")[0]
    for entry in REDUCERS:
        if entry.obj.kind == "none":
            continue
        row = next((line for line in table.splitlines() if line.startswith(f"| `{entry.name}`")), None)
        assert row is not None, f"{entry.name} is registered but not in the README's reducer table"
        for option in entry.obj.options:
            assert f"`{option.name}`" in row, (entry.name, option.name)
