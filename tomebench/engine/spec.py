"""What to measure, as one frozen value with typed fields, checked once when it is made.

The command line and `--config` files turn text into these values at the edge (`tomebench.cli.spec`); the
Python API builds them directly. Either way every field is checked here, ranges included, so a bad value fails
before anything is loaded or measured, never in the middle of a sweep:

    RunSpec(model="deit_s", reducers=("tome", "prune"), r=(0, 8, 16), batch_sizes=(32,), data="/data/val")

Loose forms are accepted and normalised (a reducer name for a `ReducerChoice`, "decreasing" for a `Schedule`, 32
for `(32,)`, a dict of model arguments), so what reaches the engine is always the typed value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench.errors import UsageError
from tomebench.schedule import CONSTANT, MAX_R, Schedule, parse_schedule

if TYPE_CHECKING:
    from tomebench.models import LoadedModel

# No device holds a million-image batch of any ViT; a larger --batch-size is a typo (and 10**20 would overflow).
MAX_BATCH_SIZE = 1 << 20
MAX_BATCH_AXIS = 64  # batch sizes in one sweep: each one times every configuration again
MAX_REPEATS = 10_000  # timed rounds per configuration: more would run for days, not measure better
MAX_RETIME = 100
MAX_WORKERS = 256
MAX_GROUP = 1_000_000
MAX_BUDGET = 7 * 24 * 3600.0  # a week of timing per group
DTYPE_NAMES = ("fp32", "fp16", "bf16")
COMPILE_MODES = ("default", "max-autotune", "reduce-overhead")
MATCHES = ("gmacs", "none")
DEMO_DATA = "demo"
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ReducerChoice:
    """A registered reducer by its canonical name, with its checked options as sorted (key, value) pairs (defaults
    and options that change nothing left out, so equal choices are equal values; a reducer whose budget is an
    option keeps it). `given` names the options the user set; `inert` those left out because they change nothing
    with the others (said in a note)."""

    name: str
    options: tuple[tuple[str, object], ...] = ()
    inert: tuple[str, ...] = field(default=(), compare=False)
    given: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, name: str, options: Mapping[str, object] | None = None) -> ReducerChoice:
        from tomebench.reducers import REDUCERS
        from tomebench.reducers.options import inert

        spec = REDUCERS.get(name)
        given = dict(options or {})
        checked = spec.check(given)
        return cls(spec.name, spec.canonical(given), tuple(inert(spec.options, checked)), tuple(sorted(given)))

    @property
    def label(self) -> str | None:
        """As the CSV's reducer_options column has it: "distance=euclidean,features=q" (None for the defaults)."""
        return ",".join(f"{k}={v}" for k, v in self.options) or None


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep: a reducer ("none" is the unpatched model) at r with a schedule (an explicit
    per-block schedule has r = its mean per block), proportional attention (None: the model's and reducer's
    default), checked options as sorted pairs, and the batch size it is timed at (set when the sweep is planned)."""

    reducer: str
    r: int
    schedule: Schedule | str | tuple[int, ...] = CONSTANT
    prop_attn: bool | None = None
    options: tuple[tuple[str, object], ...] = ()
    batch_size: int | None = None
    note: str | None = field(default=None, compare=False)  # what the plan says of it (a GMACs match), for its row

    def __post_init__(self) -> None:
        schedule = self.schedule
        if isinstance(schedule, tuple):
            schedule = parse_schedule(",".join(map(str, schedule)))
        object.__setattr__(self, "schedule", parse_schedule(schedule))
        if not isinstance(self.r, int) or isinstance(self.r, bool):
            raise UsageError(f"r must be a whole number, got {self.r!r}")


Planner = Callable[["LoadedModel"], Sequence[Config]]


@dataclass(frozen=True)
class RunSpec:
    """What to measure. None means "the model's or the device's default"."""

    model: str = "demo"
    reducers: tuple[ReducerChoice, ...] = (ReducerChoice("tome"),)
    # None: 0 .. full_r, every token spent by the last block. A long range stays a `range`; it is capped at what
    # the model can do when planned.
    r: tuple[int, ...] | range | None = None
    schedule: Schedule = CONSTANT
    prop_attn: bool | None = None  # None: the paper's default (off for MAE) and the reducer's
    # None: 256 on CUDA (the paper's), 32 on CPU. Several: every configuration at every batch size, each paired
    # with the unpatched model at the same batch size; accuracy is computed once per configuration.
    batch_sizes: tuple[int, ...] | None = None
    device: str = "auto"
    dtype: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    data: str | None = None  # None: the demo's digits for the demo model, else synthetic (throughput only)
    labels: Path | None = None
    limit: int | None = None
    real_labels: Path | None = None  # ImageNet-ReaL's real.json: real_top1 beside top1
    # ImageNet-A/R/V2: "synsets" or "indices" (what the class folders are named by), or a file of model class
    # indices, one per sorted class folder (timm's --valid-labels); fewer classes than the model's restrict its logits.
    class_subset: str | None = None
    cache_data: Path | None = None  # a folder for decoded crops, reused by later sweeps with the same data config
    pretrained: bool = True
    checkpoint: Path | None = None
    repeats: int | None = None  # None: the device's TimingPlan default
    workers: int | None = None  # DataLoader workers; None: up to 4
    model_kwargs: tuple[tuple[str, object], ...] = ()  # extra model-constructor arguments, e.g. global_pool="avg"
    group_size: int = 8  # configurations timed together and saved together; 0: all in one group
    compile: str | None = None  # a torch.compile mode (COMPILE_MODES); None: eager
    latency: bool = False  # also time single-image calls (latency_ms_p50/p90/p99)
    # A group with a row whose p10-p90 spread exceeds NOISY_SPREAD is timed again, up to this many times, and the
    # least noisy attempt is kept: a noisy neighbour is usually gone a few seconds later. 0: never re-time.
    max_retime: int = 2
    # Seconds a group's timing may go on, beyond the repeats, while a speedup's median is not yet known to within 3%
    # each side (its 95% interval); None: exactly `repeats` rounds.
    time_budget: float | None = None
    # An explicit plan instead of reducers x r: configurations, or a function of the loaded model giving them
    # (ablate and schedules need the model's depth and defaults to plan).
    configs: tuple[Config, ...] | Planner | None = None
    # How reducers whose knobs differ are compared: "gmacs" (each at the knob value nearest the reference's GMACs at
    # every r), "none" (each at its own knob values), None: gmacs when the reducers' knobs differ, else none.
    match: str | None = None

    def __post_init__(self) -> None:
        # Plain fields first, and checked, before the reducers: naming a reducer imports the registry (and torch),
        # and a typo in --repeats should not wait seconds for that.
        for name, value in _normalised(self).items():
            object.__setattr__(self, name, value)
        _check(self)
        reducers = self.reducers if isinstance(self.reducers, tuple) else (self.reducers,)
        object.__setattr__(self, "reducers", tuple(dict.fromkeys(_choice(c) for c in reducers)))
        if self.configs is None and not self.reducers:
            raise UsageError(
                "no reducer to measure (--reducers is empty): name at least one, e.g. --reducers tome,prune"
            )

    @classmethod
    def check_plain(cls, **fields: Any) -> None:
        """Check every field but the reducers (which need the registry, and so torch): what the command line can
        refuse in a fraction of a second."""
        cls(**(fields | {"reducers": (), "configs": ()}))

    @property
    def model_args(self) -> dict[str, object]:
        return dict(self.model_kwargs)

    def with_(self, **changes: Any) -> RunSpec:
        return replace(self, **changes)


def _normalised(spec: RunSpec) -> dict[str, Any]:
    """The loose forms the Python API accepts, as the typed values the engine reads."""
    out: dict[str, Any] = {}
    reducers = spec.reducers
    out["reducers"] = (reducers,) if isinstance(reducers, (str, ReducerChoice)) else tuple(reducers)
    out["schedule"] = parse_schedule(spec.schedule)
    sizes = spec.batch_sizes
    if sizes is not None:
        sizes = (sizes,) if isinstance(sizes, int) and not isinstance(sizes, bool) else tuple(sizes)
        out["batch_sizes"] = tuple(dict.fromkeys(sizes))
    r = spec.r
    if r is not None and not isinstance(r, range):
        out["r"] = (r,) if isinstance(r, int) and not isinstance(r, bool) else tuple(dict.fromkeys(r))
    kwargs = spec.model_kwargs
    out["model_kwargs"] = tuple(sorted((dict(kwargs) if isinstance(kwargs, Mapping) else dict(kwargs)).items()))
    for name in ("labels", "checkpoint", "real_labels", "cache_data"):
        value = getattr(spec, name)
        out[name] = None if value is None else Path(value).expanduser()
    if spec.configs is not None and not callable(spec.configs):
        out["configs"] = tuple(spec.configs)
    return out


def _choice(given: ReducerChoice | str) -> ReducerChoice:
    """A reducer as a checked, canonical choice (a hand-made ReducerChoice is checked too)."""
    if not isinstance(given, ReducerChoice):
        return ReducerChoice.of(str(given))
    from tomebench.reducers import REDUCERS

    checked = ReducerChoice.of(given.name, dict(given.options))
    # A choice's options hold its knob even at its default (so a row says which value it ran); that was not given.
    spec, options = REDUCERS.get(checked.name), dict(given.options)
    implied = tuple(k for k in checked.given if not (k == spec.knob and options[k] == spec.defaults().get(k)))
    return replace(checked, inert=given.inert + checked.inert, given=given.given or implied)


def _check(spec: RunSpec) -> None:
    """Every field's type and range; one UsageError, worded as the command line's flag, for the first bad one."""
    if not isinstance(spec.model, str) or not spec.model.strip():
        raise UsageError("--model is empty: name a model, e.g. --model deit_s (see `tomebench models`)")
    if spec.configs is None and not spec.reducers:
        raise UsageError("no reducer to measure (--reducers is empty): name at least one, e.g. --reducers tome,prune")
    if isinstance(spec.configs, tuple):
        for cfg in spec.configs:
            if not isinstance(cfg, Config):
                raise UsageError(f"configs must be Config values, got {type(cfg).__name__}")
    _check_plan(spec)
    _check_settings(spec)


def _check_plan(spec: RunSpec) -> None:
    """r and the batch sizes."""
    if spec.schedule.explicit and spec.r is not None and spec.configs is None:
        raise UsageError(
            f"--schedule {spec.schedule.label} gives every block its r; it takes no --r (drop --r "
            f"{','.join(map(str, spec.r[:4]))}{'...' if len(spec.r) > 4 else ''})"
        )
    if spec.r is not None:
        if isinstance(spec.r, range):
            if spec.r.step <= 0 or (len(spec.r) and (spec.r[0] < 0 or spec.r[-1] > MAX_R)):
                raise UsageError(f"bad r range {spec.r}: r must be >= 0, at most {MAX_R}, in rising order")
        else:
            for value in spec.r:
                _whole(value, "r", 0, MAX_R)
    if spec.batch_sizes is not None:
        if not spec.batch_sizes:
            raise UsageError("--batch-size is empty: give at least one size, e.g. 32 or 1,8,32")
        if len(spec.batch_sizes) > MAX_BATCH_AXIS:
            raise UsageError(
                f"--batch-size asks for {len(spec.batch_sizes)} batch sizes; at most {MAX_BATCH_AXIS} "
                "(each one times every configuration again)"
            )
        for size in spec.batch_sizes:
            _whole(size, "--batch-size", 1, None)
            if size > MAX_BATCH_SIZE:
                raise UsageError(
                    f"--batch-size {size} is absurd: at most {MAX_BATCH_SIZE} images per batch "
                    "(a batch that does not fit is halved until it does)"
                )


def _check_settings(spec: RunSpec) -> None:
    """Device, dtype, compile mode, the limits and the flags."""
    if spec.prop_attn is not None and not isinstance(spec.prop_attn, bool):
        raise UsageError(f"prop_attn must be true or false, got {spec.prop_attn!r}")
    if not isinstance(spec.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec.device.strip()):
        raise UsageError(f"unknown device {spec.device!r}: use auto, cpu, cuda or cuda:N")
    if spec.dtype is not None and spec.dtype not in DTYPE_NAMES:
        raise UsageError(f"unknown dtype {spec.dtype!r}: use {', '.join(DTYPE_NAMES)}")
    if spec.match is not None and spec.match not in MATCHES:
        raise UsageError(f"unknown --match {spec.match!r}: use {', '.join(MATCHES)}")
    if spec.compile is not None and spec.compile not in COMPILE_MODES:
        raise UsageError(f"unknown --compile mode {spec.compile!r}: use {', '.join(COMPILE_MODES)}")
    for flag, value, low, high in (
        ("--repeats", spec.repeats, 1, MAX_REPEATS),
        ("--workers", spec.workers, 0, MAX_WORKERS),
        ("--limit", spec.limit, 1, None),
        ("--group-size", spec.group_size, 0, MAX_GROUP),
        ("--max-retime", spec.max_retime, 0, MAX_RETIME),
    ):
        if value is not None:
            _whole(value, flag, low, high)
    if spec.time_budget is not None:
        budget = finite(spec.time_budget, "--time-budget")
        if not 0 <= budget <= MAX_BUDGET:
            raise UsageError(f"--time-budget must be between 0 and {MAX_BUDGET:.0f} seconds, got {spec.time_budget}")
    for flag, value in (("--pretrained", spec.pretrained), ("--latency", spec.latency)):
        if not isinstance(value, bool):
            raise UsageError(f"{flag} must be true or false, got {value!r}")
    if spec.data is not None and (not isinstance(spec.data, str) or not spec.data.strip()):
        raise UsageError("--data is empty: give synthetic, demo or an image folder")
    for key, _ in spec.model_kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise UsageError(f"bad --model-arg {key!r}: write KEY=VALUE with KEY a Python name, e.g. global_pool=avg")


def _whole(value: object, flag: str, low: int, high: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{flag} must be a whole number, got {value!r}")
    if value < low:
        raise UsageError(f"{flag} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise UsageError(f"{flag} {value} is absurd: at most {high}")


def nominal_r(requested: tuple[int, ...]) -> int:
    """The r a row of a reducer with its own per-block plan shows: the tokens it asks to remove, per block."""
    return round(sum(requested) / max(len(requested), 1))


def finite(value: float, flag: str) -> float:
    """A finite float, or a UsageError naming the flag (NaN compares false with everything)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, got {value}")
    return float(value)
