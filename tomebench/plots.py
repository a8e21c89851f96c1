"""Figures from tomebench CSVs. Pure: a DataFrame in, a matplotlib Figure out; nothing here measures.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so no global backend state is touched.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from tomebench.results import atomic_file

BASELINE = "none"


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that were measured (no error) and have a throughput."""
    ok = frame["error"].isna() | (frame["error"].astype("string").str.len() == 0)
    return frame[ok & frame["infer_samples_per_sec"].notna()]


def pareto_frontier(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points no other point beats on both x and y (both higher-is-better), sorted by x."""
    points = frame.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    best_y, keep = float("-inf"), []
    for index, value in points[y].items():
        if value > best_y:
            keep.append(index)
            best_y = value
    return points.loc[keep].sort_values(x)


def _title(frame: pd.DataFrame, what: str) -> str:
    first = frame.iloc[0]
    device = first.get("device_name") if pd.notna(first.get("device_name")) else first.get("device")
    return f"{what}\n{first['model']} · {device} · {first['dtype']} · batch {first['infer_batch_size']}"


def variant(frame: pd.DataFrame) -> pd.Series:
    """What a curve is named: the reducer, with its non-default options and schedule, e.g. "tome [features=q]"."""
    options = frame["reducer_options"].fillna("").astype(str) if "reducer_options" in frame else pd.Series("", frame.index)
    schedule = frame["schedule"].fillna("constant").astype(str) if "schedule" in frame else pd.Series("constant", frame.index)
    extra = (options + ("," + schedule).where(schedule != "constant", "")).str.strip(",")
    if "compile" in frame:  # a compiled configuration is another curve, never a point on the eager one
        mode = frame["compile"].fillna("").astype(str)
        extra = (extra + (",compiled " + mode).where(mode != "", "")).str.strip(",")
    return frame["reducer"].astype(str) + (" [" + extra + "]").where(extra != "", "")


def _curves(frame: pd.DataFrame):
    """(name, rows sorted by r) for each reducer variant; the unpatched baseline comes separately."""
    frame = frame[frame["reducer"] != BASELINE]
    for name, rows in frame.groupby(variant(frame), sort=False):
        yield name, rows.sort_values("r")


def speed_accuracy(frame: pd.DataFrame, x: str = "infer_samples_per_sec") -> Figure:
    """Throughput (or speedup) against top-1: one curve per reducer, points labelled with r, frontier marked."""
    frame = usable(frame).dropna(subset=["top1"])
    if frame.empty:
        raise ValueError("no row has both a throughput and a top-1 accuracy")
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for reducer, rows in _curves(frame):
        ax.plot(rows[x], rows["top1"], marker="o", label=reducer)
        for _, row in rows.iterrows():
            ax.annotate(f"r={row['r']}", (row[x], row["top1"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    base = frame[frame["reducer"] == BASELINE]
    if not base.empty:
        ax.scatter(base[x], base["top1"], marker="*", s=160, color="black", zorder=3, label="unpatched")
    front = pareto_frontier(frame, x, "top1")
    # The staircase of what is attainable: at any speed up to a frontier point's, that point's accuracy.
    ax.plot(front[x], front["top1"], drawstyle="steps-pre", linestyle="--", color="black", linewidth=1, alpha=0.6,
            zorder=4, label="Pareto frontier")
    ax.scatter(front[x], front["top1"], s=120, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
    ax.set_xlabel("speedup over unpatched (x)" if x == "speedup" else "throughput (images/s)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    dataset = frame["dataset"].dropna()
    ax.set_title(_title(frame, f"Speed vs accuracy{' on ' + str(dataset.iloc[0]) if len(dataset) else ''}"))
    return fig


def metric_vs_r(frame: pd.DataFrame, column: str, label: str) -> Figure:
    """`column` against r, one curve per reducer; the unpatched value as a horizontal line."""
    frame = usable(frame).dropna(subset=[column])
    if frame.empty:
        raise ValueError(f"no measured row has {column}")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for reducer, rows in _curves(frame):
        ax.plot(rows["r"], rows[column], marker="o", label=reducer)
    base = frame[frame["reducer"] == BASELINE]
    if not base.empty:
        ax.axhline(float(base[column].iloc[0]), color="black", linestyle=":", linewidth=1, label="unpatched")
    ax.set_xlabel("r (tokens removed per block)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(frame, f"{label.split(' (')[0]} vs r"))
    return fig


def main_figure(frame: pd.DataFrame) -> Figure:
    """The figure a sweep writes: speed vs accuracy when accuracy was measured, else speedup vs r."""
    if usable(frame)["top1"].notna().any():
        return speed_accuracy(frame)
    return metric_vs_r(frame, "speedup", "speedup over unpatched (x)")


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write fig as stem.png (150 dpi) and stem.svg; return the paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        with atomic_file(path, "wb") as handle:
            fig.savefig(handle, format=path.suffix[1:], dpi=150)
    return paths


def batch_sizes(frame: pd.DataFrame) -> list[int]:
    """The batch sizes a CSV's measured rows were timed at, smallest first."""
    return sorted(int(b) for b in usable(frame)["infer_batch_size"].dropna().unique())


def speedup_vs_batch(frame: pd.DataFrame) -> Figure:
    """Speedup over the unpatched model at the same batch size, against the batch size (log axis): one line per
    reducer variant and r, the unpatched model's 1.0 marked. Where ToMe starts to pay."""
    frame = usable(frame).dropna(subset=["speedup"])
    if len(batch_sizes(frame)) < 2:
        raise ValueError("speedup vs batch size needs rows at two batch sizes or more")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(1.0, color="black", linestyle=":", linewidth=1, label="unpatched (1.0)")
    patched = frame[frame["reducer"] != BASELINE]
    for (name, r), rows in patched.groupby([variant(patched), "r"], sort=False):
        rows = rows.sort_values("infer_batch_size")
        ax.plot(rows["infer_batch_size"], rows["speedup"], marker="o", label=f"{name} r={r}")
    sizes = batch_sizes(frame)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (images)")
    ax.set_ylabel("speedup over unpatched, same batch size (x)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    first = frame.iloc[0]
    device = first.get("device_name") if pd.notna(first.get("device_name")) else first.get("device")
    compiled = f" · compiled ({first['compile']})" if isinstance(first.get("compile"), str) and first["compile"] else ""
    ax.set_title(f"Speedup vs batch size\n{first['model']} · {device} · {first['dtype']}{compiled}")
    return fig
