"""`tomebench models` and `tomebench reducers`: every registered reducer listed with its aliases and its options
(defaults and choices read from the reducer's signature)."""

from __future__ import annotations

from tests.helpers import (
    invoke,
)
from tomebench.reducers import REDUCERS


def test_models_and_reducers_listings():
    result = invoke("models")
    assert result.exit_code == 0
    assert "vit_base_patch16_224.augreg_in21k_ft_in1k" in result.output and "deit_b_dist" in result.output
    result = invoke("reducers")
    assert result.exit_code == 0
    assert "tome" in result.output and "bipartite" in result.output


def test_reducers_list_options_with_defaults_and_choices_from_signatures():
    result = invoke("reducers")
    assert result.exit_code == 0, result.output
    for entry in REDUCERS:
        for option in entry.obj.options:
            assert option.describe() in result.output, option
    tome = {o.name: o for o in REDUCERS.get("tome").options}
    assert tome["distance"].describe() == "distance=cosine (cosine|dot|euclidean)"
    assert "iters=5 (int, 0..100)" in result.output


def test_reducers_lists_every_reducer_with_its_aliases():
    result = invoke("reducers")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # The built-in aliases a user may already type (the registry below checks every reducer, plug-ins included).
    for name, alias in (
        ("tome", "bipartite"),
        ("prune", "random-prune"),
        ("attn-prune", "attention-prune"),
        ("kmeans", "k-means"),
    ):
        assert alias in REDUCERS.entry(name).aliases, (name, alias)
    for entry in REDUCERS:
        # One line per reducer, "name (also alias): ..." (main's be18464 dropped the table this test read).
        row = [line for line in lines if line.startswith(f"{entry.name} ") or line.startswith(f"{entry.name}:")]
        assert len(row) == 1, result.output
        if entry.aliases:
            assert f"(also {', '.join(entry.aliases)})" in row[0], row[0]
