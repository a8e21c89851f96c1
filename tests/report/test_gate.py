"""The regression gate: `check` on real CSV files, in Python and through `tomebench check`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import (
    GOLDEN,
    assert_one_line_error,
    flat,
    golden_rows,
    invoke,
)
from tomebench.errors import UsageError
from tomebench.report.gate import IDENTITY, Finding, Tolerances, check, label
from tomebench.results.csv import read_csv, write_csv
from tomebench.results.row import COLUMNS, Row

MODEL = "vit_t"


# The labels check gives each configuration of base_rows() below.
NONE = f"{MODEL} none r=0 (constant, fp32, 224px, batch 32)"


TOME4 = f"{MODEL} tome r=4 (constant, fp32, 224px, batch 32, prop_attn)"


TOME8 = f"{MODEL} tome r=8 (constant, fp32, 224px, batch 32, prop_attn)"


def base_rows() -> list[Row]:
    """none r=0, tome r=4, tome r=8: every compared metric measured, no error."""
    common = dict(
        model=MODEL,
        schedule="constant",
        infer_img_size=224,
        infer_batch_size=32,
        dtype="fp32",
        device="cpu",
        top5=99.0,
        n_images=50,
        dataset="imagenet-val",
        param_count=5.7,
    )
    return [
        Row(
            reducer="none",
            r=0,
            prop_attn=False,
            speedup=1.0,
            infer_gflops=1.26,
            tokens_final=197,
            top1=75.5,
            infer_samples_per_sec=100.0,
            **common,
        ),
        Row(
            reducer="tome",
            r=4,
            prop_attn=True,
            speedup=1.5,
            infer_gflops=1.02,
            tokens_final=149,
            top1=74.0,
            infer_samples_per_sec=150.0,
            **common,
        ),
        Row(
            reducer="tome",
            r=8,
            prop_attn=True,
            speedup=2.0,
            infer_gflops=0.8,
            tokens_final=101,
            top1=71.25,
            infer_samples_per_sec=200.0,
            **common,
        ),
    ]


def planted(index: int, **changes) -> list[Row]:
    rows = base_rows()
    rows[index] = replace(rows[index], **changes)
    return rows


def write(tmp_path: Path, name: str, rows: list[Row]) -> Path:
    return write_csv(rows, tmp_path / name)


@pytest.fixture
def base(tmp_path) -> Path:
    return write(tmp_path, "base.csv", base_rows())


# ---------------------------------------------------------------- what passes and what fails


def test_identical_csvs_pass(tmp_path, base):
    current = write(tmp_path, "cur.csv", base_rows())
    result = check(read_csv(current), read_csv(base))
    assert result.passed and result.compared == 3
    assert len(result.findings) == 3 * 5 and {f.status for f in result.findings} == {"ok"}
    assert result.missing_in_current == result.missing_in_baseline == result.errors == ()
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 0, out.output
    assert "check passed: 0 regression(s)" in flat(out)


def test_accuracy_drop_fails_and_names_the_configuration(tmp_path, base):
    current = write(tmp_path, "cur.csv", planted(1, top1=73.0))  # tome r=4: 74.0 -> 73.0
    result = check(read_csv(current), read_csv(base))
    assert not result.passed
    assert result.regressions == (Finding(TOME4, "top1", 74.0, 73.0, "regressed"),)

    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1, out.output
    text = flat(out)
    assert "tome r=4" in text and "regressed: top1 -1" in text and "check failed: 1 regression(s)" in text

    out = invoke("check", current, "--baseline", base, "--json")
    assert out.exit_code == 1
    data = json.loads(out.stdout)
    assert data["passed"] is False
    assert [(f["config"], f["metric"], f["baseline"], f["current"]) for f in data["regressions"]] == [
        (TOME4, "top1", 74.0, 73.0)
    ]

    report = tmp_path / "report.md"
    out = invoke("check", current, "--baseline", base, "--report", report)
    assert out.exit_code == 1
    md = report.read_text()
    assert md.startswith("## tomebench check: FAILED")
    assert f"| {TOME4} | top1 | 74 | 73 | -1 |" in md


@pytest.mark.parametrize("tol", ["1.5", "1.0"])  # 1.0: a drop equal to the tolerance is within it
def test_accuracy_drop_within_acc_tol_passes(tmp_path, base, tol):
    current = write(tmp_path, "cur.csv", planted(1, top1=73.0))
    out = invoke("check", current, "--baseline", base, "--acc-tol", tol)
    assert out.exit_code == 0, out.output
    assert "check passed" in flat(out)
    result = check(read_csv(current), read_csv(base), tolerances=Tolerances(acc=float(tol)))
    assert result.passed and [f.status for f in result.findings if f.metric == "top1"] == ["ok"] * 3


def test_speedup_drop_fails_unless_within_speedup_tol(tmp_path, base):
    current = write(tmp_path, "cur.csv", planted(2, speedup=1.6))  # tome r=8: 2.0 -> 1.6, 20% slower
    result = check(read_csv(current), read_csv(base))
    assert result.regressions == (Finding(TOME8, "speedup", 2.0, 1.6, "regressed"),)
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1, out.output
    assert "tome r=8" in flat(out) and "regressed: speedup -20.0%" in flat(out)

    out = invoke("check", current, "--baseline", base, "--speedup-tol", "0.25")
    assert out.exit_code == 0, out.output
    assert "check passed: 0 regression(s)" in flat(out)


def test_speedup_improvement_is_reported_and_passes(tmp_path, base):
    current = write(tmp_path, "cur.csv", planted(2, speedup=2.5))
    result = check(read_csv(current), read_csv(base))
    assert result.passed
    assert result.improvements == (Finding(TOME8, "speedup", 2.0, 2.5, "improved"),)
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 0, out.output
    assert "improved: speedup +25.0%" in flat(out) and "check passed: 0 regression(s), 1 improvement(s)" in flat(out)
    out = invoke("check", current, "--baseline", base, "--json")
    data = json.loads(out.stdout)
    assert data["passed"] is True and data["regressions"] == []
    assert [(f["config"], f["metric"], f["status"]) for f in data["improvements"]] == [(TOME8, "speedup", "improved")]


def test_gflops_increase_beyond_tolerance_fails_but_float_noise_passes(tmp_path, base):
    worse = write(tmp_path, "worse.csv", planted(1, infer_gflops=1.02 * 1.002))  # +0.2%
    result = check(read_csv(worse), read_csv(base))
    assert [(f.config, f.metric, f.status) for f in result.regressions] == [(TOME4, "gflops", "regressed")]
    out = invoke("check", worse, "--baseline", base)
    assert out.exit_code == 1, out.output
    assert "regressed: gflops +0.2%" in flat(out)

    noise = write(tmp_path, "noise.csv", planted(1, infer_gflops=1.02001))  # 6th significant digit
    assert pd.read_csv(noise)["infer_gflops"].iloc[1] == 1.02001  # the noise survived the CSV round trip
    result = check(read_csv(noise), read_csv(base))
    assert result.passed and [f.status for f in result.findings if f.metric == "gflops"] == ["ok"] * 3
    assert invoke("check", noise, "--baseline", base).exit_code == 0


# ---------------------------------------------------------------- joining


def test_reordered_columns_shuffled_rows_and_extra_baseline_columns_pass(tmp_path, base):
    frame = pd.read_csv(base)
    shuffled = tmp_path / "shuffled.csv"
    frame.iloc[[2, 0, 1]][list(reversed(frame.columns))].to_csv(shuffled, index=False)
    assert pd.read_csv(shuffled).columns[0] == COLUMNS[-1] and list(pd.read_csv(shuffled)["r"]) == [8, 0, 4]
    extra = tmp_path / "extra.csv"
    frame.assign(legacy="kept", zz_score=[1, 2, 3]).to_csv(extra, index=False)

    result = check(read_csv(shuffled), read_csv(extra))
    assert result.passed and result.compared == 3 and len(result.findings) == 15
    assert invoke("check", shuffled, "--baseline", extra).exit_code == 0
    # The shuffle really moved something: a planted drop is still found on the right row.
    frame.loc[frame["r"] == 4, "top1"] -= 1
    frame.iloc[[2, 0, 1]][list(reversed(frame.columns))].to_csv(shuffled, index=False)
    assert [f.config for f in check(read_csv(shuffled), read_csv(extra)).regressions] == [TOME4]


def test_missing_configuration_fails_new_configuration_does_not(tmp_path, base):
    fewer = write(tmp_path, "fewer.csv", base_rows()[:2])
    result = check(read_csv(fewer), read_csv(base))
    assert not result.passed and result.regressions == () and result.missing_in_current == (TOME8,)
    out = invoke("check", fewer, "--baseline", base)
    assert out.exit_code == 1, out.output
    assert "tome r=8" in flat(out) and "missing now" in flat(out) and "1 missing" in flat(out)

    more = write(tmp_path, "more.csv", base_rows() + [replace(base_rows()[2], r=12, tokens_final=53)])
    result = check(read_csv(more), read_csv(base))
    assert result.passed and result.compared == 3
    assert result.missing_in_baseline == (f"{MODEL} tome r=12 (constant, fp32, 224px, batch 32, prop_attn)",)
    out = invoke("check", more, "--baseline", base)
    assert out.exit_code == 0, out.output
    assert "tome r=12" in flat(out) and "1 new" in flat(out)
    data = json.loads(invoke("check", more, "--baseline", base, "--json").stdout)
    assert data["passed"] is True and data["missing_in_current"] == [] and len(data["missing_in_baseline"]) == 1


def test_current_row_with_error_fails_and_is_named(tmp_path, base):
    broken = replace(
        base_rows()[2],
        speedup=None,
        infer_gflops=None,
        tokens_final=None,
        top1=None,
        top5=None,
        error="RuntimeError: out of memory",
    )
    current = write(tmp_path, "cur.csv", base_rows()[:2] + [broken])
    result = check(read_csv(current), read_csv(base))
    assert not result.passed and result.errors == (TOME8,) and result.regressions == ()
    assert all(f.config != TOME8 for f in result.findings)  # an error row is not also compared metric by metric
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1, out.output
    assert "tome r=8" in flat(out) and "1 error row(s)" in flat(out)
    data = json.loads(invoke("check", current, "--baseline", base, "--json").stdout)
    assert data["errors"] == [TOME8] and data["passed"] is False


def test_metric_option_limits_what_is_compared(tmp_path, base):
    current = write(tmp_path, "cur.csv", planted(2, speedup=1.0))  # tome r=8 twice as slow
    assert invoke("check", current, "--baseline", base).exit_code == 1
    out = invoke("check", current, "--baseline", base, "--metric", "top1", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["passed"] is True and data["metrics"] == ["top1"]
    result = check(read_csv(current), read_csv(base), metrics=("top1",))
    assert result.passed and {f.metric for f in result.findings} == {"top1"} and len(result.findings) == 3
    # Two metrics, repeated option: the speedup drop is back.
    out = invoke("check", current, "--baseline", base, "--metric", "top1", "--metric", "speedup")
    assert out.exit_code == 1 and "regressed: speedup -50.0%" in flat(out)


def test_unknown_metric_exits_2(tmp_path, base):
    assert_one_line_error(invoke("check", base, "--baseline", base, "--metric", "flops"), 2, "unknown metric(s) flops")
    with pytest.raises(UsageError, match="choose from top1, top5, speedup, gflops, tokens"):
        check(read_csv(base), read_csv(base), metrics=("top1", "latency"))


def test_join_tolerates_float_r_and_string_prop_attn(tmp_path, base):
    baseline = read_csv(base)
    current = baseline.copy()
    current["r"] = current["r"].astype(float)  # 8 vs 8.0, as after a column with an empty cell
    current["prop_attn"] = current["prop_attn"].map(str)  # True vs "True"
    current["infer_img_size"] = current["infer_img_size"].astype(float)
    assert current["r"].iloc[2] == 8.0 and isinstance(current["prop_attn"].iloc[1], str)
    result = check(current, baseline)
    assert result.passed and result.compared == 3 and result.missing_in_current == result.missing_in_baseline == ()
    assert {f.config for f in result.findings} == {NONE, TOME4, TOME8}
    # The same through files: r written as 8.0.
    as_float = tmp_path / "float.csv"
    pd.read_csv(base).assign(r=lambda f: f["r"].astype(float)).to_csv(as_float, index=False)
    assert "8.0" in as_float.read_text().splitlines()[3].split(",")
    out = invoke("check", as_float, "--baseline", base, "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["compared"] == 3


def test_check_never_holds_compiled_rows_to_eager_ones(tmp_path):
    eager = [row for row in golden_rows() if row.compile is None and row.error is None]
    current = write_csv([replace(row, compile="default") for row in eager], tmp_path / "compiled.csv")
    baseline = write_csv(eager, tmp_path / "eager.csv")
    with pytest.raises(UsageError, match="nothing to compare"):
        check(read_csv(current), read_csv(baseline))


def test_an_error_the_baseline_already_had_is_no_regression(tmp_path):
    golden = GOLDEN / "sweep.csv"
    result = check(read_csv(golden), read_csv(golden))
    assert result.passed and result.errors == () and result.compared == 6  # the compiled row is its own
    fixed = read_csv(golden)
    fixed.loc[5, "error"] = pd.NA
    fixed.loc[0, "error"] = "RuntimeError: boom"  # a new error on the unpatched row fails
    result = check(fixed, read_csv(golden))
    assert not result.passed and result.errors == (
        label(("tomebench_demo_vit.digits", "none", "0", "constant", "False", "", "fp32", "32", "32", "")),
    )


# ---------------------------------------------------------------- unusable input


def test_missing_file_exits_2(tmp_path, base):
    assert_one_line_error(invoke("check", tmp_path / "nope.csv", "--baseline", base), 2, "no such CSV file")
    assert_one_line_error(invoke("check", base, "--baseline", tmp_path / "nope.csv"), 2, "no such CSV file")


def test_csv_missing_identity_columns_exits_2(tmp_path, base):
    no_model = tmp_path / "no_model.csv"
    pd.read_csv(base).drop(columns=["model", "r"]).to_csv(no_model, index=False)
    assert_one_line_error(invoke("check", no_model, "--baseline", base), 2, "lacks the column(s) model, r")
    # read_csv pads columns an older file lacks, but check refuses to join on padded identity columns.
    no_dtype = tmp_path / "no_dtype.csv"
    pd.read_csv(base).drop(columns=["dtype"]).to_csv(no_dtype, index=False)
    assert_one_line_error(invoke("check", no_dtype, "--baseline", base), 2, "lacks the identity column(s) dtype")
    # A frame handed to check directly is held to every identity column.
    with pytest.raises(UsageError, match="the current CSV lacks the identity column"):
        check(pd.read_csv(base).drop(columns=["dtype", "infer_img_size"]), read_csv(base))
    assert set(IDENTITY) <= set(COLUMNS)


def test_empty_and_header_only_files_exit_2(tmp_path, base):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert_one_line_error(invoke("check", empty, "--baseline", base), 2, "is not a readable CSV")
    header = tmp_path / "header.csv"
    header.write_text(",".join(COLUMNS) + "\n")
    assert_one_line_error(invoke("check", header, "--baseline", base), 2, "the current CSV has no rows")
    assert_one_line_error(invoke("check", base, "--baseline", header), 2, "the baseline CSV has no rows")


def test_nothing_to_join_exits_2(tmp_path, base):
    other = write(tmp_path, "other.csv", [replace(row, model="deit_s") for row in base_rows()])
    report = tmp_path / "r.md"
    out = invoke("check", other, "--baseline", base, "--report", report)
    assert_one_line_error(out, 2, "no configuration of the current CSV matches one of the baseline")
    assert not report.exists()


# ---------------------------------------------------------------- outputs


def test_json_and_report_on_a_pass(tmp_path, base):
    report = tmp_path / "out" / "check.md"
    out = invoke("check", base, "--baseline", base, "--json", "--report", report)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert {"passed", "regressions", "missing_in_current"} <= set(data)
    assert data["passed"] is True and data["regressions"] == [] and data["missing_in_current"] == []
    assert data["compared"] == 3 and data["tolerances"]["speedup"] == 0.1
    md = report.read_text()
    assert md.startswith("## tomebench check: passed") and "FAILED" not in md
    assert "3 configurations compared" in md and "Everything within tolerance." in md


def test_report_lists_missing_and_error_rows(tmp_path, base):
    broken = replace(base_rows()[1], error="RuntimeError: bad shape")
    current = write(tmp_path, "cur.csv", [base_rows()[0], broken])
    report = tmp_path / "check.md"
    assert invoke("check", current, "--baseline", base, "--report", report).exit_code == 1
    md = report.read_text()
    assert md.startswith("## tomebench check: FAILED")
    assert f"### Rows with an error\n\n- {TOME4}" in md and f"### In the baseline, missing now\n\n- {TOME8}" in md
    assert label(("vit_t", "tome", "4", "constant", "True", "", "fp32", "224", "32", "")) == TOME4


# ---------------------------------------------------------------- cells not comparable, tolerances, readable failures


def _with_cell(path: Path, row: int, column: str, text: str) -> Path:
    """Rewrite one cell of a CSV as raw text (what a broken tool or a hand edit leaves)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = text
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "9" * 400])
def test_non_finite_or_huge_cells_are_not_comparable_and_fail(tmp_path, base, text):
    current = write(tmp_path, "cur.csv", base_rows())
    for broken in (_with_cell(base, 1, "speedup", text), _with_cell(current, 2, "top1", text)):
        assert broken.exists()
    result = check(read_csv(current), read_csv(base))
    bad = {(f.config, f.metric) for f in result.findings if f.status == "not comparable"}
    assert bad == {(TOME4, "speedup"), (TOME8, "top1")} and not result.passed
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    text_out = flat(out)
    assert "not comparable: speedup" in text_out and "not comparable: top1" in text_out
    assert "2 not comparable" in text_out
    data = json.loads(invoke("check", current, "--baseline", base, "--json").stdout)
    assert {(f["config"], f["metric"]) for f in data["not_comparable"]} == bad


