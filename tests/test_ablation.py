"""The paper's design study: ToMe's ablation options, the schedules (increasing, inflection, random search), and
the `ablate` / `schedules` commands that measure them."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import tomebench
from tomebench import cli
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError
from tomebench.patch import check_reducer_options, forward_with_state
from tomebench.reducers import REDUCERS, LayerTokens, merge_tokens
from tomebench.reducers.tome import (
    bipartite_soft_matching,
    partition_indices,
    similarity,
)
from tomebench.results.csv import read_csv
from tomebench.results.journal import Journal
from tomebench.schedule import (
    effective_schedule,
    layer_schedule,
    parse_schedule,
    sample_schedules,
)
from tomebench.studies import ablate
from tomebench.studies import schedules as search

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = settings(max_examples=60, deadline=None)
runner = CliRunner()
OPTIONS = [("features", "q"), ("features", "v"), ("features", "x"), ("distance", "dot"), ("distance", "euclidean"),
           ("heads", "concat"), ("combine", "mean"), ("combine", "max"), ("combine", "keep"),
           ("partition", "alternating-patches"), ("partition", "sequential"), ("partition", "random")]


# ---------------------------------------------------------------- options on constructed inputs

def pairs(merge, n: int) -> set[tuple[int, int]]:
    """Which input tokens ended up together, from the merge of an identity source map (no prefix, batch 1)."""
    source = merge(torch.eye(n)[None], "amax")[0]  # (N', N)
    return {tuple(int(i) for i in row.nonzero()) for row in source if int(row.sum()) == 2}


def test_euclidean_and_cosine_pick_different_pairs_where_they_disagree():
    # A tokens 0, 2; B tokens 1, 3. Token 0 points the same way as token 1 but is ten times shorter, and lies
    # next to token 3: cosine pairs (0, 1), euclidean pairs (0, 3). Token 2 is far from everything.
    metric = torch.tensor([[[0.1, 0.0], [1.0, 0.0], [-5.0, 5.0], [0.1, 0.05]]])
    assert pairs(bipartite_soft_matching(metric, 1, 0, distance="cosine"), 4) == {(0, 1)}
    assert pairs(bipartite_soft_matching(metric, 1, 0, distance="euclidean"), 4) == {(0, 3)}
    # Dot product ranks the raw products.
    scores = similarity(metric[:, ::2], metric[:, 1::2], "dot")
    assert torch.allclose(scores, metric[:, ::2] @ metric[:, 1::2].transpose(1, 2))


def test_euclidean_similarity_is_minus_the_squared_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    assert torch.allclose(similarity(a, b, "euclidean"), -torch.cdist(a, b) ** 2, atol=1e-5)


@pytest.mark.parametrize("partition", ["alternating", "sequential", "random"])
@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_partitions_split_the_tokens_into_a_and_b(partition, n):
    a, b = partition_indices(n, partition, 3)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(n)) and len(a) == (n + 1) // 2
    assert a.tolist() == sorted(a.tolist()) and b.tolist() == sorted(b.tolist())
    if partition == "alternating":
        assert a.tolist() == list(range(0, n, 2))
    if partition == "sequential":
        assert a.tolist() == list(range((n + 1) // 2))


def test_sequential_partition_merges_across_the_halves():
    # Tokens 0 and 1 are nearly the same: alternating pairs them (A = 0, 2; B = 1, 3); sequential puts both in A
    # (A = 0, 1; B = 2, 3), so token 1 goes to its best B partner, token 3.
    metric = torch.tensor([[[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.8, 0.6]]])
    assert pairs(bipartite_soft_matching(metric, 1, 0, partition="alternating"), 4) == {(0, 1)}
    assert pairs(bipartite_soft_matching(metric, 1, 0, partition="sequential"), 4) == {(1, 3)}


@pytest.mark.parametrize(("combine", "expected"), [("weighted", 1.5), ("mean", 2.0), ("max", 3.0), ("keep", 3.0)])
def test_combine_modes_on_a_known_pair(combine, expected):
    # Token 0 (value 1, size 3) merges into token 1 (value 3, size 1).
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    x = torch.tensor([[[1.0], [3.0]]])
    size = torch.tensor([[[3.0], [1.0]]])
    merge = bipartite_soft_matching(metric, 1, 0, combine=combine)
    out, new_size, _ = merge_tokens(merge, x, size, None)
    assert out.shape == (1, 1, 1) and float(out) == pytest.approx(expected)
    assert float(new_size) == 4.0  # sizes always add up: proportional attention still sees both patches


@SETTINGS
@given(st.integers(1, 3), st.integers(3, 30), st.integers(0, 3), st.integers(0, 30), st.sampled_from(OPTIONS),
       st.integers(0, 2**31 - 1))
def test_every_option_keeps_the_token_budget_and_the_prefix(b, n, p, r, option, seed):
    p = min(p, n - 1)
    g = torch.Generator().manual_seed(seed)
    k, q, v = (torch.randn(b, 2, n, 4, generator=g) for _ in range(3))
    x = torch.randn(b, n, 8, generator=g)
    per_head = {"k": k, "q": q, "v": v}
    tokens = LayerTokens(metric=k.mean(1), size=None, num_prefix_tokens=p, layer=2, features=lambda kind, heads: (
        x if kind == "x" else per_head[kind].mean(1) if heads == "mean" else per_head[kind].transpose(1, 2).flatten(2)))
    merge = REDUCERS.get("tome")(tokens, r, **dict([option]))
    out, size, _ = merge_tokens(merge, x, None, None)
    assert out.shape == (b, n - min(r, (n - p) // 2), 8)
    assert torch.equal(size.sum(dim=(1, 2)), torch.full((b,), float(n)))
    assert torch.equal(out[:, :p], x[:, :p])


def test_features_and_heads_reach_the_similarity_in_a_real_vit():
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    images = torch.randn(2, 3, 160, 160)
    token_maps = {}
    for option in [()] + [(o,) for o in OPTIONS if o[0] in ("features", "heads", "partition", "distance")]:
        tomebench.patch(model, "tome", 8, trace_source=True, **dict(option))
        with torch.no_grad():
            _, state = forward_with_state(model, images)
        assert state.size.shape[1] == 101 - 6 * 8  # the same budget for every option
        token_maps[option] = state.source
    tomebench.unpatch(model)
    default = token_maps.pop(())
    for option, source in token_maps.items():
        assert not torch.equal(source, default), f"{option} merged exactly what the defaults merged"


def test_bad_option_values_are_refused_with_the_choices():
    with pytest.raises(UsageError, match="tome.distance=manhattan: choose one of cosine, dot, euclidean"):
        check_reducer_options({"tome": {"distance": "manhattan"}})
    with pytest.raises(UsageError, match="tome.seed='x': expected a value of type int"):
        check_reducer_options({"tome": {"seed": "x"}})
    check_reducer_options({"tome": {"features": "q", "heads": "concat", "seed": 3}})


# ---------------------------------------------------------------- schedules

def authors_schedule(r: int, depth: int, inflect: float) -> tuple[int, ...]:
    """The authors' (r, inflection) schedule (facebookresearch/ToMe `parse_r`), restated from its formula."""
    lo = int(r * (1.0 - inflect))
    hi = 2 * r - lo
    return tuple(int(lo + (hi - lo) / (depth - 1) * i) for i in range(depth))


