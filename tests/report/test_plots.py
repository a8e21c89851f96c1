"""Figures: `tomebench plot` through Typer's runner, and the figure builders on hand-made frames and the golden CSV."""

from __future__ import annotations

import matplotlib
import pandas as pd
import pytest

from tests.helpers import (
    GOLDEN,
    assert_one_line_error,
    files,
    invoke,
)
from tomebench.report import plots
from tomebench.results.csv import read_csv

PLOT_KINDS = ("speed-accuracy", "top1-vs-r", "speedup-vs-r", "gflops-vs-r", "top1-vs-gmacs")


GOLDEN_CSV = GOLDEN / "sweep.csv"


# ---------------------------------------------------------------- tomebench plot


def test_plot_writes_every_figure_for_a_csv_with_accuracy(tmp_path):
    result = invoke("plot", str(GOLDEN_CSV), "-o", str(tmp_path / "fig"))
    assert result.exit_code == 0, result.output
    expected = {f"fig-{kind}.{ext}" for kind in PLOT_KINDS for ext in ("png", "svg")}
    assert files(tmp_path) == expected
    assert all((tmp_path / name).stat().st_size > 0 for name in expected)


def test_plot_skips_accuracy_figures_for_a_throughput_only_csv(tmp_path):
    frame = pd.read_csv(GOLDEN_CSV, dtype=str, keep_default_na=False)
    frame[["top1", "top5", "n_images", "dataset"]] = ""
    source = tmp_path / "throughput.csv"
    frame.to_csv(source, index=False)
    result = invoke("plot", str(source), "-o", str(tmp_path / "t"))
    assert result.exit_code == 0, result.output
    assert files(tmp_path) - {"throughput.csv"} == {
        f"t-{kind}.{ext}" for kind in ("speedup-vs-r", "gflops-vs-r") for ext in ("png", "svg")
    }
    assert "skipped speed-accuracy" in result.output and "skipped top1-vs-r" in result.output


def test_plot_of_several_batch_sizes_draws_one_point_per_configuration_and_the_batch_figure(tmp_path):
    # The same rows timed at batch 8 (the golden's) and at 64, where every speedup is 1.5 times as large.
    frame = pd.read_csv(GOLDEN_CSV, dtype=str, keep_default_na=False)
    larger = frame.copy()
    larger["infer_batch_size"] = "64"
    for column in ("speedup", "speedup_p10", "speedup_p90"):
        larger[column] = [f"{float(v) * 1.5:g}" if v else v for v in larger[column]]
    source = tmp_path / "batches.csv"
    pd.concat([frame, larger]).to_csv(source, index=False)
    result = invoke("plot", str(source), "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert {f"b-{kind}.png" for kind in (*PLOT_KINDS, "speedup-vs-batch")} <= files(tmp_path)
    figures = plots.figures()
    by_r = figures["speedup-vs-r"](read_csv(source)).axes[0]
    tome = by_r.containers[0]
    assert list(tome.lines[0].get_xdata()) == [4, 8]  # one point per r, not one per r and batch size
    assert "batch 64" in by_r.get_title()
    at_8 = figures["speedup-vs-r"](read_csv(GOLDEN_CSV)).axes[0].containers[0].lines[0].get_ydata()
    assert list(tome.lines[0].get_ydata()) == pytest.approx([1.5 * v for v in at_8])


def test_plot_defaults_to_the_csv_stem(tmp_path):
    copy = tmp_path / "run.csv"
    copy.write_bytes(GOLDEN_CSV.read_bytes())
    result = invoke("plot", str(copy))
    assert result.exit_code == 0, result.output
    assert {f"run-{kind}.png" for kind in PLOT_KINDS} <= files(tmp_path)


def test_plot_refuses_missing_and_foreign_csvs(tmp_path):
    result = invoke("plot", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "x"))
    assert_one_line_error(result, 2, "no such CSV file")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    result = invoke("plot", str(foreign), "-o", str(tmp_path / "x"))
    assert result.exit_code != 0
    assert_one_line_error(result, 2, "is not a tomebench CSV", "model")
    assert files(tmp_path) == {"foreign.csv"}