def test_an_empty_baseline_cell_is_still_not_measured_there(tmp_path, base):
    # Empty means "the baseline never measured it" (a throughput-only baseline): nothing to hold the run to.
    _with_cell(base, 1, "top1", "")
    current = write(tmp_path, "cur.csv", base_rows())
    result = check(read_csv(current), read_csv(base))
    assert result.passed and not any(f.config == TOME4 and f.metric == "top1" for f in result.findings)


def test_huge_integer_identity_cell_does_not_crash(tmp_path, base):
    current = _with_cell(write(tmp_path, "cur.csv", base_rows()), 1, "r", "9" * 400)
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1 and "Traceback" not in out.output and "missing now" in out.output, out.output


@pytest.mark.parametrize(("flag", "value"), [("--speedup-tol", "nan"), ("--acc-tol", "-5"), ("--gflops-tol", "inf")])
def test_nan_negative_or_infinite_tolerance_is_a_usage_error(tmp_path, base, flag, value):
    result = invoke("check", base, "--baseline", base, flag, value)
    assert_one_line_error(result, 2, f"{flag} must be a finite number >= 0")
    with pytest.raises(UsageError):
        Tolerances(speedup=float("nan"))


def test_sweep_refuses_a_bad_tolerance_before_measuring(tmp_path, base):
    out = tmp_path / "never.csv"
    result = invoke(
        "sweep", "--model", "test_vit", "--no-pretrained", "--out", out, "--baseline", base, "--speedup-tol", "nan"
    )
    assert_one_line_error(result, 2, "--speedup-tol must be")
    assert not out.exists()


