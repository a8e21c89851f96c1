"""Figures from tomebench CSVs. Pure: a DataFrame in, a matplotlib Figure out; nothing here measures.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so no global backend state is touched.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from tomebench.results.csv import atomic_file

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
    modes = frame["compile"].dropna().astype(str) if "compile" in frame else pd.Series(dtype=str)
    modes = sorted(m for m in modes.unique() if m)
    # A compiled run says so: its speedups are over the compiled unpatched model, not over eager.
    # Mixed frames (an eager and a compiled run plotted together) say both, as their curves do.
    eager = "compile" not in frame or bool((frame["compile"].fillna("").astype(str) == "").any())
    compiled = [f"{'eager and ' if eager else ''}compiled ({', '.join(modes)})"] if modes else []
    parts = [str(first["model"]), str(device), str(first["dtype"]), f"batch {first['infer_batch_size']}", *compiled]
    return f"{what}\n{_wrap(parts)}"


def _wrap(parts: list[str], width: int = 64) -> str:
    """Parts joined with " · ", broken into lines of at most `width` characters at the separators, so a long model
    or device name never runs past the figure's edge (where the PNG would cut it)."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] += f" · {part}"
    return "\n".join(lines)


def variant(frame: pd.DataFrame) -> pd.Series:
    """What a curve is named: the reducer, with its non-default options and schedule, e.g. "tome [features=q]", and
    "no prop_attn" where rows of that reducer run both with and without proportional attention (an ablation)."""
    blank = pd.Series("", frame.index)
    options = frame["reducer_options"].fillna("").astype(str) if "reducer_options" in frame else blank
    options = _without_knobs(frame, options)
    schedule = frame["schedule"].fillna("constant").astype(str) if "schedule" in frame else blank + "constant"
    extra = (options + ("," + schedule).where(~schedule.isin(["constant", "native"]), "")).str.strip(",")
    if "prop_attn" in frame:
        prop = frame["prop_attn"].astype(str).str.lower() == "true"
        mixed = prop.groupby(frame["reducer"]).transform("nunique") > 1
        extra = (extra + ",no prop_attn").where(mixed & ~prop, extra).str.strip(",")
    mode = frame["compile"].fillna("").astype(str) if "compile" in frame else blank
    if mode.nunique() > 1:  # compiled and eager rows in one frame: separate curves, never points of one
        extra = (extra + (",compiled " + mode).where(mode != "", ",eager")).str.strip(",")
    return frame["reducer"].astype(str) + (" [" + extra + "]").where(extra != "", "")


def _without_knobs(frame: pd.DataFrame, options: pd.Series) -> pd.Series:
    """Options minus each reducer's knob: an option every row of the reducer names, with a different value in each
    (the keep rate `--match gmacs` chose for each of ToMe's r, or a ratio swept as a list), says where a point lies
    on the reducer's curve, as r does for ToMe; it is not another curve. An option some rows leave at its default
    (an ablation) stays a variant."""
    if not options.str.len().any():
        return options
    parsed = options.map(lambda text: dict(item.split("=", 1) for item in text.split(",") if "=" in item))
    knobs: dict[str, set[str]] = {}
    for reducer, rows in parsed.groupby(frame["reducer"]):
        if len(rows) < 2:
            continue
        for key in set.intersection(*(set(values) for values in rows)):
            if len({values[key] for values in rows}) == len(rows):
                knobs.setdefault(reducer, set()).add(key)
    return pd.Series(
        [
            ",".join(f"{k}={v}" for k, v in values.items() if k not in knobs.get(reducer, ()))
            for reducer, values in zip(frame["reducer"], parsed)
        ],
        index=frame.index,
    )


def _curves(frame: pd.DataFrame):
    """(name, rows sorted by r) for each reducer variant; the unpatched baseline comes separately."""
    frame = frame[frame["reducer"] != BASELINE]
    for name, rows in frame.groupby(variant(frame), sort=False):
        yield name, rows.sort_values("r")


def styles(frame: pd.DataFrame) -> dict[str, tuple[tuple[float, float, float], str]]:
    """(colour, marker) of each reducer variant in frame, the same in every figure drawn from it and no two alike.

    Up to 10 variants take tab10 with circles. Beyond that tab20's dark shades come first, then its light ones with
    squares: tab20 pairs a dark and a light shade of one hue, so the marker is what tells a pair apart (the demo
    comparison has 11 reducers; an ablation 13)."""
    names = [name for name, _ in _curves(usable(frame))]
    if len(names) <= 10:
        chosen = [(colour, "o") for colour in matplotlib.colormaps["tab10"].colors]
    else:
        tab20 = matplotlib.colormaps["tab20"].colors
        chosen = [(colour, "o") for colour in tab20[0::2]] + [(colour, "s") for colour in tab20[1::2]]
    return {name: chosen[i % len(chosen)] for i, name in enumerate(names)}


