"""What `patch` decides, checked once and kept as one frozen value: the reducer, its checked options, the
requested r of every block and proportional attention. `plan_patch` checks everything and decides; `install`
puts a decided plan on the model and checks nothing, so switching between configurations (as a sweep does on
every timed repeat) costs a class swap and one attribute."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tomebench.adapters import adapter_for
from tomebench.errors import UsageError
from tomebench.reducers import REDUCERS, Layout, ReducerSpec
from tomebench.schedule import Schedule, layer_schedule, parse_schedule, schedule_label

# The schedule column of a reducer whose knob plans its blocks itself (a keep rate at some blocks, a ratio).
NATIVE = "native"


@dataclass(frozen=True)
class LayerPlan:
    """What one block does: remove r tokens (before the block loop's clamp) with `reducer` and its checked
    `options`, bias attention by log(size) if prop_attn."""

    r: int
    reducer: ReducerSpec
    prop_attn: bool
    options: Mapping[str, Any] = field(default_factory=dict)
    acts: str = ""  # where the reducer acts with these options (`ReducerSpec.where`); "" for its declared site


@dataclass(frozen=True)
class PatchInfo:
    """Everything `patch` decided, kept on the model as `model._tome`. Read-only once made."""

    reducer: str
    schedule: str  # as written in the CSV: "constant", "decreasing" or "8,8,4,..."
    r: tuple[int, ...]  # requested r per block (before the per-layer clamp)
    prop_attn: bool
    trace_source: bool
    original_class: type
    layers: tuple[LayerPlan, ...]
    options: dict[str, Any] = field(default_factory=dict)


def is_patched(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_tome", None), PatchInfo)


def patch_info(model: nn.Module) -> PatchInfo | None:
    return getattr(model, "_tome", None) if is_patched(model) else None


def original_class(model: nn.Module) -> type:
    info = patch_info(model)
    return info.original_class if info is not None else type(model)


def layout(model: nn.Module) -> Layout:
    """The model's token layout at its configured input size (what a reducer's `refuses` check sees)."""
    adapter = adapter_for(model)
    gh, gw = adapter.grid_size(model)
    p = adapter.num_prefix_tokens(model)
    return Layout(gh * gw + p, p, len(adapter.blocks(model)), adapter.has_cls(model), adapter.architecture(model))


def default_prop_attn(model: nn.Module, reducer: ReducerSpec | None = None) -> bool:
    """Proportional attention helps supervised models; the paper turns it off for off-the-shelf MAE models, and a
    reducer whose authors never use it (EViT, PiToMe) declares it off."""
    on = adapter_for(model).default_prop_attn(model)
    return on and (reducer is None or reducer.prop_attn)


def plan_patch(
    model: nn.Module,
    reducer: str | ReducerSpec = "tome",
    r: int | Sequence[int] = 16,
    schedule: str | Schedule | Sequence[int] = "constant",
    prop_attn: bool | None = None,
    trace_source: bool = False,
    **options: Any,
) -> PatchInfo:
    """Check and decide a patch of `model` without touching it (see `patch` for the arguments)."""
    check_supported(model)
    spec = reducer if isinstance(reducer, ReducerSpec) else REDUCERS.get(reducer)
    options = spec.check(options, layout(model))
    shape = layout(model)
    depth = shape.depth
    r = _whole_r(r)
    if spec.kind == "none":
        rs, label = (0,) * depth, "constant"
    elif spec.budget is not None:
        # The reducer's own per-block plan from its knob: a schedule would be ignored, so only "constant" is taken.
        if not (isinstance(schedule, (str, Schedule)) and parse_schedule(schedule).label == "constant"):
            knob = "r" if spec.knob == "r" else f"its {spec.knob} option"
            raise UsageError(
                f"reducer {spec.name} spends its budget as {knob} says, block by block; "
                f"it takes no schedule (got {schedule_label(schedule)})"
            )
        rs, label = spec.requested(r, None, spec.defaults() | options, shape), NATIVE
        if len(rs) != depth or any(v < 0 for v in rs):
            raise UsageError(f"reducer {spec.name} planned {list(rs)} for a model of {depth} blocks")
    elif isinstance(r, int) and (isinstance(schedule, (str, Schedule))):
        parsed = parse_schedule(schedule)
        rs = parsed.per_layer(r, depth)
        label = parsed.label
    else:
        rs = layer_schedule(r if isinstance(schedule, (str, Schedule)) else _whole_r(schedule), depth)
        label = schedule_label(rs)
    if spec.kind != "none" and spec.budget is None:
        rs = spec.only_active(rs, options, shape)  # blocks the reducer does not act in remove nothing
    use_prop = default_prop_attn(model, spec) if prop_attn is None else bool(prop_attn)
    frozen_options = dict(options)
    blocks = spec.blocks(spec.defaults() | options, shape)  # per-block arguments of a reducer that declares them
    acts = spec.where(frozen_options)
    layers = tuple(LayerPlan(v, spec, use_prop, frozen_options | extra, acts) for v, extra in zip(rs, blocks))
    return PatchInfo(spec.name, label, rs, use_prop, bool(trace_source), original_class(model), layers, frozen_options)


def install(model: nn.Module, info: PatchInfo) -> nn.Module:
    """Put a decided patch on the model (no checks but that it was decided for a model of this class)."""
    if original_class(model) is not info.original_class:
        raise UsageError(
            f"this patch was planned for a {info.original_class.__name__}, not a {original_class(model).__name__}"
        )
    from tomebench.patch.loop import patched_class

    model.__class__ = patched_class(info.original_class)
    model._tome = info
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo `patch`: the model's class and attributes are exactly as before. A no-op on unpatched models."""
    info = patch_info(model)
    if info is not None:
        model.__class__ = info.original_class
        del model._tome
    return model


def check_supported(model: nn.Module) -> None:
    """A UsageError unless the model belongs to a registered family with a structure its adapter can run."""
    adapter_for(model).check(model)


def check_reducer_options(options: dict[str, dict]) -> None:
    """Every option must be a keyword the reducer function takes (after the tokens and r), with a value its
    annotation allows. Raises UsageError, worded for the command line's `--opt REDUCER.KEY=VALUE` and the same
    from `patch(model, **options)`."""
    for name, values in options.items():
        REDUCERS.get(name).check(values)


def _whole_r(r: object) -> int | tuple[int, ...]:
    """r as an int, or a tuple of ints for a per-block list: Python, numpy and 0-d torch integers are accepted;
    text ("8" would otherwise read as the list ["8"]), fractions and bools are refused."""
    if isinstance(r, (torch.Tensor, np.ndarray)):
        if r.dtype.is_floating_point if isinstance(r, torch.Tensor) else not np.issubdtype(r.dtype, np.integer):
            raise UsageError(f"r must hold whole numbers, got a {r.dtype} {type(r).__name__}")
        r = r.item() if r.ndim == 0 else r.tolist()
    if isinstance(r, numbers.Integral) and not isinstance(r, bool):
        return int(r)
    whole = isinstance(r, Sequence) and not isinstance(r, (str, bytes))
    if whole and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in r):
        return tuple(int(v) for v in r)
    raise UsageError(
        f"r must be a whole number of tokens per block (8) or a per-block list of them ([8, 8, 4]), "
        f"got {r!r} ({type(r).__name__})"
    )
