"""The paper's schedule search (its Figures 2 and 7): random per-block schedules against the named ones.

`plan` samples schedules whose total removed tokens span a range around a target speedup and adds the
constant, decreasing and increasing schedules at nearby r; the sweep engine measures them all. `best_schedules`
reads the CSV back: the sampled schedules on the speed-accuracy frontier, and their average r per block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch
from matplotlib.figure import Figure

from tomebench.engine.spec import Config
from tomebench.errors import UsageError
from tomebench.measure.cost import count_gflops
from tomebench.models import LoadedModel
from tomebench.patch import depth as model_depth
from tomebench.patch import num_input_tokens, num_prefix_tokens, patch, unpatch
from tomebench.report.plots import SPEEDUP_LABEL, monotone, pareto_frontier, speedup_errors, usable
from tomebench.schedule import full_r, sample_schedules

NAMED = ("constant", "decreasing", "increasing")


def r_for_speedup(loaded: LoadedModel, target: float) -> tuple[int, list[float]]:
    """The smallest constant r whose GFLOPs ratio to the unpatched model reaches `target` (the model's full r if
    none does), and the GFLOPs at r = 0 .. full r. A FLOP estimate, counted on one image on the CPU."""
    model = loaded.model
    top = full_r(num_input_tokens(model), num_prefix_tokens(model), model_depth(model))
    image = torch.zeros((1, *loaded.data_config["input_size"]))
    gflops = []
    try:
        for r in range(top + 1):
            patch(model, "tome", r)
            gflops.append(count_gflops(model, image))
    finally:
        unpatch(model)
    reached = [r for r in range(top + 1) if gflops[0] / gflops[r] >= target]
    return (reached[0] if reached else top), gflops


def plan(samples: int, target_speedup: float, seed: int = 0) -> Callable[[LoadedModel], list[Config]]:
    """Configurations for the search: the named schedules at r from r*/2 to 3r*/2 (r* from the target speedup,
    capped at the full r), then `samples` random schedules whose totals span the same budget range."""
    if samples < 0 or not (1 <= target_speedup < math.inf):  # written so that NaN fails it too
        raise UsageError(
            f"--samples must be >= 0 and --target-speedup a number >= 1; got {samples} and {target_speedup}"
        )

    def configs(loaded: LoadedModel) -> list[Config]:
        model = loaded.model
        depth, tokens, prefix = model_depth(model), num_input_tokens(model), num_prefix_tokens(model)
        r_star, _ = r_for_speedup(loaded, target_speedup)
        top = full_r(tokens, prefix, depth)
        r_values = range(max(1, round(r_star / 2)), min(top, max(1, round(1.5 * r_star))) + 1)
        named = [Config("tome", r, name) for name in NAMED for r in r_values]
        totals = (r_values[0] * depth, r_values[-1] * depth)
        sampled = sample_schedules(
            samples, depth, tokens, prefix, totals, seed, exclude=[(r,) * depth for r in r_values]
        )
        return named + [Config("tome", sum(s) // depth, s) for s in sampled]

    return configs


def is_sampled(schedule: pd.Series) -> pd.Series:
    """Rows whose schedule is an explicit per-block list (the random samples), not a named schedule."""
    return schedule.astype(str).str.contains(",")


def best_schedules(frame: pd.DataFrame, x: str = "speedup") -> pd.DataFrame:
    """The sampled schedules on the (x, top-1) frontier, with their per-block r as a list column `blocks`."""
    rows = usable(frame[frame["reducer"] != "none"]).dropna(subset=["top1"])
    rows = rows[is_sampled(rows["schedule"])]
    front = pareto_frontier(rows, x, "top1").copy()
    front["blocks"] = [tuple(int(v) for v in str(s).split(",")) for s in front["schedule"]]
    return front


def average_per_block(front: pd.DataFrame) -> list[float]:
    """Mean r of each block over the given schedules (the paper's Figure 7)."""
    blocks = list(front["blocks"])
    depth = max(len(b) for b in blocks)
    return [sum(b[i] if i < len(b) else 0 for b in blocks) / len(blocks) for i in range(depth)]


def figure(frame: pd.DataFrame) -> Figure:
    """Left: every schedule on the speedup / top-1 plane, the named ones highlighted. Right: the average r per
    block of the frontier schedules, split into the slower and the faster half (the paper's Figure 7)."""
    rows = usable(frame).dropna(subset=["top1", "speedup"])
    if rows.empty:
        raise ValueError("no row has both a speedup and a top-1 accuracy")
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    sampled = rows[(rows["reducer"] != "none") & is_sampled(rows["schedule"])]
    left.scatter(sampled["speedup"], sampled["top1"], s=10, color="0.6", alpha=0.7, label=f"random ({len(sampled)})")
    for name, colour in zip(NAMED, ("tab:blue", "tab:red", "tab:green")):
        named = rows[(rows["reducer"] != "none") & (rows["schedule"].astype(str) == name)].sort_values("r")
        if not named.empty:
            # Joined in r order only where speedup moves steadily with r; otherwise the line would be noise.
            left.errorbar(
                named["speedup"],
                named["top1"],
                xerr=speedup_errors(named),
                color=colour,
                label=name,
                zorder=3,
                fmt="o-" if monotone(named["speedup"]) else "o",
                markersize=5,
                capsize=2,
                elinewidth=0.8,
            )
    base = rows[rows["reducer"] == "none"]
    if not base.empty:
        left.scatter(base["speedup"], base["top1"], marker="*", s=160, color="black", zorder=4, label="unpatched")
    front = best_schedules(frame)
    if not front.empty:
        left.errorbar(
            front["speedup"],
            front["top1"],
            xerr=speedup_errors(front),
            fmt="none",
            ecolor="black",
            elinewidth=0.8,
            capsize=2,
            zorder=5,
        )
        left.scatter(
            front["speedup"],
            front["top1"],
            s=60,
            facecolors="none",
            edgecolors="black",
            zorder=5,
            label="frontier (random; bars p10-p90)",
        )
    left.set_xlabel(SPEEDUP_LABEL)
    left.set_ylabel("top-1 accuracy (%)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    first = frame.iloc[0]
    left.set_title(f"Merging schedules\n{first['model']} · {first['device']} · {first['dtype']}")
    if not front.empty:
        half = (len(front) + 1) // 2
        groups = (
            [("slower half", front.iloc[:half]), ("faster half", front.iloc[half:])]
            if len(front) > 1
            else [("frontier", front)]
        )
        for label, part in groups:
            if not part.empty:
                means = average_per_block(part)
                right.plot(
                    range(1, len(means) + 1),
                    means,
                    marker="o",
                    label=f"{label} ({part['speedup'].min():.2f}-{part['speedup'].max():.2f}x)",
                )
    right.set_xlabel("block")
    right.set_ylabel("average r of the frontier schedules")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    right.set_title("Best schedules, per block")
    return fig