def speedup_bounds(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(low, high) of each row's speedup, as its error bar: the 95% interval of the median when the CSV has it (how
    well the speedup is known); else the p10-p90 of the paired per-round ratios; for older CSVs, the row's own
    images/s p10/p90 over its unpatched reference (`baseline_samples_per_sec`, else images/s / speedup). Rows with
    none of these give NaN (no error bar)."""
    nan = pd.Series(float("nan"), frame.index)
    speedup = pd.to_numeric(frame["speedup"], errors="coerce")
    rate = pd.to_numeric(frame.get("infer_samples_per_sec"), errors="coerce")
    reference = pd.to_numeric(frame.get("baseline_samples_per_sec", nan), errors="coerce").fillna(rate / speedup)
    bounds = []
    for interval, paired, raw in (
        ("speedup_ci_low", "speedup_p10", "infer_samples_per_sec_p10"),
        ("speedup_ci_high", "speedup_p90", "infer_samples_per_sec_p90"),
    ):
        derived = pd.to_numeric(frame.get(raw, nan), errors="coerce") / reference
        own = pd.to_numeric(frame.get(paired, nan), errors="coerce").fillna(derived)
        bounds.append(pd.to_numeric(frame.get(interval, nan), errors="coerce").fillna(own))
    return bounds[0], bounds[1]


def bars_label(frame: pd.DataFrame) -> str:
    """What a figure's speedup bars are, said on its axis."""
    intervals = pd.to_numeric(frame.get("speedup_ci_low", pd.Series(dtype=float)), errors="coerce").notna()
    return "95% interval of the median" if len(intervals) and intervals.all() else "p10-p90 of paired rounds"


# A speedup whose 95% interval reaches further than this from its median, either side, is too noisy to rank.
RANKABLE = 0.05


def speed_frontier(frame: pd.DataFrame) -> pd.DataFrame:
    """The speed-accuracy frontier that noise cannot carry, sorted by speedup: the points at least as fast as the
    unpatched model (below 1.0x a point buys nothing) that no other point beats clearly. q beats p clearly when q
    is at least as accurate (accuracy is exact) and faster beyond both their intervals (q's low end above p's high
    end); a point whose interval overlaps a more accurate one's stays, so an unlucky round cannot push it off and a
    lucky one cannot put another over it. A column `clear` says whether a point's interval stays clear of its
    neighbours' on the frontier."""
    low, high = speedup_bounds(frame)
    rows = frame.assign(_low=low.fillna(frame["speedup"]), _high=high.fillna(frame["speedup"]))
    rows = rows.dropna(subset=["speedup", "top1"])
    rows = rows[pd.to_numeric(rows["speedup"]) >= 1.0 - 1e-9]
    kept = []
    for index, p in rows.iterrows():
        beaten = ((rows["top1"] >= p["top1"]) & (rows["_low"] > p["_high"])) | (
            (rows["top1"] > p["top1"]) & (rows["_low"] >= p["_high"])
        )
        if not beaten.drop(index).any():
            kept.append(index)
    front = rows.loc[kept].sort_values(["speedup", "top1"])
    clear = []
    for position in range(len(front)):
        here = front.iloc[position]
        neighbours = [front.iloc[k] for k in (position - 1, position + 1) if 0 <= k < len(front)]
        clear.append(all(here["_low"] > n["_high"] or here["_high"] < n["_low"] for n in neighbours))
    return front.assign(clear=clear).drop(columns=["_low", "_high"])