def test_missing_metric_column_shows_unmeasured_and_missing_identity_column_is_unusable(tmp_path, base):
    frame = pd.read_csv(write(tmp_path, "cur.csv", base_rows()))
    frame.drop(columns=["top1"]).to_csv(tmp_path / "no_top1.csv", index=False)
    out = invoke("check", tmp_path / "no_top1.csv", "--baseline", base)
    assert out.exit_code == 1, out.output
    text = flat(out)
    assert "74 -> unmeasured" in text and "unmeasured: top1" in text and " ok " not in text
    frame.drop(columns=["dtype"]).to_csv(tmp_path / "no_dtype.csv", index=False)
    assert_one_line_error(
        invoke("check", tmp_path / "no_dtype.csv", "--baseline", base), 2, "lacks the identity column"
    )


def test_markdown_report_escapes_cells_and_a_folder_report_names_report(tmp_path):
    rows = [replace(row, model="a|b*c") for row in planted(1, top1=70.0)]
    base = write(tmp_path, "base.csv", [replace(row, model="a|b*c") for row in base_rows()])
    current = write(tmp_path, "cur.csv", rows)
    report = tmp_path / "r.md"
    assert invoke("check", current, "--baseline", base, "--report", report).exit_code == 1
    table_rows = [line for line in report.read_text().splitlines() if line.startswith("| a")]
    assert len(table_rows) == 1
    assert table_rows[0].startswith(r"| a\|b\*c tome r=4") and table_rows[0].count(" | ") == 4, table_rows
    assert_one_line_error(
        invoke("check", current, "--baseline", base, "--report", tmp_path), 2, f"--report {tmp_path} is a directory"
    )


