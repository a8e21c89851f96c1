"""`tomebench compare`: every reducer at the same budget in one run, and a configuration that fails as its row's
error."""

from __future__ import annotations

from tests.helpers import (
    files,
    invoke,
    read_rows,
)

TINY = ["--no-pretrained", "--repeats", "2", "--batch-size", "2"]


def test_compare_measures_every_reducer_at_the_same_budget(tmp_path):
    out = tmp_path / "c.csv"
    result = invoke(
        "compare", "--model", "test_vit", *TINY, "--reducers", "tome,prune,kmeans", "--r", "0,4", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert files(tmp_path) == {"c.csv", "c.png", "c.svg", "c.times.json"}  # one CSV, one plot, raw times
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "c.svg").stat().st_size > 0
    rows = read_rows(out)
    # r=0 removes nothing whatever the reducer: it is measured once, as the unpatched row.
    assert [(r["reducer"], r["r"]) for r in rows] == [("none", "0"), ("tome", "4"), ("prune", "4"), ("kmeans", "4")]
    assert all(r["error"] == "" and float(r["infer_samples_per_sec"]) > 0 for r in rows)
    tokens = {(r["reducer"], int(r["r"])): int(r["tokens_final"]) for r in rows}
    # test_vit: 100 patches + cls over 6 blocks; every reducer removes 4 per block at r=4.
    assert {v for (_, r), v in tokens.items() if r == 0} == {101}
    assert {v for (name, r), v in tokens.items() if r == 4} == {77}
    gflops = {(r["reducer"], int(r["r"])): float(r["infer_gflops"]) for r in rows}
    assert gflops[("prune", 4)] < gflops[("none", 0)]
    assert gflops[("tome", 4)] < gflops[("none", 0)]
    # Same tokens as tome, but the clustering itself is counted: k-means' iterations cost more than one matching.
    assert gflops[("kmeans", 4)] > gflops[("tome", 4)]


def test_a_failing_configuration_becomes_an_error_row(tmp_path):
    out = tmp_path / "e.csv"
    # test_vit2 has a register token but no cls token: attn-prune with score=cls cannot run there.
    result = invoke(
        "compare",
        "--model",
        "test_vit2",
        *TINY,
        "--reducers",
        "tome,attn-prune",
        "--r",
        "2,4",
        "--opt",
        "attn-prune.score=cls",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(r["reducer"], r["r"]) for r in rows] == [
        ("none", "0"),
        ("tome", "2"),
        ("tome", "4"),
        ("attn-prune", "2"),
        ("attn-prune", "4"),
    ]
    for row in rows[:3]:
        assert row["error"] == "" and float(row["infer_samples_per_sec"]) > 0 and row["tokens_final"] != ""
    assert [int(r["tokens_final"]) for r in rows[:3]] == [101, 101 - 2 * 8, 101 - 4 * 8]
    for row in rows[3:]:
        assert row["error"].startswith("UsageError:") and "cls" in row["error"]
        assert row["infer_samples_per_sec"] == "" and row["speedup"] == ""
    assert (tmp_path / "e.png").exists()


def test_match_none_sweeps_a_knob_given_as_a_list(tmp_path):
    out = tmp_path / "k.csv"
    args = ("--reducers", "pitome", "--r", "2", "--opt", "pitome.ratio=0.9,0.95", "--out", str(out))
    result = invoke("compare", "--model", "test_vit", *TINY, "--match", "none", *args)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(r["reducer"], r["reducer_options"]) for r in rows] == [
        ("none", ""),
        ("pitome", "ratio=0.9"),
        ("pitome", "ratio=0.95"),
    ]
    assert int(rows[1]["tokens_final"]) < int(rows[2]["tokens_final"])  # keeping less, it ends with fewer tokens
    # Under --match gmacs the knob is what matching chooses: a list of it is refused, in one line.
    refused = invoke("compare", "--model", "test_vit", *TINY, *args[:-2], "--reducers", "tome,pitome")
    assert refused.exit_code == 2 and "--match none" in refused.output