@pytest.mark.parametrize("depth", [8, 12, 24])
@pytest.mark.parametrize("r", [1, 7, 8, 13, 16, 23])
def test_named_and_inflection_schedules_are_the_authors(depth, r):
    for name, inflect in (("decreasing", -1.0), ("increasing", 1.0), ("inflection:0.5", 0.5),
                          ("inflection:-0.5", -0.5), ("constant", 0.0), ("inflection:0", 0.0)):
        assert layer_schedule(r, depth, name) == authors_schedule(r, depth, inflect), name
    assert layer_schedule(r, depth, "inflection:-1") == layer_schedule(r, depth, "decreasing")
    decreasing = layer_schedule(r, depth, "decreasing")
    assert decreasing[0] == 2 * r and decreasing[-1] == 0 and sum(decreasing) <= r * depth


def test_authors_schedules_known_values():
    # Checked against facebookresearch/ToMe's parse_r: ViT-B (12 blocks) r = 13 at inflection -0.5 and +0.5.
    assert layer_schedule(13, 12, "inflection:-0.5") == (19, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7)
    assert layer_schedule(13, 12, "inflection:0.5") == (6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 20)
    assert layer_schedule(8, 8, "increasing") == (0, 2, 4, 6, 9, 11, 13, 16)


@pytest.mark.parametrize("depth", [1, 2, 7, 12, 24])
@pytest.mark.parametrize("r", [0, 1, 5, 16])
def test_exact_inflection_schedules_keep_the_budget_and_their_shape(depth, r):
    decreasing = layer_schedule(r, depth, "inflection-exact:-1")
    increasing = layer_schedule(r, depth, "inflection-exact:1")
    for name in ("inflection-exact:0.5", "inflection-exact:-0.25", "inflection-exact:0", "inflection-exact:-1"):
        assert sum(layer_schedule(r, depth, name)) == r * depth
    if depth > 1:
        assert increasing == tuple(reversed(decreasing))
        assert increasing[0] == 0 and increasing[-1] == 2 * r
        half = layer_schedule(r, depth, "inflection-exact:-0.5")
        assert all(a >= b for a, b in zip(half, half[1:]))  # non-increasing
        assert half[0] <= decreasing[0] and half[-1] >= decreasing[-1]
    assert layer_schedule(r, depth, "inflection-exact:0") == (r,) * depth