def test_no_matching_configuration_names_the_fields_that_differ(tmp_path, base):
    current = write(tmp_path, "cur.csv", [replace(row, infer_batch_size=128) for row in base_rows()])
    assert_one_line_error(
        invoke("check", current, "--baseline", base), 2, "they differ in batch size 128 (current) vs 32 (baseline)"
    )


def test_configurations_on_one_side_only_take_one_line_each(tmp_path, base):
    extra = [replace(base_rows()[1], r=r) for r in (1, 2, 3, 5, 6, 7)]
    current = write(tmp_path, "cur.csv", base_rows()[:2] + extra)  # tome r=8 missing, six new
    result = check(read_csv(current), read_csv(base))
    assert result.missing_in_baseline_summary == ("6 configurations: tome r=1..3,5..7 (vit_t, fp32, 224px, batch 32)")
    assert result.missing_in_current_summary == "1 configuration: tome r=8 (vit_t, fp32, 224px, batch 32)"
    out = invoke("check", current, "--baseline", base)
    assert out.exit_code == 1
    lines = [line for line in out.output.splitlines() if "configuration" in line and "│" in line]
    assert len(lines) == 2 and "new" in lines[0] + lines[1] and "missing now" in lines[0] + lines[1], out.output
    report = tmp_path / "r.md"
    invoke("check", current, "--baseline", base, "--report", report)
    md = report.read_text()
    assert "6 configurations: tome r=1..3,5..7" in md and "<details>" in md