def test_plot_of_only_failed_rows_is_an_error(tmp_path):
    frame = pd.read_csv(GOLDEN_CSV, dtype=str, keep_default_na=False)
    frame["error"] = "RuntimeError: out of memory"
    failed = tmp_path / "failed.csv"
    frame.to_csv(failed, index=False)
    result = invoke("plot", str(failed), "-o", str(tmp_path / "f"))
    assert result.exit_code == 1, result.output
    assert "has no measured row to plot" in " ".join(result.output.split())
    assert files(tmp_path) == {"failed.csv"}


# ---------------------------------------------------------------- figure builders


def frame_of(points: list[tuple[str, int, float, float]], **extra) -> pd.DataFrame:
    """(reducer, r, throughput, top1) rows with the columns the figures read, all timed against one unpatched
    run of 100 images/s (so speedup = throughput / 100)."""
    base = dict(
        model="test_vit",
        dtype="fp32",
        device="cpu",
        device_name=None,
        infer_batch_size=8,
        error=None,
        dataset="digits-test",
        infer_gflops=1.0,
        baseline_samples_per_sec=100.0,
    )
    base.update(extra)
    rows = [
        dict(base, reducer=red, r=r, infer_samples_per_sec=speed, speedup=speed / 100.0, top1=top1)
        for red, r, speed, top1 in points
    ]
    return pd.DataFrame(rows)


def test_pareto_frontier_spans_reducers():
    frame = frame_of(
        [
            ("none", 0, 100.0, 90.0),
            ("tome", 4, 150.0, 89.0),
            ("tome", 8, 220.0, 85.0),
            ("prune", 4, 150.0, 88.0),  # same speed as tome r=4, worse accuracy: dominated
            ("prune", 8, 230.0, 80.0),
            ("kmeans", 4, 140.0, 89.5),
            ("kmeans", 8, 120.0, 85.0),  # slower and worse than kmeans r=4: dominated
            ("kmeans", 12, 260.0, float("nan")),  # no accuracy: not a point
        ]
    )
    front = plots.pareto_frontier(frame, "infer_samples_per_sec", "top1")
    got = list(zip(front["reducer"], front["r"]))
    assert got == [("none", 0), ("kmeans", 4), ("tome", 4), ("tome", 8), ("prune", 8)]
    assert front["infer_samples_per_sec"].is_monotonic_increasing
    assert front["top1"].is_monotonic_decreasing


def test_pareto_frontier_drops_exact_ties_and_equal_accuracy_at_lower_speed():
    frame = frame_of([("a", 1, 10.0, 5.0), ("b", 1, 10.0, 5.0), ("c", 1, 8.0, 5.0), ("d", 1, 12.0, 4.0)])
    front = plots.pareto_frontier(frame, "infer_samples_per_sec", "top1")
    assert len(front) == 2 and list(front["top1"]) == [5.0, 4.0] and list(front["reducer"])[1] == "d"


def test_speed_accuracy_draws_speedup_with_bars_and_joins_points_only_without_zig_zags():
    frame = frame_of(
        [
            ("none", 0, 100.0, 90.0),
            ("tome", 8, 220.0, 85.0),
            ("tome", 4, 150.0, 89.0),
            ("prune", 4, 150.0, 88.0),
            ("prune", 8, 130.0, 80.0),
            ("prune", 12, 230.0, 70.0),  # speedup zig-zags in r
            ("kmeans", 4, 140.0, 89.5),
        ],
        error=None,
        speedup_p10=None,
        speedup_p90=None,
    )  # an older CSV: no paired spread
    frame["infer_samples_per_sec_p10"] = frame["infer_samples_per_sec"] * 0.9
    frame["infer_samples_per_sec_p90"] = frame["infer_samples_per_sec"] * 1.1
    frame.loc[len(frame)] = dict(frame.iloc[1], reducer="broken", r=4, error="RuntimeError: boom")
    fig = plots.speed_accuracy(frame)
    ax = fig.axes[0]
    _, labels = ax.get_legend_handles_labels()
    # tome's r=4 (1.35-1.65x) leads prune's and kmeans' r=4 only within its interval: greyed, not a clean win.
    expected = ["tome", "prune", "kmeans", "unpatched", "Pareto frontier", "frontier, intervals overlap"]
    assert sorted(labels) == sorted(expected)
    assert ax.get_xlabel().startswith("speedup over the unpatched model")
    bars = {container.get_label(): container for container in ax.containers}
    assert list(bars["tome"].lines[0].get_xdata()) == [1.5, 2.2]  # speedup, sorted by r
    # Bars from the row's own images/s p10/p90 over its unpatched reference: 135/100 and 165/100 around 1.5.
    segment = bars["tome"].lines[2][0].get_segments()[0]
    assert [round(v, 6) for v in (segment[0][0], segment[1][0])] == [1.35, 1.65]
    joined = {line.get_label() for line in ax.get_lines()}
    assert "_tome in r order" in joined and "_prune in r order" not in joined  # markers only for a zig-zag
    title = ax.get_title()
    assert "test_vit" in title and "cpu" in title and "fp32" in title and "digits-test" in title
    texts = [t for t in ax.texts if t.get_text().startswith("r=")]
    assert texts and not _overlapping(fig, texts)


