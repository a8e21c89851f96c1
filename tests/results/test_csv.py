"""The reporting contract: Row -> CSV against a golden file, the header from the Row's fields, CSVs of older
versions still readable, and no partial file after a failed write."""

from __future__ import annotations

import csv
import math

import pandas as pd
import pytest

from tests.helpers import (
    GOLDEN,
    golden_rows,
)
from tomebench.errors import TomebenchError, UsageError
from tomebench.results.csv import read_csv, write_csv
from tomebench.results.row import COLUMNS


def test_csv_matches_golden_file(tmp_path):
    out = write_csv(golden_rows(), tmp_path / "sweep.csv")
    got, want = list(csv.reader(out.open())), list(csv.reader((GOLDEN / "sweep.csv").open()))
    assert got[0] == list(COLUMNS) == want[0]
    assert len(got) == len(want)
    for got_row, want_row in zip(got[1:], want[1:]):
        for name, a, b in zip(COLUMNS, got_row, want_row):
            try:
                assert math.isclose(float(a), float(b), rel_tol=1e-5), name
            except ValueError:
                assert a == b, name


def test_header_follows_row_fields_and_measure_contract():
    # The MEASURE.md columns, in order; new ones may only be appended.
    contract = [
        "model",
        "reducer",
        "r",
        "schedule",
        "prop_attn",
        "infer_img_size",
        "infer_batch_size",
        "dtype",
        "device",
        "infer_samples_per_sec",
        "infer_samples_per_sec_p10",
        "infer_samples_per_sec_p90",
        "infer_step_time",
        "speedup",
        "infer_gflops",
        "tokens_final",
        "peak_mem_mb",
        "top1",
        "top5",
        "n_images",
        "dataset",
        "param_count",
        "error",
    ]
    assert [c for c in COLUMNS if c in contract] == contract
    for name in ("device_name", "torch", "timm", "tomebench", "git_sha", "timestamp", "baseline_samples_per_sec"):
        assert name in COLUMNS


def test_older_csv_without_new_columns_is_read(tmp_path):
    old = tmp_path / "old.csv"
    pd.DataFrame(
        {
            "model": ["m"],
            "reducer": ["tome"],
            "r": [8],
            "schedule": ["constant"],
            "infer_samples_per_sec": [10.0],
            "legacy": ["kept"],
        }
    ).to_csv(old, index=False)
    frame = read_csv(old)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert frame["legacy"].iloc[0] == "kept" and pd.isna(frame["top1"].iloc[0])


def test_non_tomebench_csv_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(TomebenchError, match="lacks the column"):
        read_csv(bad)
    with pytest.raises(UsageError, match="no such CSV"):
        read_csv(tmp_path / "missing.csv")


def test_failed_write_leaves_no_partial_file(tmp_path):
    rows = golden_rows()
    target = tmp_path / "x.csv"

    def broken():
        yield rows[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_csv(broken(), target)
    assert list(tmp_path.iterdir()) == []
