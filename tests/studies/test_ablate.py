"""The ablation study (the paper's Table 1): one factor varied at a time, the rows that record it, its Markdown
tables, and the `ablate` command."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

from tests.helpers import (
    GOLDEN,
    assert_one_line_error,
    invoke,
)
from tests.helpers import TOME_OPTIONS as OPTIONS
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.results.csv import read_csv
from tomebench.results.journal import Journal
from tomebench.studies import ablate

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


def test_ablate_reads_r_from_a_config_file_as_a_number(tmp_path):
    config = tmp_path / "ab.toml"
    config.write_text('model = "test_vit"\npretrained = false\nr = 4\nrepeats = 1\nbatch_size = 2\ndevice = "cpu"\n')
    out = tmp_path / "ab.csv"
    result = invoke("ablate", "--config", str(config), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    tome_rows = rows[rows["reducer"] == "tome"]
    assert set(tome_rows["r"]) == {4} and set(tome_rows["tokens_final"]) == {101 - 6 * 4}  # constant r=4
    config.write_text('r = "0..4"\n')
    result = invoke("ablate", "--config", str(config), "--out", str(out))
    assert_one_line_error(result, 2, "ablate takes one r")


def test_ablate_and_schedules_commands_write_their_reports_and_resume(tmp_path):
    out = tmp_path / "ab.csv"
    result = invoke(
        "ablate",
        "--model",
        "test_vit",
        "--no-pretrained",
        "--r",
        "4",
        "--repeats",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "similarity features" in result.output and (tmp_path / "ab.md").read_text().startswith("## ToMe ablation")
    assert (tmp_path / "ab.png").stat().st_size > 0
    out = tmp_path / "sc.csv"
    args = [
        "schedules",
        "--samples",
        "4",
        "--repeats",
        "1",
        "--limit",
        "40",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]  # the demo model on its digits: the figure needs accuracy
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum("," in row["schedule"] for row in rows) == 4 and (tmp_path / "sc.png").stat().st_size > 0
    result = invoke(*args, "--resume")
    assert result.exit_code == 0 and "nothing to measure" in result.output, result.output