def _overlapping(fig, texts) -> bool:
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in texts]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_pareto_frontier_and_figure_use_speedup_not_raw_throughput_of_different_groups():
    # Two timing groups on a machine whose load changed between them: group 2 ran at twice the raw images/s.
    # kmeans r=4 is slower than its own unpatched run (0.8x) but its raw images/s (160) beat tome's (150).
    frame = frame_of([("none", 0, 100.0, 90.0), ("tome", 4, 150.0, 89.0), ("tome", 8, 190.0, 86.0)])
    late = frame_of([("kmeans", 4, 160.0, 89.0), ("kmeans", 8, 180.0, 85.0)], baseline_samples_per_sec=200.0)
    late["speedup"] = late["infer_samples_per_sec"] / 200.0
    frame = pd.concat([frame, late], ignore_index=True)
    on_raw = plots.pareto_frontier(frame, "infer_samples_per_sec", "top1")
    assert ("kmeans", 4) in list(zip(on_raw["reducer"], on_raw["r"]))  # what pooling raw images/s would claim
    fig = plots.speed_accuracy(frame)
    ax = fig.axes[0]
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto frontier"][0]
    assert list(front.get_xdata()) == [1.0, 1.5, 1.9] and list(front.get_ydata()) == [90.0, 89.0, 86.0]
    kmeans = {c.get_label(): c for c in ax.containers}["kmeans"]
    assert list(kmeans.lines[0].get_xdata()) == [0.8, 0.9]


def test_titles_prefer_the_device_name():
    frame = frame_of(
        [("none", 0, 100.0, 90.0), ("tome", 4, 150.0, 89.0)], device="cuda:0", device_name="NVIDIA H200", dtype="fp16"
    )
    for fig in (plots.speed_accuracy(frame), plots.metric_vs_r(frame, "infer_gflops", "GFLOPs per image")):
        title = fig.axes[0].get_title()
        assert "test_vit" in title and "NVIDIA H200" in title and "fp16" in title and "batch 8" in title


def test_golden_csv_figures_have_a_curve_per_reducer():
    frame = read_csv(GOLDEN_CSV)
    fig = plots.metric_vs_r(frame, "speedup", plots.SPEEDUP_LABEL)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == [
        "unpatched",
        "tome [eager]",
        "tome [distance=euclidean,features=q,eager]",
        "tome [compiled default]",
    ]
    # The failed r=99 row is not plotted; speedup has its paired p10-p90 bars from the CSV.
    tome = fig.axes[0].containers[0]
    assert list(tome.lines[0].get_xdata()) == [4, 8]
    segment = tome.lines[2][0].get_segments()[0]
    assert [round(v, 4) for v in (segment[0][1], segment[1][1])] == [1.4551, 1.5451]