def too_noisy(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose speedup interval reaches more than RANKABLE from the median: too noisy to rank."""
    low, high = speedup_bounds(frame)
    speedup = pd.to_numeric(frame["speedup"], errors="coerce")
    wide = ((speedup - low) > RANKABLE * speedup) | ((high - speedup) > RANKABLE * speedup)
    return frame[wide.fillna(False) & (frame["reducer"] != BASELINE)]


def speedup_errors(frame: pd.DataFrame, column: str = "speedup"):
    """matplotlib's (2, N) xerr/yerr for a speedup column (None for any other column): the distances from each
    median down and up to its bounds (`speedup_bounds`)."""
    if column != "speedup":
        return None
    lo, hi = speedup_bounds(frame)
    value = pd.to_numeric(frame[column], errors="coerce")
    # A median can sit outside its own p10-p90 only by rounding; never draw a negative bar.
    return [(value - lo).clip(lower=0).fillna(0).to_numpy(), (hi - value).clip(lower=0).fillna(0).to_numpy()]


def monotone(values: pd.Series) -> bool:
    return bool(values.is_monotonic_increasing or values.is_monotonic_decreasing)


SPEEDUP_LABEL = "speedup over the unpatched model (x; bars: p10-p90 of paired rounds)"


def speedup_label(frame: pd.DataFrame) -> str:
    """The speedup axis, naming what its bars are."""
    return f"speedup over the unpatched model (x; bars: {bars_label(frame)})"


def speed_accuracy(frame: pd.DataFrame) -> Figure:
    """Speedup against top-1: each reducer's points with p10-p90 bars, its points joined in r order only where
    speedup rises or falls steadily with r (a line through noise would suggest a trend that is not there), the
    Pareto frontier as a staircase, and labels (r=...), none overlapping: the frontier's and each reducer's ends
    first, the others where there is room.

    The speed axis is always the paired `speedup`: raw images/s of different timing groups are not comparable.
    """
    style = styles(frame)  # before rows are dropped, so each figure of one CSV agrees
    frame = usable(frame).dropna(subset=["top1", "speedup"])
    if frame.empty:
        raise ValueError("no row has both a speedup and a top-1 accuracy")
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    x = "speedup"
    points = []  # (x, y, text, priority, colour): what may be labelled; lower priority first
    for reducer, rows in _curves(frame):
        colour, marker = style[reducer]
        ax.errorbar(
            rows[x],
            rows["top1"],
            xerr=speedup_errors(rows),
            fmt=marker,
            markersize=5,
            capsize=2,
            elinewidth=0.8,
            alpha=0.9,
            label=reducer,
            zorder=3,
            color=colour,
        )
        if len(rows) > 1 and monotone(rows[x]):
            ax.plot(
                rows[x], rows["top1"], color=colour, linewidth=1, alpha=0.5, zorder=2, label=f"_{reducer} in r order"
            )
        for position, (_, row) in enumerate(rows.iterrows()):
            end = position in (0, len(rows) - 1)
            points.append((row[x], row["top1"], f"r={row['r']}", 1 if end else 2, colour))
    base = frame[frame["reducer"] == BASELINE]
    if not base.empty:
        ax.scatter(base[x], base["top1"], marker="*", s=160, color="black", zorder=4, label="unpatched")
    front = speed_frontier(frame)
    _draw_frontier(ax, front)
    on_front = {(float(a), float(b)) for a, b in zip(front[x], front["top1"])}
    # Every point may be labelled; the frontier's first, then each reducer's ends, then the rest where room is left.
    labels = [
        (a, b, text, 0 if (float(a), float(b)) in on_front else prio, colour) for a, b, text, prio, colour in points
    ]
    ax.axvline(1.0, color="0.6", linewidth=0.8, zorder=1)
    ax.set_xlabel(speedup_label(frame))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    dataset = frame["dataset"].dropna()
    ax.set_title(_title(frame, f"Speed vs accuracy{' on ' + str(dataset.iloc[0]) if len(dataset) else ''}"))
    _say_noisy(ax, frame)
    if frame.loc[frame["reducer"] != BASELINE, "r"].nunique() > 1:  # one r throughout (an ablation): nothing to say
        # Marker half-widths in points: a plain point, a frontier ring (s=120), the unpatched star (s=160).
        obstacles = [(a, b, 4) for a, b in zip(frame[x], frame["top1"])]
        obstacles += [(a, b, 7) for a, b in zip(front[x], front["top1"])]
        obstacles += [(a, b, 7) for a, b in zip(base[x], base["top1"])]
        place_labels(ax, labels, obstacles)
    return fig


def _draw_frontier(ax, front: pd.DataFrame) -> None:
    """The frontier as a staircase (at any speed up to a frontier point's, that point's accuracy), solid rings on
    points whose interval is clear of their neighbours', grey dotted rings on those the clock cannot tell apart."""
    if front.empty:
        return
    ax.plot(
        front["speedup"],
        front["top1"],
        drawstyle="steps-pre",
        linestyle="--",
        color="black",
        linewidth=1,
        alpha=0.6,
        zorder=4,
        label="Pareto frontier",
    )
    clear, unclear = front[front["clear"]], front[~front["clear"]]
    ax.scatter(clear["speedup"], clear["top1"], s=120, facecolors="none", edgecolors="black", linewidths=1.2, zorder=5)
    if len(unclear):
        ax.scatter(
            unclear["speedup"],
            unclear["top1"],
            s=120,
            facecolors="none",
            edgecolors="0.55",
            linewidths=1.2,
            linestyle=":",
            zorder=5,
            label="frontier, intervals overlap",
        )


def _say_noisy(ax, frame: pd.DataFrame) -> None:
    """On the figure itself, for a reader who sees only the PNG: which points the clock could not rank."""
    noisy = too_noisy(frame)
    if len(noisy):
        total = int((frame["reducer"] != BASELINE).sum())
        ax.text(
            0.02,
            0.03,
            f"timing too noisy to rank {len(noisy)} of {total} points (interval beyond "
            f"±{RANKABLE:.0%});\nsee the console; time longer (--time-budget) or on a quieter machine",
            transform=ax.transAxes,
            fontsize=7,
            color="darkred",
            va="bottom",
            zorder=6,
            bbox=dict(facecolor="white", edgecolor="darkred", alpha=0.85),
        )


# Where a label may go, in points from its point: right, above-right, below-right, left, above, below, further out.
# The second ring clears the larger markers (a frontier ring, the unpatched star).
_OFFSETS = (
    (5, 3),
    (5, 9),
    (5, -11),
    (-5, 3),
    (-5, -11),
    (0, 11),
    (0, -15),
    (9, 1),
    (9, -9),
    (-9, 1),
    (-9, -9),
    (0, 14),
    (0, -19),
    (12, 16),
    (12, -20),
    (-12, 16),
    (-12, -20),
)


def place_labels(ax, labels, obstacles=(), fontsize: float = 7) -> int:
    """Annotate (x, y, text, priority, colour) points so that no two labels overlap each other or a marker
    (obstacles: (x, y, half-width in points)).

    Labels are placed in priority order (lower first), each at the first free offset of _OFFSETS inside the axes; a
    label with no free place is left out rather than drawn over another. Returns how many were placed. The geometry is
    taken after the figure's layout, in display units, with text sized by its character count.
    """
    fig = ax.figure
    fig.draw_without_rendering()  # settle the constrained layout, so data -> display is final
    to_display = ax.transData.transform
    scale = fig.dpi / 72  # points -> display units
    frame = ax.bbox  # a label must not leave the axes, where the spine or the title would cut it
    taken = []
    for a, b, half in obstacles:
        px, py = to_display((a, b))
        taken.append((px - half * scale, py - half * scale, px + half * scale, py + half * scale))
    placed = 0
    for a, b, text, _, colour in sorted(labels, key=lambda item: item[3]):
        px, py = to_display((a, b))
        width, height = 0.62 * fontsize * len(text) * scale, fontsize * scale
        for dx, dy in _OFFSETS:
            left = px + dx * scale - (width if dx < 0 else width / 2 if dx == 0 else 0)
            bottom = py + dy * scale
            box = (left, bottom, left + width, bottom + height)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            if inside and all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
                gap = 3 * scale  # so neighbouring labels never read as one ("r=7r=1")
                taken.append((box[0] - gap, box[1], box[2] + gap, box[3]))
                align = "right" if dx < 0 else "center" if dx == 0 else "left"
                note = ax.annotate(
                    text,
                    (a, b),
                    textcoords="offset points",
                    xytext=(dx, dy),
                    fontsize=fontsize,
                    ha=align,
                    va="bottom",
                    color=colour,
                )
                note.set_in_layout(False)  # placed against the settled layout; must not move it
                placed += 1
                break
    return placed


def metric_vs_r(frame: pd.DataFrame, column: str, label: str) -> Figure:
    """`column` against r, one curve per reducer; the unpatched value as a horizontal line."""
    style = styles(frame)  # before rows are dropped, so each figure of one CSV agrees
    frame = usable(frame).dropna(subset=[column])
    if frame.empty:
        raise ValueError(f"no measured row has {column}")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for reducer, rows in _curves(frame):
        colour, marker = style[reducer]
        # x is r, so a line in r order is honest here; speedup gets its p10-p90 bars.
        ax.errorbar(
            rows["r"],
            rows[column],
            yerr=speedup_errors(rows, column),
            marker=marker,
            markersize=4,
            capsize=2,
            elinewidth=0.8,
            color=colour,
            label=reducer,
        )
    base = frame[frame["reducer"] == BASELINE]
    if not base.empty:
        ax.axhline(float(base[column].iloc[0]), color="black", linestyle=":", linewidth=1, label="unpatched")
    ax.set_xlabel("r (tokens removed per block)")
    # The speedup label with its bar legend is wider than the figure is tall: its parenthesis goes on a second line.
    ax.set_ylabel(label.replace(" (", "\n(", 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(frame, f"{label.split(' (')[0]} vs r"))
    return fig


GMACS_LABEL = 'GMACs per image (multiply-adds, as the papers\' "GFLOPs")'


def top1_vs_gmacs(frame: pd.DataFrame) -> Figure:
    """Top-1 against GMACs per image (half of infer_gflops): the comparison at equal cost, machine-independent, one
    curve per reducer variant joined in cost order, the unpatched model as a star."""
    style = styles(frame)  # before rows are dropped, so each figure of one CSV agrees
    frame = usable(frame).dropna(subset=["top1", "infer_gflops"])
    if frame.empty:
        raise ValueError("no row has both a top-1 accuracy and GFLOPs")
    frame = frame.assign(gmacs=pd.to_numeric(frame["infer_gflops"], errors="coerce") / 2)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for name, rows in _curves(frame):
        colour, marker = style[name]
        rows = rows.sort_values("gmacs")
        ax.plot(rows["gmacs"], rows["top1"], marker=marker, markersize=4, linewidth=1, color=colour, label=name)
    base = frame[frame["reducer"] == BASELINE]
    if not base.empty:
        ax.scatter(base["gmacs"], base["top1"], marker="*", s=160, color="black", zorder=4, label="unpatched")
    ax.set_xlabel(GMACS_LABEL)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    dataset = frame["dataset"].dropna()
    ax.set_title(_title(frame, f"Accuracy vs cost{' on ' + str(dataset.iloc[0]) if len(dataset) else ''}"))
    return fig


def main_figure(frame: pd.DataFrame) -> Figure:
    """The figure a sweep writes: speed vs accuracy when accuracy was measured, else speedup vs r."""
    if usable(frame)["top1"].notna().any():
        return speed_accuracy(frame)
    return metric_vs_r(frame, "speedup", speedup_label(frame))


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


def at_largest_batch(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the largest batch size when a CSV has several, else all rows. Figures against r (or speed
    against accuracy) draw one point per configuration; a CSV with several batch sizes has one per size, and
    images/s and speedup depend on the size, so those figures show one size (their title names it)."""
    sizes = batch_sizes(frame)
    return frame if len(sizes) < 2 else frame[frame["infer_batch_size"] == sizes[-1]]


def speedup_vs_batch(frame: pd.DataFrame) -> Figure:
    """Speedup over the unpatched model at the same batch size, against the batch size (log axis): one line per
    reducer variant and r with p10-p90 bars, the unpatched model's 1.0 marked. Where ToMe starts to pay."""
    frame = usable(frame).dropna(subset=["speedup"])
    if len(batch_sizes(frame)) < 2:
        raise ValueError("speedup vs batch size needs rows at two batch sizes or more")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(1.0, color="black", linestyle=":", linewidth=1, label="unpatched (1.0)")
    patched = frame[frame["reducer"] != BASELINE]
    for (name, r), rows in patched.groupby([variant(patched), "r"], sort=False):
        rows = rows.sort_values("infer_batch_size")
        # The bars show how far the paired rounds spread: at small batches on a busy machine they can dwarf the
        # differences between batch sizes, and a bare line would hide that.
        ax.errorbar(
            rows["infer_batch_size"],
            rows["speedup"],
            yerr=speedup_errors(rows),
            marker="o",
            capsize=2,
            label=f"{name} r={r}",
        )
    sizes = batch_sizes(frame)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (images)")
    ax.set_ylabel("speedup over unpatched, same batch size\n(x; bars: p10-p90 of paired rounds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    first = frame.iloc[0]
    device = first.get("device_name") if pd.notna(first.get("device_name")) else first.get("device")
    compiled = f" · compiled ({first['compile']})" if isinstance(first.get("compile"), str) and first["compile"] else ""
    ax.set_title(f"Speedup vs batch size\n{first['model']} · {device} · {first['dtype']}{compiled}")
    return fig


def figures():
    """What `plot` draws: name -> figure builder, each from a DataFrame of a tomebench CSV."""
    one = at_largest_batch  # one point per configuration: a CSV with several batch sizes shows the largest
    return {
        "speed-accuracy": lambda frame: speed_accuracy(one(frame)),
        "top1-vs-r": lambda frame: metric_vs_r(one(frame), "top1", "top-1 accuracy (%)"),
        "speedup-vs-r": lambda frame: metric_vs_r(one(frame), "speedup", speedup_label(frame)),
        "gflops-vs-r": lambda frame: metric_vs_r(one(frame), "infer_gflops", "GFLOPs per image"),
        "top1-vs-gmacs": lambda frame: top1_vs_gmacs(one(frame)),
        "speedup-vs-batch": speedup_vs_batch,
    }
