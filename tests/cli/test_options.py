"""What the command line hands the engine: options parsed once, at the edge, into the RunSpec."""

from __future__ import annotations

import pytest

from tests.helpers import (
    invoke,
)
from tomebench.cli.parse import batch_sizes as parse_batch_sizes
from tomebench.engine.spec import ReducerChoice, RunSpec
from tomebench.errors import UsageError


def test_spec_reaching_the_engine(engine):
    result = invoke(
        "sweep",
        "--model",
        "vit_b",
        "--r",
        "0..24:8",
        "--schedule",
        "decreasing",
        "--no-prop-attn",
        "--dtype",
        "bf16",
        "--limit",
        "50",
    )
    assert result.exit_code == 0, result.output
    spec = engine["spec"]
    assert (spec.model, spec.r, spec.schedule.label, spec.prop_attn, spec.dtype, spec.limit) == (
        "vit_b",
        (0, 8, 16, 24),
        "decreasing",
        False,
        "bf16",
        50,
    )
    assert spec.pretrained is True and spec.data is None and spec.device == "auto"
    assert str(engine["out"]) == "results/sweep-vit_b.csv"


def test_reducer_options_reach_the_engine(engine, tmp_path):
    result = invoke(
        "compare",
        "--model",
        "test_vit",
        "--reducers",
        "tome, prune,k-means",
        "--r",
        "0,4",
        "--opt",
        "kmeans.iters=1",
        "--opt",
        "random-prune.seed=7",
        "--out",
        str(tmp_path / "c.csv"),
    )
    assert result.exit_code == 0, result.output
    spec = engine["spec"]
    assert spec.reducers == (
        ReducerChoice("tome"),
        ReducerChoice("prune", (("seed", 7),)),
        ReducerChoice("kmeans", (("iters", 1),)),
    ) and spec.r == (0, 4)
    assert engine["out"] == tmp_path / "c.csv"


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "must be >= 1"), ("a", "bad --batch-size"), ("1..1000", "at most 64"), ("8..1", "bad --batch-size")],
)
def test_bad_batch_sizes(text, message):
    with pytest.raises(UsageError, match=message):
        RunSpec(batch_sizes=parse_batch_sizes(text))
