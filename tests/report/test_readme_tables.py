"""The README's tables of measured numbers are the committed CSVs' numbers: regenerated, nothing changes."""

from __future__ import annotations

from benchmarks import readme_tables


def test_every_generated_table_in_the_readme_equals_its_csv():
    text = readme_tables.README.read_text()
    for name in readme_tables.TABLES:
        assert readme_tables.pattern(name).search(text), f"the README has no generated table {name}"
    assert readme_tables.render(text) == text, "run benchmarks/readme_tables.py --write"
