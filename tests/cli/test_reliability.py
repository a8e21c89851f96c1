"""Reliability, round three (issue 25): what came from an unexpected direction, answered without losing a row or
touching a user's file. Each test fails on the code before the issue (4ff90de). The one-line refusals are rows of
the bad-input table (test_bad_input.py); these are the cases whose right answer is a working run."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import GOLDEN, assert_one_line_error, flat, invoke, read_rows, write_image
from tomebench.cli.run import default_out
from tomebench.report.console import explanation, verdict
from tomebench.report.gate import check
from tomebench.report.plots import speed_frontier, too_noisy
from tomebench.results.files import sidecar

SYNTHETIC = ["--model", "test_vit", "--no-pretrained", "--repeats", "2", "--device", "cpu", "--data", "synthetic"]


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """A throughput-only sweep of test_vit at r = 0, 4 (unpatched, r=0, r=4)."""
    out = tmp_path_factory.mktemp("measured") / "s.csv"
    result = invoke("sweep", *SYNTHETIC, "--r", "0,4", "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- --resume keeps what a user added


def test_resume_keeps_a_users_extra_column_and_collapses_exact_repeats(measured, tmp_path):
    out = tmp_path / "s.csv"
    shutil.copy(measured, out)
    shutil.copy(sidecar(measured), sidecar(out))
    rows = read_rows(measured)
    columns = [*rows[0], "comment"]
    for n, row in enumerate(rows):
        row["comment"] = f"looked at by hand {n}"
    # The r=4 row twice, exactly (a copy-paste), and the r=0 row missing: --resume measures r=0 again.
    kept = [rows[0], rows[2], rows[2]]
    write_rows(out, kept, columns)
    result = invoke("sweep", *SYNTHETIC, "--r", "0,4", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    after = read_rows(out)
    assert list(after[0])[-1] == "comment"
    assert sorted((row["reducer"], row["r"]) for row in after) == [("none", "0"), ("tome", "0"), ("tome", "4")]
    by_config = {(row["reducer"], row["r"]): row["comment"] for row in after}
    assert by_config[("none", "0")] == "looked at by hand 0"
    assert by_config[("tome", "4")] == "looked at by hand 2"
    assert by_config[("tome", "0")] == ""  # measured now: nobody has commented on it yet


def test_resume_refuses_two_different_rows_of_one_configuration(measured, tmp_path):
    out = tmp_path / "s.csv"
    rows = read_rows(measured)
    changed = dict(rows[2], infer_samples_per_sec="1.5")
    write_rows(out, [*rows, changed], list(rows[0]))
    before = out.read_bytes()
    result = invoke("sweep", *SYNTHETIC, "--r", "0,4", "--out", out, "--resume")
    assert_one_line_error(result, 2, "two different rows of one configuration", "lines 4 and 5")
    assert out.read_bytes() == before


def test_resume_with_the_sidecar_deleted_refuses_rows_of_another_limit(tmp_path, digits):
    out = tmp_path / "s.csv"
    args = ["--model", "demo", "--r", "0", "--repeats", "1", "--data", digits, "--batch-size", "16"]
    assert invoke("sweep", *args, "--limit", "20", "--out", out).exit_code == 0
    sidecar(out).unlink()
    before = out.read_bytes()
    result = invoke("sweep", *args, "--limit", "30", "--r", "0,2", "--out", out, "--resume")
    assert_one_line_error(result, 2, "measured on 20 image(s), this run evaluates 30")
    assert out.read_bytes() == before


def test_resume_on_a_csv_with_text_in_a_number_cell_keeps_the_cell(measured, tmp_path):
    out = tmp_path / "s.csv"
    rows = read_rows(measured)
    rows[2]["infer_samples_per_sec"] = "fast"
    write_rows(out, rows[:3], list(rows[0]))
    result = invoke("sweep", *SYNTHETIC, "--r", "0,4,8", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    after = read_rows(out)
    assert [row["r"] for row in after] == ["0", "0", "4", "8"]
    assert after[2]["infer_samples_per_sec"] == "fast"  # a user's cell is theirs; it is not rewritten


# ---------------------------------------------------------------- default names and existing files


@pytest.mark.parametrize(
    "model", ["tv:vit_b_16.swag_e2e", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "hf:google/vit-base-patch16-224"]
)
def test_default_out_names_are_plain_file_names_for_every_model_name(model):
    out = default_out("sweep", model)
    assert out.parent == Path("results") and out.suffix == ".csv"
    assert "." not in out.stem and ":" not in out.name and "/" not in out.stem


def test_a_sweep_of_a_tagged_model_name_writes_its_default_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tagged = ["--model", "test_vit.r160_in1k", "--no-pretrained", "--repeats", "1", "--data", "synthetic"]
    result = invoke("sweep", *tagged, "--r", "0")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "sweep-test_vit_r160_in1k.csv").is_file()
    assert (tmp_path / "results" / "sweep-test_vit_r160_in1k.png").is_file()


def test_compare_never_replaces_an_earlier_default_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["compare", "--model", "test_vit", "--no-pretrained", "--repeats", "1", "--data", "synthetic"]
    assert invoke(*args, "--reducers", "tome,prune", "--r", "0,4").exit_code == 0
    out = tmp_path / "results" / "compare-test_vit.csv"
    before = out.read_bytes()
    result = invoke(*args, "--reducers", "tome", "--r", "2")
    assert_one_line_error(result, 2, "exists and holds 3 row(s)", "--resume", "--overwrite")
    assert out.read_bytes() == before
    replaced = invoke(*args, "--reducers", "tome", "--r", "2", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert [(row["reducer"], row["r"]) for row in read_rows(out)] == [("none", "0"), ("tome", "2")]


def test_compare_times_r0_once_as_the_unpatched_model(tmp_path):
    out = tmp_path / "c.csv"
    args = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--data", "synthetic"]
    result = invoke("compare", *args, "--reducers", "tome,prune", "--r", "0,4", "--out", out)
    assert result.exit_code == 0, result.output
    assert [(row["reducer"], row["r"]) for row in read_rows(out)] == [("none", "0"), ("tome", "4"), ("prune", "4")]


# ---------------------------------------------------------------- images and caches from odd places


def test_symlink_loops_in_a_class_folder_count_each_image_once(tmp_path, digits):
    root = tmp_path / "data"
    shutil.copytree(digits, root)
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    os.symlink(root, first / "to-root")  # a loop through the root
    os.symlink(first, first / "to-self")  # and one through the class folder
    out = tmp_path / "s.csv"
    result = invoke("sweep", "--model", "demo", "--r", "0", "--repeats", "1", "--data", root, "--out", out)
    assert result.exit_code == 0, result.output
    images = sum(1 for p in digits.rglob("*.png"))
    assert {row["n_images"] for row in read_rows(out)} == {str(images)}


def test_an_image_pil_fails_on_with_a_type_error_is_counted_unreadable(tmp_path, monkeypatch):
    from PIL import Image

    for cls in range(3):
        for n in range(2):
            write_image(tmp_path / "data" / str(cls) / f"{n}.png", 3 * cls + n, (32, 32))
    bad = tmp_path / "data" / "2" / "z_last.png"
    write_image(bad, 99, (32, 32))
    original = Image.Image.convert

    def convert(self, *args, **kwargs):  # what a malformed TIFF does inside PIL: not an OSError
        if getattr(self, "filename", "") == str(bad):
            raise TypeError("unsupported tile layout")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)
    out = tmp_path / "s.csv"
    args = ["--model", "demo", "--model-arg", "num_classes=3", "--no-pretrained", "--r", "0", "--repeats", "1"]
    result = invoke("sweep", *args, "--data", tmp_path / "data", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert {row["n_images"] for row in rows} == {"6"} and {row["n_unreadable"] for row in rows} == {"1"}


def test_the_demo_works_with_home_unset_and_says_where_its_digits_are(tmp_path, monkeypatch):
    monkeypatch.delenv("TOMEBENCH_CACHE", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("no home"))))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    out = tmp_path / "s.csv"
    result = invoke("sweep", "--model", "demo", "--r", "0", "--repeats", "1", "--limit", "20", "--out", out)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tomebench-cache" / "digits-test").is_dir()
    assert {row["n_images"] for row in read_rows(out)} == {"20"}


def test_a_read_only_cache_falls_back_to_the_temp_folder(tmp_path, monkeypatch):
    cache = tmp_path / "ro"
    cache.mkdir()
    monkeypatch.setenv("TOMEBENCH_CACHE", str(cache))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    from tomebench.demo import digits

    original = digits.write_image_folder

    def read_only(folder, split):  # root ignores chmod; refuse writes under the cache as a read-only HOME would
        if Path(folder).is_relative_to(cache):
            raise PermissionError(13, "Permission denied", str(folder))
        return original(folder, split)

    monkeypatch.setattr(digits, "write_image_folder", read_only)
    from tomebench.engine.images import demo_digits

    assert demo_digits() == tmp_path / "tmp" / "tomebench-cache" / "digits-test"


def test_nan_weights_are_refused_before_measuring(tmp_path):
    import timm
    from safetensors.torch import save_file

    import tomebench.demo  # noqa: F401  registers the demo architecture with timm

    state = {k: v.clone().contiguous() for k, v in timm.create_model("tomebench_demo_vit").state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    state[first][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    out = tmp_path / "s.csv"
    result = invoke("sweep", "--model", "demo", "--checkpoint", tmp_path / "nan.safetensors", "--out", out)
    assert_one_line_error(result, 2, "hold NaN or inf values in 1 tensor(s)", f"first: {first}")
    assert not out.exists()


def test_a_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("TOMEBENCH_CACHE", str(tmp_path / "afile"))
    result = invoke("sweep", "--model", "demo", "--r", "0", "--repeats", "1", "--out", tmp_path / "s.csv")
    assert_one_line_error(result, 2, "is a file, not a folder", "TOMEBENCH_CACHE")


def test_a_proxy_that_answers_nothing_fails_at_once_in_one_line(tmp_path, monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False, raising=False)
    started = time.monotonic()
    args = ["--model", "vit_t", "--device", "cpu", "--data", "synthetic", "--r", "0", "--out", tmp_path / "s.csv"]
    result = invoke("sweep", *args)
    assert_one_line_error(result, 1, "the proxy http://127.0.0.1:9 answers no connection", "HF_HUB_OFFLINE=1")
    assert time.monotonic() - started < 30


def test_an_option_with_no_effect_makes_no_new_row_label(tmp_path):
    out = tmp_path / "o.csv"
    result = invoke("sweep", *SYNTHETIC, "--r", "2", "--opt", "tome.seed=3", "--out", out)
    assert result.exit_code == 0, result.output
    assert [row["reducer_options"] for row in read_rows(out)] == ["", ""]
    assert "tome.seed" in flat(result) and "partition=random" in flat(result)


def test_a_schedule_is_recorded_as_it_was_measured(tmp_path):
    out = tmp_path / "i.csv"
    result = invoke("sweep", *SYNTHETIC, "--r", "2", "--schedule", "inflection:0.2500001", "--out", out)
    assert result.exit_code == 0, result.output
    assert read_rows(out)[1]["schedule"] == "inflection:0.2500001"


# ---------------------------------------------------------------- reading and checking CSVs


def test_plot_of_a_csv_with_text_in_top1_draws_what_it_can_and_says_so(tmp_path):
    path = tmp_path / "s.csv"
    frame = pd.read_csv(GOLDEN / "sweep.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "top1"] = "n/a"
    frame.to_csv(path, index=False)
    result = invoke("plot", path)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "s-speed-accuracy.png").is_file() and (tmp_path / "s-top1-vs-r.png").is_file()
    assert "line 3: top1 is not a number" in flat(result)


def test_check_against_a_baseline_with_a_text_cell_is_not_a_pass(tmp_path):
    base = tmp_path / "base.csv"
    frame = pd.read_csv(GOLDEN / "sweep.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "top1"] = "ninety"
    frame.to_csv(base, index=False)
    result = invoke("check", GOLDEN / "sweep.csv", "--baseline", base)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert "top1" in flat(result)


def test_check_json_is_strict_json_without_nan(tmp_path):
    current = tmp_path / "cur.csv"
    frame = pd.read_csv(GOLDEN / "sweep.csv", dtype=str, keep_default_na=False)
    frame.loc[1, "top1"] = "nan"
    frame.to_csv(current, index=False)
    result = invoke("check", current, "--baseline", GOLDEN / "sweep.csv", "--json")
    text = result.stdout if hasattr(result, "stdout") else result.output
    payload = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in --json"))
    assert isinstance(payload, dict)


def noisy_pair(base_speedup: float, cur_speedup: float, spread: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = pd.read_csv(GOLDEN / "sweep.csv").iloc[:2].copy()
    base, cur = rows.copy(), rows.copy()
    for frame, value in ((base, base_speedup), (cur, cur_speedup)):
        frame.loc[1, "speedup"] = value
        frame.loc[1, "speedup_p10"] = value * (1 - spread)
        frame.loc[1, "speedup_p90"] = value * (1 + spread)
        frame.loc[1, "speedup_ci_low"] = value * (1 - spread)
        frame.loc[1, "speedup_ci_high"] = value * (1 + spread)
    return cur, base


def test_check_fails_a_speedup_only_when_its_interval_clears_the_tolerance():
    # 30% slower by the medians, but both intervals span +-40%: noise, not a regression.
    cur, base = noisy_pair(1.5, 1.05, 0.4)
    result = check(cur, base, metrics=("speedup",))
    assert result.passed, result.findings
    # The same drop measured tightly is a regression.
    cur, base = noisy_pair(1.5, 1.05, 0.01)
    result = check(cur, base, metrics=("speedup",))
    assert not result.passed and any(f.status == "regressed" for f in result.findings)


def test_a_batch_size_mismatch_names_the_flag_to_pass(tmp_path):
    current = tmp_path / "cur.csv"
    frame = pd.read_csv(GOLDEN / "sweep.csv", dtype=str, keep_default_na=False)
    frame["infer_batch_size"] = "8"
    frame.to_csv(current, index=False)
    result = invoke("check", current, "--baseline", GOLDEN / "sweep.csv")
    assert result.exit_code != 0
    assert "--batch-size 32" in flat(result), result.output


# ---------------------------------------------------------------- speed figures that noise cannot carry


def frame_of(points: list[tuple[str, int, float, float, float, float]]) -> pd.DataFrame:
    """(reducer, r, top1, speedup, low, high) rows, with the unpatched row first."""
    rows = [dict(reducer="none", r=0, top1=90.0, speedup=1.0, speedup_p10=1.0, speedup_p90=1.0)]
    for reducer, r, top1, speedup, low, high in points:
        rows.append(dict(reducer=reducer, r=r, top1=top1, speedup=speedup, speedup_p10=low, speedup_p90=high))
    frame = pd.DataFrame(rows)
    frame["speedup_ci_low"], frame["speedup_ci_high"] = frame["speedup_p10"], frame["speedup_p90"]
    frame["error"] = None
    frame["infer_samples_per_sec"] = 100.0 * frame["speedup"]
    return frame


def test_the_frontier_never_holds_a_point_slower_than_the_unpatched_model():
    frame = frame_of([("prune", 2, 91.0, 0.7, 0.6, 0.8), ("tome", 4, 89.0, 1.4, 1.35, 1.45)])
    front = speed_frontier(frame)
    assert (front["speedup"] >= 1.0).all()
    assert ("prune", 2) not in set(zip(front["reducer"], front["r"]))


def test_a_lucky_round_cannot_push_an_overlapping_point_off_the_frontier():
    # prune r=7 at 2.1x (1.0x-2.8x) is not clearly faster than tome r=6 at 1.8x (1.7x-1.9x), and less accurate:
    # both stay, and neither is marked clear of the other.
    frame = frame_of([("tome", 6, 88.0, 1.8, 1.7, 1.9), ("prune", 7, 80.0, 2.1, 1.0, 2.8)])
    front = speed_frontier(frame)
    assert {("tome", 6), ("prune", 7)} <= set(zip(front["reducer"], front["r"]))
    assert not front.set_index(["reducer", "r"]).loc[("prune", 7), "clear"]
    # Measured tightly, tome r=6 beats prune r=5 clearly: prune r=5 is off.
    tight = frame_of([("tome", 6, 88.0, 1.8, 1.78, 1.82), ("prune", 5, 80.0, 1.5, 1.48, 1.52)])
    assert ("prune", 5) not in set(zip(speed_frontier(tight)["reducer"], speed_frontier(tight)["r"]))


def test_the_verdict_names_the_rows_too_noisy_to_rank():
    frame = frame_of([("tome", 6, 88.0, 1.8, 1.0, 2.8), ("tome", 2, 89.0, 1.2, 1.19, 1.21)])
    frame["latency_ms_p50"] = float("nan")
    assert list(too_noisy(frame)["r"]) == [6]
    line = verdict(frame)
    assert "too noisy to rank 1 of 2 rows" in line and "tome r=6" in line and "--time-budget" in line
    quiet = frame_of([("tome", 2, 89.0, 1.2, 1.19, 1.21)])
    assert verdict(quiet).startswith("timing: usable")
    assert "median over rounds" in explanation(frame)


def test_a_sweep_ends_with_the_explanation_and_the_verdict(measured, tmp_path):
    result = invoke("sweep", *SYNTHETIC, "--r", "4", "--out", tmp_path / "v.csv")
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "speedup = the median over rounds" in text
    assert "timing: " in text.split("speedup = the median over rounds")[-1]


def test_repeats_below_three_say_there_is_no_spread(tmp_path):
    result = invoke("sweep", *SYNTHETIC[:3], "--repeats", "1", *SYNTHETIC[5:], "--r", "4", "--out", tmp_path / "o.csv")
    assert result.exit_code == 0, result.output
    assert "--repeats 1" in flat(result) and "spread" in flat(result)


def test_a_time_budget_bounds_re_timing_and_lands_in_the_row(tmp_path):
    out = tmp_path / "b.csv"
    result = invoke("sweep", *SYNTHETIC, "--r", "4", "--time-budget", "1", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    low, high = float(rows[1]["speedup_ci_low"]), float(rows[1]["speedup_ci_high"])
    assert math.isfinite(low) and math.isfinite(high) and low <= float(rows[1]["speedup"]) <= high