def test_every_axis_label_fits_inside_its_figure():
    # A label wider than the figure is cut off at the edge of the PNG, which a reader cannot undo.
    frame = read_csv(GOLDEN_CSV)
    figures = [
        plots.metric_vs_r(frame, "speedup", plots.SPEEDUP_LABEL),
        plots.speed_accuracy(frame),
        plots.metric_vs_r(frame, "infer_gflops", "GFLOPs per image"),
    ]
    for fig in figures:
        fig.draw_without_rendering()  # runs the constrained layout, as saving does
        box = fig.bbox
        for label in (fig.axes[0].xaxis.label, fig.axes[0].yaxis.label, fig.axes[0].title):
            extent = label.get_window_extent()
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, (
                label.get_text()
            )


def test_plots_from_the_golden_csv(tmp_path):
    frame = read_csv(GOLDEN_CSV)
    front = plots.pareto_frontier(plots.usable(frame), "infer_samples_per_sec", "top1")
    # Each point is the fastest at its accuracy: none (1000, 98.06), tome r=4 (1500, 97.5), r=8 (2100, 91.25).
    assert list(front["r"]) == [0, 4, 8]
    fig = plots.main_figure(frame)
    assert fig.axes[0].get_ylabel() == "top-1 accuracy (%)"
    paths = plots.save(fig, tmp_path / "p")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)


def test_figure_needs_two_batch_sizes():
    frame = pd.DataFrame(
        {
            "reducer": ["none"],
            "r": [0],
            "infer_batch_size": [8],
            "speedup": [1.0],
            "infer_samples_per_sec": [10.0],
            "error": [pd.NA],
        }
    )
    with pytest.raises(ValueError, match="two batch sizes"):
        plots.speedup_vs_batch(frame)


def test_top1_against_gmacs_plots_half_the_gflops_of_each_row():
    frame = read_csv(GOLDEN_CSV)
    ax = plots.top1_vs_gmacs(frame).axes[0]
    usable = plots.usable(frame).dropna(subset=["top1", "infer_gflops"])
    drawn = sorted(x for line in ax.get_lines() for x in line.get_xdata())
    drawn += [offset[0] for collection in ax.collections for offset in collection.get_offsets()]
    expected = sorted(pd.to_numeric(usable["infer_gflops"]) / 2)
    assert sorted(drawn) == pytest.approx(expected)
    assert ax.get_xlabel().startswith("GMACs per image")


def test_a_knob_matched_per_r_is_a_point_on_one_curve_and_an_ablation_stays_a_variant():
    frame = frame_of(
        [
            ("none", 0, 100.0, 90.0),
            ("tome", 4, 150.0, 89.0),
            ("tome", 4, 150.0, 88.0),
            ("evit", 4, 140.0, 85.0),
            ("evit", 8, 190.0, 80.0),
        ],
        error=None,
    )
    # --match gmacs gave evit a keep rate per r; tome's second row is an ablation at the same r.
    frame["reducer_options"] = ["", "", "distance=euclidean", "keep_rate=0.7", "keep_rate=0.5"]
    assert list(plots.variant(frame)) == ["none", "tome", "tome [distance=euclidean]", "evit", "evit"]


def test_each_reducer_keeps_one_distinct_style_across_figures_even_past_ten_reducers():
    # The demo comparison has 11 reducers: with tab10 alone the 11th took the 1st one's colour (tofu drew as tome).
    names = [f"red{i:02d}" for i in range(11)]
    frame = frame_of(
        [("none", 0, 100.0, 90.0)]
        + [(name, r, 100.0 + 10 * i + r, 89.0 - i - r) for i, name in enumerate(names) for r in (2, 4)]
    )
    frame["infer_gflops"] = [2.0] + [2.0 - 0.1 * r for _ in names for r in (2, 4)]

    def legend(fig) -> dict[str, tuple]:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        out = {}
        for handle, label in zip(handles, labels):
            line = handle.lines[0] if hasattr(handle, "lines") else handle  # errorbar containers hold their line
            if label in names:
                out[label] = (tuple(matplotlib.colors.to_rgb(line.get_color())), line.get_marker())
        return out

    speed = legend(plots.speed_accuracy(frame))
    cost = legend(plots.top1_vs_gmacs(frame))
    by_r = legend(plots.metric_vs_r(frame, "top1", "top-1 (%)"))
    assert set(speed) == set(names)
    assert speed == cost == by_r
    assert len(set(speed.values())) == len(names)
