"""What a sweep prints: the summary table leads with the speedup and names each row's own unpatched rate."""

from __future__ import annotations

from tests.helpers import (
    invoke,
    read_rows,
)

TINY = ["--model", "test_vit", "--no-pretrained", "--repeats", "2", "--batch-size", "2"]


def test_summary_leads_with_speedup_and_the_rows_own_unpatched_rate(tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *TINY, "--r", "0,2", "--max-retime", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "speedup" in line and "reducer" in line)
    assert header.index("speedup") < header.index("img/s") and "unpatched img/s" in header
    rows = read_rows(out)
    assert len({r["baseline_samples_per_sec"] for r in rows}) == 1 and rows[0]["baseline_samples_per_sec"]
    assert all(float(r["speedup_p10"]) <= float(r["speedup"]) <= float(r["speedup_p90"]) for r in rows)


def test_a_csv_too_long_to_print_names_its_failed_reducers_and_their_first_error():
    import pandas as pd

    from tomebench.report.console import long_summary

    frame = pd.DataFrame(
        {
            "reducer": ["none", "tome", "tome", "diffrate", "ppt", "ppt"],
            "error": [
                None,
                None,
                None,
                "UsageError: no released schedule\nsecond line",
                "ValueError: x",
                "ValueError: y",
            ],
        }
    )
    line = long_summary(frame)
    assert line.startswith("6 rows") and "3 with an error" in line
    assert "diffrate (1): UsageError: no released schedule" in line and "second line" not in line
    assert "ppt (2): ValueError: x" in line and "\n" not in line
    assert long_summary(frame.assign(error=None)).endswith("0 with an error")
    assert "and 1 more reducer(s)" in long_summary(frame, shown=1)