@pytest.mark.parametrize("text", ["inflection:2", "inflection:x", "inflection", "sideways"])
def test_bad_schedules_are_refused(text):
    with pytest.raises(UsageError, match="bad schedule"):
        parse_schedule(text)
    assert parse_schedule("inflection:0.50").label == "inflection:0.5" and parse_schedule("increasing").label == "increasing"
    assert parse_schedule("inflection-exact:-0.50").label == "inflection-exact:-0.5"


@SETTINGS
@given(st.integers(1, 24), st.integers(5, 200), st.integers(0, 3), st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_sampled_schedules_are_seeded_distinct_in_range_and_within_the_clamp(depth, tokens, prefix, seed, n):
    prefix = min(prefix, tokens - 1)
    top = (tokens - prefix) * 2
    lo, hi = sorted((seed % (top + 1), (seed // 7) % (top + 1)))
    first = sample_schedules(n, depth, tokens, prefix, (lo, hi), seed)
    assert first == sample_schedules(n, depth, tokens, prefix, (lo, hi), seed)
    assert len(set(first)) == len(first) <= n
    for schedule in first:
        assert len(schedule) == depth
        assert effective_schedule(schedule, tokens, prefix)[0] == schedule  # nothing left to clamp
        assert sum(schedule) <= hi


def test_sampled_totals_span_the_range_when_nothing_clamps():
    schedules = sample_schedules(200, 12, 197, 1, (48, 144), seed=0)
    totals = [sum(s) for s in schedules]
    assert len(schedules) == 200 and min(totals) >= 48 and max(totals) <= 144
    assert min(totals) < 60 and max(totals) > 130  # spread over the range, not bunched
    assert sample_schedules(200, 12, 197, 1, (48, 144), seed=1) != schedules


# ---------------------------------------------------------------- ablate and schedules through the engine

TINY = RunSpec(model="test_vit", pretrained=False, batch_sizes=2, repeats=1, device="cpu", data="synthetic")


def test_ablation_plan_varies_one_factor_at_a_time_and_rows_record_it(tmp_path):
    out = tmp_path / "ab.csv"
    rows = run_sweep(replace(TINY, configs=ablate.plan(4), group_size=0), sink=Journal(out))
    # Every configuration's raw times are kept under its own label.
    [raw] = json.loads(out.with_suffix(".times.json").read_text())["groups"]
    assert len(raw) == 15 and "tome r=4 (no prop_attn)" in raw and "tome r=4 (features=q)" in raw
    assert [row.reducer for row in rows] == ["none"] + ["tome"] * 14
    assert all(row.error is None for row in rows) and all(row.r == 4 for row in rows[1:])
    assert [row.reducer_options for row in rows[1:]] == [None] + [f"{k}={v}" for k, v in OPTIONS] + [None]
    assert [row.prop_attn for row in rows[1:]] == [True] * 13 + [False]
    assert len({row.tokens_final for row in rows[1:]}) == 1  # the same budget everywhere
    assert all(row.speedup > 0 for row in rows)


def test_ablation_tables_render_from_a_golden_csv():
    frame = read_csv(GOLDEN / "ablate.csv")
    tables = ablate.tables(frame)
    assert [t.factor for t in tables] == ["features", "distance", "heads", "combine", "partition", "prop_attn"]
    assert [line.choice for line in tables[0].lines] == ["k", "q", "v", "x"]
    assert tables[0].lines[0].default and not any(line.default for line in tables[0].lines[1:])
    assert ablate.to_markdown(frame) == (GOLDEN / "ablate.md").read_text()


def test_schedule_search_plan_is_seeded_and_includes_the_named_schedules():
    spec = replace(TINY, configs=search.plan(6, 1.5, seed=3), group_size=0, repeats=1)
    first = run_sweep(spec)
    again = run_sweep(spec)
    assert [row.schedule for row in first] == [row.schedule for row in again]
    names = [row.schedule for row in first[1:]]
    named = [n for n in names if "," not in n]
    assert set(named) == {"constant", "decreasing", "increasing"} and len(named) % 3 == 0
    sampled = [n for n in names if "," in n]
    assert len(sampled) == 6 and all(len(s.split(",")) == 6 for s in sampled)
    assert run_sweep(replace(spec, configs=search.plan(6, 1.5, seed=4)))[-1].schedule != first[-1].schedule


def test_r_for_speedup_follows_the_gflops():
    from tomebench.models import create

    loaded = create("test_vit", pretrained=False)
    r, gflops = search.r_for_speedup(loaded, 1.5)
    assert all(a > b for a, b in zip(gflops, gflops[1:]))
    assert gflops[0] / gflops[r] >= 1.5 and (r == 0 or gflops[0] / gflops[r - 1] < 1.5)


def test_ablate_reads_r_from_a_config_file_as_a_number(tmp_path):
    config = tmp_path / "ab.toml"
    config.write_text('model = "test_vit"\npretrained = false\nr = 4\nrepeats = 1\nbatch_size = 2\ndevice = "cpu"\n')
    out = tmp_path / "ab.csv"
    result = runner.invoke(cli.app, ["ablate", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    tome_rows = rows[rows["reducer"] == "tome"]
    assert set(tome_rows["r"]) == {4} and set(tome_rows["tokens_final"]) == {101 - 6 * 4}  # constant r=4
    config.write_text('r = "0..4"\n')
    result = runner.invoke(cli.app, ["ablate", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "ablate takes one r" in result.output, result.output


def test_ablate_and_schedules_commands_write_their_reports_and_resume(tmp_path):
    out = tmp_path / "ab.csv"
    result = runner.invoke(cli.app, ["ablate", "--model", "test_vit", "--no-pretrained", "--r", "4", "--repeats",
                                     "1", "--batch-size", "2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "similarity features" in result.output and (tmp_path / "ab.md").read_text().startswith("## ToMe ablation")
    assert (tmp_path / "ab.png").stat().st_size > 0
    out = tmp_path / "sc.csv"
    args = ["schedules", "--samples", "4", "--repeats", "1", "--limit", "40", "--workers", "0", "--device", "cpu",
            "--out", str(out)]  # the demo model on its digits: the figure needs accuracy
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum("," in row["schedule"] for row in rows) == 4 and (tmp_path / "sc.png").stat().st_size > 0
    result = runner.invoke(cli.app, args + ["--resume"])
    assert result.exit_code == 0 and "nothing to measure" in result.output, result.output


def test_schedule_figure_and_best_schedules_from_a_csv(tmp_path):
    frame = read_csv(GOLDEN / "schedules.csv")
    front = search.best_schedules(frame)
    assert len(front) >= 1 and all(len(b) == 8 for b in front["blocks"])
    means = search.average_per_block(front)
    assert len(means) == 8 and sum(means) == pytest.approx(sum(sum(b) for b in front["blocks"]) / len(front))
    fig = search.figure(frame)
    left, right = fig.axes
    labels = left.get_legend_handles_labels()[1]
    assert {"constant", "decreasing", "increasing", "unpatched"} <= set(labels)
    assert right.get_lines()
