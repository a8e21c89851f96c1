"""The typed run spec (every field checked when it is made, loose forms normalised, canonical reducer choices,
exact schedule labels), configurations switched while timing without any check, and what a row records of them."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from tomebench.engine.run import run_sweep
from tomebench.engine.setup import Setup
from tomebench.engine.spec import Config, ReducerChoice, RunSpec
from tomebench.engine.throughput import measure_throughput
from tomebench.errors import UsageError
from tomebench.reducers import ReducerSpec
from tomebench.schedule import parse_schedule


def test_switching_configurations_while_timing_checks_nothing(monkeypatch):
    spec = RunSpec(
        model="test_vit",
        pretrained=False,
        r=(2, 4),
        batch_sizes=2,
        device="cpu",
        data="synthetic",
        repeats=2,
        max_retime=0,
    )
    setup = Setup.build(spec)

    def refuse(*args, **kwargs):
        raise AssertionError("a configuration was checked again while timing")

    monkeypatch.setattr(ReducerSpec, "check", refuse)
    monkeypatch.setattr(sys.modules["tomebench.patch.plan"], "plan_patch", refuse)
    result = measure_throughput(setup, [0, 1, 2])
    assert all(t.error is None and len(t.step_times) == 2 for t in result.timings.values())


def test_rows_record_the_batch_asked_the_tokens_each_block_left_and_the_attention_that_ran():
    spec = RunSpec(
        model="test_vit2",
        pretrained=False,
        r=(4,),
        batch_sizes=(2,),
        device="cpu",
        data="synthetic",
        repeats=1,
        max_retime=0,
        reducers=("tome", ReducerChoice.of("attn-prune", {"score": "mean"})),
    )
    rows = {row.reducer: row for row in run_sweep(spec)}
    for row in rows.values():
        assert row.requested_batch_size == 2 == row.infer_batch_size and row.error is None
    depth = len(rows["none"].tokens_per_layer.split(","))
    assert rows["none"].tokens_per_layer == ",".join(["101"] * depth) and rows["none"].attn_impl == "fused"
    tome = [int(t) for t in rows["tome"].tokens_per_layer.split(",")]
    assert tome == [101 - 4 * (i + 1) for i in range(depth)] and tome[-1] == rows["tome"].tokens_final
    assert rows["tome"].attn_impl == "fused"  # ToMe's bias keeps SDPA fused
    assert rows["attn-prune"].attn_impl == "eager"  # attention received from every query: the matrix is built


def test_rows_of_torchvision_models_record_its_version():
    import torchvision

    spec = RunSpec(
        model="tv:vit_b_16",
        pretrained=False,
        r=(0,),
        batch_sizes=1,
        device="cpu",
        data="synthetic",
        repeats=1,
        max_retime=0,
        model_kwargs={"image_size": 32},
    )
    rows = run_sweep(spec)
    assert {row.torchvision for row in rows} == {torchvision.__version__} and {row.transformers for row in rows} == {
        None
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(repeats=0), "--repeats must be >= 1"),
        (dict(repeats=10**20), "--repeats 100000000000000000000 is absurd"),
        (dict(workers=-1), "--workers must be >= 0"),
        (dict(limit=0), "--limit must be >= 1"),
        (dict(group_size=-1), "--group-size must be >= 0"),
        (dict(max_retime=10**9), "--max-retime 1000000000 is absurd"),
        (dict(batch_sizes=(0,)), "--batch-size must be >= 1"),
        (dict(batch_sizes=()), "--batch-size is empty"),
        (dict(batch_sizes=(1 << 21,)), "is absurd"),
        (dict(r=(-1,)), "r must be >= 0"),
        (dict(r=(2.5,)), "r must be a whole number"),
        (dict(dtype=""), "unknown dtype ''"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(compile="fastest"), "unknown --compile mode"),
        (dict(match="flops"), "unknown --match"),
        (dict(model=""), "--model is empty"),
        (dict(reducers=()), "no reducer to measure"),
        (dict(reducers=("tomee",)), "did you mean tome"),
        (dict(reducers=(ReducerChoice("kmeans", (("iters", -1),)),)), "kmeans.iters=-1: out of range"),
        (dict(reducers=(ReducerChoice("kmeans", (("iters", 10**11),)),)), "out of range"),
        (dict(reducers=(ReducerChoice("tome", (("distance", "manhattan"),)),)), "choose one of cosine"),
        (dict(schedule="inflection:2"), "bad schedule"),
        (dict(model_kwargs={"not a name": 1}), "bad --model-arg"),
        (dict(latency="yes"), "--latency must be true or false"),
    ],
)
def test_every_field_is_checked_when_the_spec_is_made(changes, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        RunSpec(**changes)


def test_loose_forms_become_typed_values():
    spec = RunSpec(
        reducers=("ToMe", "random-prune"),
        batch_sizes=8,
        schedule="decreasing",
        r=[4, 4, 2],
        model_kwargs={"global_pool": "avg"},
        checkpoint="~/w.pth",
    )
    assert spec.reducers == (ReducerChoice("tome"), ReducerChoice("prune"))
    assert spec.batch_sizes == (8,) and spec.r == (4, 2) and spec.schedule == parse_schedule("decreasing")
    assert spec.model_args == {"global_pool": "avg"} and spec.checkpoint == Path("~/w.pth").expanduser()
    assert replace(spec, batch_sizes=16).batch_sizes == (16,)  # every copy is normalised and checked again


def test_reducer_choices_are_canonical():
    assert ReducerChoice.of("tome", {"distance": "cosine", "partition": "alternating"}) == ReducerChoice("tome")
    seeded = ReducerChoice.of("tome", {"seed": 3})  # no effect without partition=random: not part of the row
    assert seeded == ReducerChoice("tome") and seeded.inert == ("seed (only with partition=random)",)
    random = ReducerChoice.of("tome", {"seed": 3, "partition": "random"})
    assert random.options == (("partition", "random"), ("seed", 3)) and random.label == "partition=random,seed=3"
    assert ReducerChoice.of("KMeans", {"iters": 5}) == ReducerChoice("kmeans")


def test_an_inert_option_is_said_once_and_makes_no_new_row():
    spec = RunSpec(
        model="test_vit",
        pretrained=False,
        r=(2,),
        batch_sizes=2,
        device="cpu",
        data="synthetic",
        repeats=1,
        max_retime=0,
        reducers=(ReducerChoice.of("tome", {"seed": 5}),),
    )
    setup = Setup.build(spec)
    assert [row.reducer_options for row in setup.planned] == [None, None]
    assert any("tome.seed" in note and "changes nothing" in note for note in setup.notes)


@pytest.mark.parametrize("text", ["inflection:0.2500001", "inflection-exact:-0.125", "inflection:.333", "8,8,4,0"])
def test_a_schedule_label_is_exactly_what_is_measured(text):
    parsed = parse_schedule(text)
    assert parse_schedule(parsed.label) == parsed
    if text.startswith("inflection:0.25"):
        assert parsed.label == "inflection:0.2500001" and parsed.slope == Fraction("0.2500001")


def test_configs_take_schedules_in_every_form():
    assert Config("tome", 4, "decreasing").schedule == parse_schedule("decreasing")
    assert Config("tome", 4, (8, 4, 0)).schedule.blocks == (8, 4, 0)
