"""`sweep --baseline`: measure, then hold the new CSV to a baseline, before measuring when the baseline is unusable
(the gate itself is tested on hand-made rows in tests/report/test_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import (
    assert_one_line_error,
    flat,
    invoke,
)
from tomebench.report.gate import check
from tomebench.results.csv import read_csv

TINY = ["--model", "test_vit", "--no-pretrained", "--r", "0,4", "--repeats", "2", "--batch-size", "2"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("swept") / "A.csv"
    result = invoke("sweep", *TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_sweep_against_its_own_baseline_passes(swept, tmp_path):
    out = tmp_path / "B.csv"
    result = invoke("sweep", *TINY, "--baseline", swept, "--out", out, "--speedup-tol", "10")
    assert result.exit_code == 0, result.output
    assert "check passed" in flat(result) and "check: 3 configurations compared" in flat(result)
    checked = check(read_csv(out), read_csv(swept), metrics=("gflops", "tokens"))
    assert checked.compared == 3 and len(checked.findings) == 6
    assert all(f.status == "ok" and f.current == f.baseline for f in checked.findings)


def test_sweep_against_a_baseline_with_fewer_tokens_fails(swept, tmp_path):
    edited = tmp_path / "edited.csv"
    frame = pd.read_csv(swept)
    assert list(frame["tokens_final"]) == [101, 101, 77]
    frame.loc[frame["r"] == 4, "tokens_final"] = 76
    frame.to_csv(edited, index=False)
    out = tmp_path / "C.csv"
    result = invoke("sweep", *TINY, "--baseline", edited, "--out", out, "--speedup-tol", "10")
    assert result.exit_code == 1, result.output
    text = flat(result)
    assert "regressed: tokens +1" in text and "check failed: 1 regression(s)" in text
    assert out.is_file()  # the measurement is kept even though the gate failed


def test_sweep_with_missing_baseline_fails_before_measuring(tmp_path):
    out = tmp_path / "D.csv"
    result = invoke("sweep", *TINY, "--baseline", tmp_path / "nope.csv", "--out", out)
    assert_one_line_error(result, 2, "no such CSV file")
    assert "timing" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []
