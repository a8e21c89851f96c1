"""The paper's published figures: [paper] tables of the bundled configs as rows, and `tomebench paper-baseline` as a
baseline `check` accepts."""

from __future__ import annotations

import json

import pytest
import tomllib

from tests.helpers import (
    CONFIGS,
    assert_one_line_error,
    invoke,
    read_rows,
)
from tomebench.config import load
from tomebench.errors import UsageError
from tomebench.results.csv import write_csv
from tomebench.results.row import Row
from tomebench.studies.paper import paper_rows

ALL_CONFIGS = sorted(CONFIGS.glob("*.toml"))
PAPER_CONFIGS = [p for p in ALL_CONFIGS if "paper" in tomllib.loads(p.read_text())]
DEMO = CONFIGS / "demo.toml"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_rows_carry_the_published_figures(path):
    options, paper = load(path)
    before, after = paper_rows(path)
    assert (before.reducer, before.r, before.prop_attn) == ("none", 0, False)
    assert after.reducer == options.get("reducer", "tome") and after.r > 0
    assert (before.top1, after.top1) == (paper["top1_before"], paper["top1_after"])
    assert (before.speedup, after.speedup) == (1.0, paper.get("speedup"))
    # A reducer whose budget is its own knob (diffrate) plans its blocks itself, as a run of it writes.
    assert after.schedule == ("constant" if after.reducer == "tome" else "native")
    for row in (before, after):
        assert row.dataset == "imagenet-val"
        assert row.infer_samples_per_sec is None and row.infer_gflops is None  # nothing measured here
        assert row.note.startswith("published")


def test_diffrate_paper_rows_are_what_a_run_of_them_writes():
    before, after = paper_rows(CONFIGS / "diffrate_deit_s_2.9.toml")
    assert before.model == after.model == "deit_small_patch16_224.fb_in1k"
    assert (after.reducer, after.schedule, after.reducer_options, after.prop_attn) == (
        "diffrate",
        "native",
        "target=2.9",
        True,
    )
    assert after.r == round((197 - 3) / 12) and (before.top1, after.top1) == (79.8, 79.54)
    assert "2.905 GMACs" in after.note and "OpenGVLab/DiffRate README" in after.note
    _, mae = paper_rows(CONFIGS / "diffrate_mae_vit_h_103.4.toml")
    assert (mae.model, mae.reducer_options, mae.prop_attn) == (
        "vit_huge_patch14_224",
        "model_key=ViT-H-MAE,target=103.4",
        True,
    )


def test_ppt_paper_row_holds_the_r_its_blocks_spend():
    # PPT's knob is r, spent its own way (r at each of blocks 3, 6, 9): the row holds r as given, as a run writes.
    before, after = paper_rows(CONFIGS / "ppt_deit_s_r50.toml")
    assert (after.reducer, after.r, after.schedule, after.prop_attn) == ("ppt", 50, "native", True)
    assert (before.top1, after.top1) == (79.8, 79.498) and "2.944 GMACs" in after.note


def test_paper_rows_name_the_model_a_run_would_write():
    before, after = paper_rows(CONFIGS / "vit_b_r13.toml")
    assert before.model == after.model == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert (after.r, after.prop_attn, after.infer_img_size, after.infer_batch_size, after.dtype) == (
        13,
        True,
        224,
        256,
        "fp16",
    )
    # Weights from a checkpoint: a run names the bare architecture; MAE runs without proportional attention.
    before, after = paper_rows(CONFIGS / "mae_l_r8.toml")
    assert before.model == after.model == "vit_large_patch16_224"
    assert (after.r, after.prop_attn, after.infer_img_size) == (8, False, 224)
    before, after = paper_rows(CONFIGS / "vit_l384_r23.toml")
    assert before.model == "vit_large_patch16_384.augreg_in21k_ft_in1k"
    assert (before.infer_img_size, after.infer_img_size, after.r, after.infer_batch_size) == (384, 384, 23, 64)


def test_swag_paper_rows_name_what_a_run_writes():
    configs = CONFIGS
    expected = {
        "swag_vit_b16_384_r45": ("tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1", 384, 45, 85.30, 84.59, 167.7),
        "swag_vit_l16_512_r40": ("tv:vit_l_16.IMAGENET1K_SWAG_E2E_V1", 512, 40, 88.06, 87.80, 26.3),
        "swag_vit_h14_518_r40": ("tv:vit_h_14.IMAGENET1K_SWAG_E2E_V1", 518, 40, 88.55, 88.25, 9.8),
    }
    for stem, (model, size, r, before, after, images_per_sec) in expected.items():
        base, tome = paper_rows(configs / f"{stem}.toml")
        assert (base.model, tome.model, tome.infer_img_size, tome.r) == (model, model, size, r)
        assert (base.top1, tome.top1) == (before, after) and f"-> {images_per_sec} images/s" in tome.note


def test_paper_rows_refuse_a_config_without_paper_table():
    with pytest.raises(UsageError, match=r"no \[paper\] table"):
        paper_rows(DEMO)


def test_paper_baseline_is_a_baseline_check_accepts(tmp_path):
    result = invoke("paper-baseline", CONFIGS / "vit_b_r13.toml", "--out-dir", tmp_path / "base")
    assert result.exit_code == 0, result.output
    baseline = tmp_path / "base" / "vit_b_r13.csv"
    assert [(r["reducer"], r["r"], r["top1"]) for r in read_rows(baseline)] == [
        ("none", "0", "84.57"),
        ("tome", "13", "82.6"),
    ]
    # A run of that config on some GPU, written by hand: same identity, top-1 half a point lower.
    common = dict(
        model="vit_base_patch16_224.augreg_in21k_ft_in1k",
        schedule="constant",
        infer_img_size=224,
        infer_batch_size=256,
        dtype="fp16",
        device="cuda",
        dataset="imagenet-val",
    )
    current = tmp_path / "current.csv"
    write_csv(
        [
            Row(reducer="none", r=0, prop_attn=False, top1=84.07, speedup=1.0, **common),
            Row(reducer="tome", r=13, prop_attn=True, top1=82.10, speedup=1.70, **common),
        ],
        current,
    )

    strict = invoke("check", current, "--baseline", baseline, "--metric", "top1", "--acc-tol", "0.3", "--json")
    assert strict.exit_code == 1, strict.output
    report = json.loads(strict.output)
    assert report["compared"] == 2 and not report["missing_in_current"] and not report["missing_in_baseline"]
    assert sorted(f["metric"] for f in report["regressions"]) == ["top1", "top1"]

    loose = invoke("check", current, "--baseline", baseline, "--metric", "top1", "--acc-tol", "1", "--json")
    assert loose.exit_code == 0, loose.output
    assert json.loads(loose.output)["passed"] is True and json.loads(loose.output)["compared"] == 2


def test_paper_baseline_without_paper_table_exits_2(tmp_path):
    result = invoke("paper-baseline", DEMO, "--out-dir", tmp_path)
    assert_one_line_error(result, 2, "[paper]")  # not eaten as rich markup
    assert not (tmp_path / "demo.csv").exists()
