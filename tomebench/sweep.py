"""The engine behind `sweep` and `compare`: a spec in, one Row per configuration out.

Order of work: resolve and load everything (bad input fails here, before anything is measured); check each
configuration once (cost, tokens, one full batch: failures become error rows); time the working ones
interleaved against the unpatched model; then one accuracy pass over the data for all of them.
"""

from __future__ import annotations

import functools
import inspect
import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from tomebench import compiled
from tomebench import data as datasets
from tomebench.cost import count_gflops, final_tokens
from tomebench.demo import digits
from tomebench.demo import model as demo_model
from tomebench.errors import TomebenchError, UsageError, one_line
from tomebench.evaluate import Accuracy, evaluate_in_one_pass
from tomebench.models import LoadedModel, create
from tomebench.patch import (
    check_reducer_options,
    check_supported,
    default_prop_attn,
    depth as model_depth,
    num_input_tokens,
    num_prefix_tokens,
    patch,
    patch_info,
    token_counts,
    unpatch,
)
from tomebench.reducers import REDUCERS
from tomebench.results import Row, capture_environment
from tomebench.schedule import distinct_r, full_r, layer_schedule, parse_r_spec, parse_schedule, schedule_label
from tomebench.timing import NOISY_SPREAD, Candidate, Timing, TimingPlan, latency_plan, time_interleaved

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# No device holds a million-image batch of any ViT; a larger --batch-size is a typo (and 10**20 would overflow).
MAX_BATCH_SIZE = 1 << 20
MAX_BATCH_AXIS = 64  # batch sizes in one sweep: each one times every configuration again
DEMO_DATA = "demo"
T = TypeVar("T")
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class SweepSpec:
    """What to measure. None means "the model's or the device's default"."""

    model: str = "demo"
    reducers: tuple[str, ...] = ("tome",)
    # None: 0 .. full_r, every token spent by the last block. A long range stays a `range`; it is capped at what
    # the model can do when planned.
    r: tuple[int, ...] | range | None = None
    schedule: str = "constant"  # a named schedule ("decreasing", "inflection:-0.5", ...) or a list "16,12,8"
    prop_attn: bool | None = None  # None: on for supervised models, off for MAE (as in the paper)
    # None: 256 on CUDA (the paper's), 32 on CPU. Several: every configuration at every batch size, each paired
    # with the unpatched model at the same batch size; accuracy is computed once per configuration.
    batch_size: int | tuple[int, ...] | None = None
    device: str = "auto"
    dtype: str | None = None  # None: fp16 on CUDA, fp32 on CPU
    data: str | None = None  # None: the demo's digits for the demo model, else synthetic (throughput only)
    labels: Path | None = None
    limit: int | None = None
    pretrained: bool = True
    checkpoint: Path | None = None
    repeats: int | None = None  # None: the device's TimingPlan default
    workers: int | None = None  # DataLoader workers; None: up to 4
    reducer_options: dict[str, dict] = field(default_factory=dict)  # reducer name -> its keyword options
    model_kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments, e.g. global_pool="avg"
    group_size: int = 8  # configurations timed together and saved together; 0: all in one group
    compile: str | None = None  # a torch.compile mode (compiled.MODES); None: eager
    latency: bool = False  # also time single-image calls (latency_ms_p50/p90/p99)
    # A group with a row whose p10-p90 spread exceeds NOISY_SPREAD is timed again, up to this many times, and the
    # least noisy attempt is kept: a noisy neighbour is usually gone a few seconds later. 0: never re-time.
    max_retime: int = 2
    # An explicit plan instead of reducers x r: configurations, or a function of the loaded model giving them
    # (ablate and schedules need the model's depth and defaults to plan).
    configs: tuple[Config, ...] | Callable[[LoadedModel], Sequence[Config]] | None = None


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep. reducer "none" is the unpatched model.

    schedule is "constant", "decreasing" or an explicit per-block tuple (then r is its mean per block);
    prop_attn None means the model's default; options are the reducer's keyword options as sorted pairs.
    """

    reducer: str
    r: int
    schedule: str | tuple[int, ...] = "constant"
    prop_attn: bool | None = None
    options: tuple[tuple[str, object], ...] = ()
    batch_size: int | None = None  # set by Setup, which measures every configuration at each batch size


class Progress(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def advance(self, amount: int = 1) -> None: ...

    def note(self, text: str) -> None:
        """One line the user should read, not an error (optional: progress objects without it skip notes)."""
        ...


class _Silent:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def resolve_device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"unknown device {text!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text}: tomebench measures on cpu or cuda")
    return device


def resolve_dtype(text: str | None, device: torch.device) -> str:
    name = text or ("fp16" if device.type == "cuda" else "fp32")
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}: use {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise UsageError("--dtype fp16 needs a GPU; on CPU use fp32 or bf16")
    return name


def autocast_for(device: torch.device, dtype: str) -> Callable[[], AbstractContextManager]:
    """A factory of the autocast context the forward passes run under (none for fp32)."""
    if dtype == "fp32":
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def plan_configs(spec: SweepSpec, loaded: LoadedModel, notes: list[str] | None = None) -> list[Config]:
    """The unpatched baseline first, then every (reducer, r), reducers in the order given (or spec.configs).

    r values that give the same effective per-block schedule on this model (every r above what its tokens allow,
    say) are one configuration: the first is kept, and a line added to `notes` says so."""
    model = loaded.model
    depth = model_depth(model)
    if spec.configs is not None:
        planned = list(spec.configs(loaded) if callable(spec.configs) else spec.configs)
        for cfg in planned:
            REDUCERS.canonical(cfg.reducer)
            check_reducer_options({cfg.reducer: dict(cfg.options)})
    else:
        r_values = spec.r
        if r_values is None:
            r_values = tuple(range(full_r(num_input_tokens(model), num_prefix_tokens(model), depth) + 1))
        schedule = parse_schedule(spec.schedule)
        if isinstance(schedule, tuple):
            # An explicit per-block list is one configuration; its r is the mean tokens removed per block.
            r_values = (sum(schedule) // depth,)
        else:
            r_values = _distinct_r(r_values, schedule, loaded, notes if notes is not None else [])
        planned = []
        for name in dict.fromkeys(REDUCERS.canonical(n) for n in spec.reducers):
            if name != "none":
                options = canonical_options(name, spec.reducer_options.get(name, {}))
                planned += [Config(name, r, schedule, spec.prop_attn, options) for r in r_values]
    for cfg in planned:
        if not isinstance(cfg.r, int) or isinstance(cfg.r, bool):
            raise UsageError(f"r must be a whole number, got {cfg.r!r}")
        if isinstance(cfg.schedule, tuple):
            layer_schedule(cfg.schedule, depth)  # one r per block, exactly: refuses short and long lists alike
    return [Config("none", 0)] + [cfg for cfg in planned if cfg.reducer != "none"]


def _distinct_r(r_values, schedule: str, loaded: LoadedModel, notes: list[str]) -> list[int]:
    model = loaded.model
    kept, cap = distinct_r(r_values, schedule, model_depth(model), num_input_tokens(model), num_prefix_tokens(model))
    if len(kept) < len(r_values):
        notes.append(f"{len(r_values)} r values asked, {len(kept)} distinct on {loaded.name}: from r={cap} on, every "
                     f"block of the {schedule} schedule removes as many tokens as it can, and r values with the same "
                     f"per-block schedule are measured once (r={_runs(kept)})")
    return kept


def _runs(values: list[int]) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0..3,7,9..10": a long list of r in a line that stays short."""
    parts: list[list[int]] = []
    for v in values:
        if parts and v == parts[-1][-1] + 1:
            parts[-1].append(v)
        else:
            parts.append([v])
    return ",".join(f"{p[0]}..{p[-1]}" if len(p) > 2 else ",".join(map(str, p)) for p in parts)


def canonical_options(reducer: str, options: dict) -> tuple[tuple[str, object], ...]:
    """Options as sorted (key, value) pairs, leaving out any equal to the reducer's default."""
    parameters = inspect.signature(REDUCERS.get(reducer)).parameters
    return tuple(sorted((k, v) for k, v in options.items() if k not in parameters or parameters[k].default != v))


def options_label(options: tuple[tuple[str, object], ...]) -> str | None:
    """As the CSV's reducer_options column has it: "distance=euclidean,features=q" (None for the defaults)."""
    return ",".join(f"{k}={v}" for k, v in options) or None


def parse_reducer_options(items: list[str]) -> dict[str, dict]:
    """["kmeans.iters=3", "prune.seed=1"] -> {"kmeans": {"iters": 3}, "prune": {"seed": 1}} (canonical names)."""
    options: dict[str, dict] = {}
    for head, value in parse_key_values(items, "--opt", "REDUCER.KEY=VALUE, e.g. kmeans.iters=3"):
        reducer, dot, key = head.partition(".")
        if not (dot and reducer and key):
            raise UsageError(f"bad --opt {head}={value}: write REDUCER.KEY=VALUE, e.g. kmeans.iters=3")
        options.setdefault(REDUCERS.canonical(reducer.strip()), {})[key.strip()] = value
    return options


def parse_key_values(items: list[str], flag: str, form: str = "KEY=VALUE") -> list[tuple[str, int | float | bool | str]]:
    """["a=1", "b=avg"] -> [("a", 1), ("b", "avg")]; numbers and true/false keep their types."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not (sep and key.strip()):
            raise UsageError(f"bad {flag} {item!r}: write {form}")
        pairs.append((key.strip(), _option_value(value.strip())))
    return pairs


def _option_value(text: str) -> int | float | bool | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def data_source(spec: SweepSpec, loaded: LoadedModel) -> str:
    """--data as it will be used: the demo digits for the demo model, synthetic for any other, when unset."""
    if spec.data is not None:
        return spec.data
    return DEMO_DATA if loaded.name.startswith(demo_model.ARCHITECTURE) else SYNTHETIC


def resolve_images(spec: SweepSpec, loaded: LoadedModel) -> datasets.ImageList | None:
    """The images to evaluate (None: throughput only), checked against the model's classifier."""
    source = data_source(spec, loaded)
    if source == SYNTHETIC:
        return None
    if source == DEMO_DATA:
        root = digits.write_image_folder(_cache_dir() / "digits-test", "test")
        images = datasets.discover(root)
        images = datasets.ImageList(images.files, images.labels, images.classes, "digits-test")
    else:
        images = datasets.discover(Path(source), spec.labels)
    num_classes = loaded.num_classes
    if num_classes == 0:
        raise UsageError(f"{loaded.name} has no classifier head, so it has no accuracy; use --data synthetic")
    if images.classes is not None and len(images.classes) != num_classes:
        raise UsageError(
            f"--data {source} has {len(images.classes)} class folders but {loaded.name} predicts {num_classes} classes"
        )
    if images.classes is None and images.num_classes > num_classes:
        raise UsageError(f"--labels uses class {images.num_classes - 1} but {loaded.name} predicts {num_classes}")
    images = datasets.balanced_subset(images, spec.limit)
    if datasets.first_readable(images) is None:
        raise UsageError(f"none of the {len(images.files)} images under --data {source} could be read "
                         "(corrupt, or not an image format PIL knows)")
    return images


def _cache_dir() -> Path:
    return Path(os.environ.get("TOMEBENCH_CACHE", Path.home() / ".cache" / "tomebench"))


class Sink(Protocol):
    """Where finished rows go as a sweep runs (the CLI's is the CSV on disk, see `journal`)."""

    def begin(self, settings: dict, planned: list[Row]) -> set[int]:
        """Called once, before anything is measured, with what the sweep will run and every configuration's
        identity (a Row without measurements). Returns the indices of `planned` already recorded (to resume);
        raises UsageError if what is recorded was measured with other settings."""
        ...

    def add(self, rows: list[Row], raw_times: dict[str, Timing]) -> None:
        """Called as each group of configurations finishes, with its rows and the raw timings behind them."""
        ...


class _Collect:
    """The default sink: keeps nothing on disk."""

    def begin(self, settings: dict, planned: list[Row]) -> set[int]:
        return set()

    def add(self, rows: list[Row], raw_times: dict[str, Timing]) -> None:
        pass


def run_sweep(
    spec: SweepSpec, progress: Progress | None = None, sink: Sink | None = None, executor: Executor | None = None
) -> list[Row]:
    """Measure every configuration of spec; one Row each, failures included as rows with `error` set.

    Configurations run in groups of spec.group_size: each group is timed interleaved with the unpatched model
    (so its speedups are same-run ratios) and evaluated in one data pass, then handed to `sink` at once, so an
    interrupted sweep keeps every finished group. Configurations the sink already has are skipped. `executor`
    runs the groups (default: here, one after another; `tomebench.distributed.RayExecutor` spreads them over a
    Ray cluster). Returns the rows measured by this call, in plan order.
    """
    progress = progress or _Silent()
    sink = sink or _Collect()
    executor = executor or LocalExecutor()
    spec = executor.resolve(spec)
    setup = Setup.build(spec, measures_here=isinstance(executor, LocalExecutor))
    done = sink.begin(_settings(spec, setup), setup.planned)
    try:
        note = getattr(progress, "note", None)  # optional in a Progress: without it, notes go unsaid
        for text in setup.notes if note is not None else ():
            note(text)
        todo = [i for i in range(len(setup.configs)) if i not in done]
        if not todo:
            return []
        env = capture_environment("")

        def finished(rows: list[Row], raw: dict[str, Timing]) -> list[Row]:
            # The device name comes from the process that measured the row (on a cluster, not this one).
            rows = [row.with_environment(replace(env, device_name=row.device_name)) for row in rows]
            sink.add(rows, raw)
            return rows

        return executor.run(setup, _groups(setup, todo, spec.group_size), finished, progress)
    finally:
        end = getattr(sink, "end", None)  # optional: a sink holding a resource (the journal's lock) lets go
        if end is not None:
            end()


class Executor(Protocol):
    def resolve(self, spec: SweepSpec) -> SweepSpec:
        """The spec with anything the executor decides filled in (a cluster picks the device)."""
        ...

    def run(self, setup: Setup, groups: list[list[int]], finished: Callable[[list[Row], dict[str, Timing]], list[Row]],
            progress: Progress) -> list[Row]:
        """Measure each group (indices into setup.configs), calling `finished(rows, raw_times)` as each completes;
        return what `finished` returned, concatenated."""
        ...


class LocalExecutor:
    """Every group here, one after another, on the spec's device."""

    def resolve(self, spec: SweepSpec) -> SweepSpec:
        return spec

    def run(self, setup: Setup, groups, finished, progress) -> list[Row]:
        rows: list[Row] = []
        checks: dict[int, Check] = {}  # the baselines' are reused by every group
        try:
            for n, group in enumerate(groups, 1):
                tag = f" {n}/{len(groups)}" if len(groups) > 1 else ""
                throughput = measure_throughput(setup, group, progress, tag, checks)
                accuracy = count_accuracy(setup, accuracy_sizes(setup, throughput), None, progress, tag)
                rows += finished(*group_rows(setup, group, throughput, accuracy))
        finally:
            unpatch(setup.model)
        return rows


def _synthetic_batch(batch_size: int, shape: tuple[int, ...], device: torch.device | None) -> Tensor:
    """(n, *shape) seeded noise, on `device` when given. n is batch_size, or half of it as often as needed for the
    host or the device to hold it: the same backoff (`largest_that_fits`) as each configuration's full batch
    gets in `_check`, which then starts from the batch that was allocated."""

    def allocate(size: int) -> Tensor:
        batch = torch.randn((size, *shape), generator=torch.Generator().manual_seed(0))
        return batch if device is None else batch.to(device)

    return largest_that_fits(allocate, batch_size, device)[0]


@dataclass
class Setup:
    """What any process measuring a spec builds from it: the model on its device, the synthetic batch, the
    images, the plan and each configuration's identity. Building it checks every input (bad input fails here,
    before anything is measured).

    configs holds every (configuration, batch size) pair the sweep measures, configuration by configuration:
    with batch sizes (b1, b2), [unpatched@b1, unpatched@b2, tome r=0@b1, tome r=0@b2, ...]. An index into it
    (also into planned) is what the rest of the engine calls a configuration."""

    spec: SweepSpec
    device: torch.device
    dtype: str
    loaded: LoadedModel
    images: datasets.ImageList | None
    configs: list[Config]
    planned: list[Row]  # each configuration's identity: a Row without measurements
    base: Row
    batch: Tensor  # (max batch size, 3, H, W) synthetic images on the device; fewer if the host ran out of memory
    notes: tuple[str, ...] = ()  # what the user should know about the plan (r values that coincide)
    batch_sizes: tuple[int, ...] = ()  # requested, in the order given
    compiled: dict[int, torch.nn.Module] = field(default_factory=dict)  # index -> its compiled module, made once

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def autocast(self) -> Callable[[], AbstractContextManager]:
        return autocast_for(self.device, self.dtype)

    @property
    def eval_batch_size(self) -> int:
        """The batch the accuracy pass decodes: the largest asked for (accuracy does not depend on it)."""
        return max(self.batch_sizes)

    def baseline_for(self, i: int) -> int:
        """The unpatched model at configuration i's batch size (the first configurations are the baselines)."""
        return self.batch_sizes.index(self.configs[i].batch_size)

    def sibling_key(self, i: int) -> int:
        """Configurations that differ only in batch size share this key (and their accuracy and latency)."""
        return i // len(self.batch_sizes)

    @classmethod
    def build(cls, spec: SweepSpec, measures_here: bool = True) -> Setup:
        """measures_here False: the driver of a cluster run, which plans and records but measures nothing, so
        its own machine need not have the device (the model stays on the CPU)."""
        device = resolve_device(spec.device) if measures_here or spec.device == "auto" else torch.device(spec.device)
        dtype = resolve_dtype(spec.dtype, device)
        compiled.check_mode(spec.compile)
        parse_schedule(spec.schedule)
        if spec.configs is None and not spec.reducers:
            raise UsageError("no reducer to measure (--reducers is empty): name at least one, e.g. --reducers "
                             "tome,prune")
        for name in spec.reducers:
            REDUCERS.canonical(name)
        check_reducer_options(spec.reducer_options)
        batch_sizes = requested_batch_sizes(spec.batch_size, device)
        for flag, value, least in (("--repeats", spec.repeats, 1), ("--workers", spec.workers, 0),
                                   ("--limit", spec.limit, 1), ("--group-size", spec.group_size, 0),
                                   ("--max-retime", spec.max_retime, 0)):
            if value is not None and value < least:
                raise UsageError(f"{flag} must be >= {least}, got {value}")
        with torch.random.fork_rng(devices=[]):
            # Randomly initialised models (--no-pretrained) come out the same on every run and in every process;
            # the caller's RNG is untouched.
            torch.manual_seed(0)
            loaded = create(spec.model, pretrained=spec.pretrained, checkpoint=spec.checkpoint, **spec.model_kwargs)
        check_supported(loaded.model)
        images = resolve_images(spec, loaded)
        notes: list[str] = []
        configs = [replace(cfg, batch_size=b) for cfg in plan_configs(spec, loaded, notes) for b in batch_sizes]
        if measures_here:
            loaded.model.to(device)
        base = Row(
            model=loaded.name,
            reducer="none",
            r=0,
            schedule="constant",
            prop_attn=False,
            infer_img_size=loaded.img_size,
            infer_batch_size=batch_sizes[0],
            dtype=dtype,
            device=str(device),
            param_count=round(loaded.param_count, 3),
            compile=spec.compile,
        )
        planned = [replace(_identity(base, cfg, loaded.model), infer_batch_size=cfg.batch_size) for cfg in configs]
        batch = _synthetic_batch(max(batch_sizes), tuple(loaded.data_config["input_size"]),
                                 device if measures_here else None)
        return cls(spec, device, dtype, loaded, images, configs, planned, base, batch, tuple(notes), batch_sizes)

    def prepare(self, i: int, eager: bool = False) -> Callable[[], torch.nn.Module]:
        """A function that switches to configuration i and returns the module to call.

        Eager: the one model, patched in place (no weights move). Compiled (unless `eager`): configuration i's
        own compiled module, made on the first call (see `compiled`); the shared model is left as it is."""
        if self.spec.compile is not None and not eager:
            return functools.partial(self._compiled, i)
        model, cfg = self.model, self.configs[i]
        if cfg.reducer == "none":
            return lambda: unpatch(model)
        label = "constant" if isinstance(cfg.schedule, tuple) else cfg.schedule
        return lambda: patch(model, cfg.reducer, _requested_r(cfg), label, cfg.prop_attn, **dict(cfg.options))

    def _compiled(self, i: int) -> torch.nn.Module:
        if i not in self.compiled:
            copy = compiled.shared_copy(unpatch(self.model))
            cfg = self.configs[i]
            if cfg.reducer != "none":
                label = "constant" if isinstance(cfg.schedule, tuple) else cfg.schedule
                patch(copy, cfg.reducer, _requested_r(cfg), label, cfg.prop_attn, **dict(cfg.options))
            self.compiled[i] = compiled.compile_module(copy, self.spec.compile)
        return self.compiled[i]


def requested_batch_sizes(value: int | Sequence[int] | None, device: torch.device) -> tuple[int, ...]:
    """--batch-size as a tuple of distinct sizes in the order given; the device's default when unset."""
    if value is None:
        return (256 if device.type == "cuda" else 32,)
    sizes = tuple(dict.fromkeys([value] if isinstance(value, int) else value))
    if not sizes:
        raise UsageError("--batch-size is empty: give at least one size, e.g. 32 or 1,8,32")
    for size in sizes:
        if size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {size}")
        if size > MAX_BATCH_SIZE:
            raise UsageError(f"--batch-size {size} is absurd: at most {MAX_BATCH_SIZE} images per batch "
                             "(a batch that does not fit is halved until it does)")
    return sizes


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """--batch-size as the CLI takes it, in --r's syntax: "32", "1,8,32,128", "1..64:8" (a few sizes only)."""
    try:
        values = parse_r_spec(text)
    except UsageError as exc:
        raise UsageError(str(exc).replace("bad r range", "bad --batch-size").replace("bad r", "bad --batch-size")
                         .replace("r counts tokens removed per layer", "a batch size")) from None
    if len(values) > MAX_BATCH_AXIS:
        raise UsageError(f"--batch-size {text} asks for {len(values)} batch sizes; at most {MAX_BATCH_AXIS} "
                         "(each one times every configuration again)")
    return tuple(values)


@dataclass(frozen=True)
class Throughput:
    """What timing one group showed: each configuration's check, the timings (the baselines of its batch sizes
    included), which configurations of the group got through to be evaluated, and, with --latency, the
    single-image timings of one configuration of each sibling set (keyed by that configuration's index)."""

    checks: dict[int, Check]
    timings: dict[int, Timing]
    evaluable: tuple[int, ...]
    labels: dict[int, str]
    device_name: str = ""
    retimed: int = 0  # how often the group was timed again because a row was noisy
    latency: dict[int, Timing] = field(default_factory=dict)


def measure_throughput(setup: Setup, group: list[int], progress: Progress | None = None, tag: str = "",
                       checks: dict[int, Check] | None = None) -> Throughput:
    """Check each configuration of the group (cost, tokens, one full batch with out-of-memory backoff), then time
    the working ones interleaved with the unpatched model at each of the group's batch sizes (and, with
    --latency, one image at a time)."""
    progress = progress or _Silent()
    checks = {} if checks is None else checks
    baselines = list(dict.fromkeys(setup.baseline_for(i) for i in group))
    timed = baselines + [i for i in group if i not in baselines]
    progress.phase(f"checking{tag}", len(timed))
    with compiled.limits(len(setup.configs)) if setup.spec.compile else nullcontext():
        for i in timed:
            if i not in checks:
                size = setup.configs[i].batch_size
                checks[i] = _check(setup.model, setup.prepare(i, eager=True), setup.batch[:size], setup.autocast,
                                   setup.device, size, None if setup.spec.compile is None else setup.prepare(i))
            progress.advance()
        timed = [i for i in timed if checks[i].error is None]
        plan = TimingPlan.for_device(setup.device, setup.spec.repeats)
        labels = {i: _label(setup, i) for i in timed}
        candidates = [_candidate(setup, i, labels[i], checks[i].batch_size) for i in timed]
        timings, retimed = None, 0
        with torch.inference_mode():
            for attempt in range(setup.spec.max_retime + 1):
                if timings is not None and worst_spread(timings.values()) <= NOISY_SPREAD:
                    break
                progress.phase(f"re-timing{tag} #{attempt}" if attempt else f"timing{tag}", plan.repeats * len(timed))
                again = dict(zip(timed, time_interleaved(candidates, setup.device, plan, lambda _: progress.advance())))
                retimed = attempt
                # The whole group again, the unpatched model included, so every speedup stays paired within one
                # attempt; keep the quieter attempt (its medians are no more trusted than the other's, only tighter).
                if timings is None or worst_spread(again.values()) < worst_spread(timings.values()):
                    timings = again
            latency = _time_latency(setup, [i for i in timed if timings[i].error is None], progress, tag)
    unpatch(setup.model)
    evaluable = tuple(i for i in group if i in timings and timings[i].error is None)
    return Throughput({i: checks[i] for i in timed + group if i in checks}, timings, evaluable, labels,
                      _device_name(setup.device), retimed, latency)


def worst_spread(timings) -> float:
    """The largest p10-p90 spread (fraction of the median) among timings that succeeded; 0 when none did."""
    return max((t.spread() for t in timings if t.error is None and t.step_times), default=0.0)


def _label(setup: Setup, i: int) -> str:
    """config_label, with the batch size when the sweep has several (raw times are kept by label)."""
    label = config_label(setup.planned[i])
    return label + (f" @ batch {setup.configs[i].batch_size}" if len(setup.batch_sizes) > 1 else "")


def _candidate(setup: Setup, i: int, label: str, batch_size: int) -> Candidate:
    prepare = setup.prepare(i)
    return Candidate(label, prepare, _stepper(prepare(), setup.batch[:batch_size], setup.autocast), batch_size)


def _time_latency(setup: Setup, working: list[int], progress: Progress, tag: str) -> dict[int, Timing]:
    """With --latency: one image per call, each call timed alone (synchronised on CUDA), through the one timing
    loop, interleaved over one configuration of each sibling set (the one at the smallest batch size, whose
    compiled module is reused) and the unpatched model."""
    if not setup.spec.latency or not working:
        return {}
    chosen: dict[int, int] = {}
    for i in sorted(working, key=lambda i: setup.configs[i].batch_size):
        chosen.setdefault(setup.sibling_key(i), i)
    indices = list(chosen.values())
    plan = latency_plan(setup.device)
    progress.phase(f"latency{tag}", plan.repeats * len(indices))
    candidates = [_candidate(setup, i, config_label(setup.planned[i]), 1) for i in indices]
    return dict(zip(indices, time_interleaved(candidates, setup.device, plan, lambda _: progress.advance())))


def accuracy_sizes(setup: Setup, throughput: Throughput) -> dict[int, int]:
    """The configurations an accuracy pass evaluates, {index: batch that fits}: one of each sibling set (the one
    that fit the largest batch), since accuracy does not depend on the batch size; `group_rows` gives its
    accuracy to its siblings."""
    chosen: dict[int, int] = {}
    for i in throughput.evaluable:
        key, size = setup.sibling_key(i), throughput.checks[i].batch_size
        if key not in chosen or size > throughput.checks[chosen[key]].batch_size:
            chosen[key] = i
    return {i: throughput.checks[i].batch_size for i in sorted(chosen.values())}


def count_accuracy(setup: Setup, sizes: dict[int, int], shard: tuple[int, int] | None = None,
                   progress: Progress | None = None, tag: str = "") -> dict[int, Accuracy]:
    """One data pass over the images (or the shard [start, stop) of them) for configurations {index: batch size
    that fits}. Counts are exact, so shards add up to the whole. Empty when there are no images.

    A compiled configuration is called with exactly its batch size every time (the last, shorter batch padded;
    see `compiled.StaticBatch`), so the pass never recompiles it."""
    images = setup.images
    if images is None or not sizes:
        return {}
    if shard is not None:
        images = datasets.ImageList(images.files[shard[0]:shard[1]], images.labels[shard[0]:shard[1]],
                                    images.classes, images.name)
    progress = progress or _Silent()
    progress.phase(f"accuracy{tag}", len(images.files))
    loaded, device = setup.loaded, setup.device
    loader = datasets.make_loader(images, loaded.data_config, setup.eval_batch_size, _workers(setup.spec.workers),
                                  pin_memory=device.type == "cuda", transform=loaded.transform)
    normalize = datasets.DeviceNormalize(loaded.data_config, device)
    indices = list(sizes)
    prepares = [setup.prepare(i) for i in indices]
    if setup.spec.compile is not None:
        prepares = [functools.partial(compiled.StaticBatch, prepare(), sizes[i]) for prepare, i in zip(prepares, indices)]
    try:
        with compiled.limits(len(setup.configs)) if setup.spec.compile else nullcontext():
            evaluation = evaluate_in_one_pass(setup.model, prepares, loader, normalize, setup.autocast, progress.advance,
                                              [sizes[i] for i in indices])
    finally:
        unpatch(setup.model)
    return dict(zip(indices, evaluation.per_config))


def group_rows(setup: Setup, group: list[int], throughput: Throughput, accuracy: dict[int, Accuracy],
               accuracy_error: str | None = None) -> tuple[list[Row], dict[str, Timing]]:
    """The rows of a finished group, and its raw timings by label."""
    if setup.images is not None and throughput.evaluable and accuracy and all(
            a.n_images == 0 and a.error is None for a in accuracy.values()):
        raise TomebenchError(f"none of the {len(setup.images.files)} images under {setup.images.name} could be read")
    rows = []
    accuracy = {i: accuracy[j] for i in group for j in accuracy if setup.sibling_key(i) == setup.sibling_key(j)}
    latency = {i: throughput.latency[j] for i in group for j in throughput.latency
               if setup.sibling_key(i) == setup.sibling_key(j)}
    base_latency = next((t for j, t in throughput.latency.items() if setup.sibling_key(j) == 0), None)
    for i in group:
        acc = accuracy.get(i) if i in throughput.evaluable else None
        if accuracy_error is not None and i in throughput.evaluable:
            acc = Accuracy(None, None, 0, accuracy_error)
        baseline = throughput.timings.get(setup.baseline_for(i))
        reference = baseline if baseline is not None and baseline.error is None else None
        row = _row(setup.planned[i], throughput.checks[i], throughput.timings.get(i), acc, setup.images,
                   acc.skipped if acc is not None else 0, reference, throughput.retimed, latency.get(i), base_latency)
        rows.append(replace(row, device_name=throughput.device_name or None))
    raw = {throughput.labels[i]: throughput.timings[i] for i in throughput.timings}
    raw.update({f"{throughput.labels[j]} latency": t for j, t in throughput.latency.items()})
    return rows, raw


def _groups(setup: Setup, todo: list[int], size: int) -> list[list[int]]:
    """Split configuration indices into groups of `size` configurations (0: one group), each with all its batch
    sizes (so its accuracy is computed once, in one group); the baselines lead the first group."""
    siblings: dict[int, list[int]] = {}
    for i in todo:
        siblings.setdefault(setup.sibling_key(i), []).append(i)
    base = siblings.pop(0, [])
    others = list(siblings.values())
    size = size or max(len(others), 1)
    groups = [[i for sets in others[k : k + size] for i in sets] for k in range(0, len(others), size)] or [[]]
    groups[0] = base + groups[0]
    return groups


def _identity(base: Row, cfg: Config, model) -> Row:
    if cfg.reducer == "none":
        return base
    prop = default_prop_attn(model) if cfg.prop_attn is None else cfg.prop_attn
    return replace(base, reducer=cfg.reducer, r=cfg.r, schedule=schedule_label(cfg.schedule), prop_attn=prop,
                   reducer_options=options_label(cfg.options))


def _settings(spec: SweepSpec, setup: Setup) -> dict:
    """What makes two sweeps' rows comparable: every input that changes a measured value (not its precision)."""
    from tomebench import __version__

    base, images = setup.base, setup.images
    return {
        "model": base.model,
        "checkpoint": None if spec.checkpoint is None else str(spec.checkpoint),
        "pretrained": spec.pretrained,
        "model_kwargs": dict(spec.model_kwargs),
        "img_size": base.infer_img_size,
        # One size as a number, as CSVs of earlier versions recorded it; several as a list.
        "batch_size": setup.batch_sizes[0] if len(setup.batch_sizes) == 1 else list(setup.batch_sizes),
        "compile": spec.compile,
        "dtype": base.dtype,
        "device": base.device,
        "data": data_source(spec, setup.loaded),
        "labels": None if spec.labels is None else str(spec.labels),
        "limit": spec.limit,
        "dataset": None if images is None else images.name,
        "n_files": None if images is None else len(images.files),
        "tomebench": __version__,
    }


def _requested_r(cfg: Config) -> int | tuple[int, ...]:
    return cfg.schedule if isinstance(cfg.schedule, tuple) else cfg.r


@dataclass(frozen=True)
class Check:
    """What one untimed run of a configuration showed."""

    error: str | None = None
    gflops: float | None = None
    tokens_final: int | None = None
    clamp_note: str | None = None
    batch_size: int = 1  # the batch that fit: the requested one unless it ran out of memory
    backoff_note: str | None = None
    compile_s: float | None = None  # --compile: seconds the first call spent compiling (None when eager)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator failure on the host."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def largest_that_fits(run: Callable[[int], T], size: int, device: torch.device | None) -> tuple[T, int]:
    """run(size), halving size after each out-of-memory error until it fits: (what it returned, the size). The
    last error is raised if even 1 does not fit; any other error at once."""
    while True:
        try:
            return run(size), size
        except Exception as exc:  # noqa: BLE001 - only out of memory is retried; the rest is re-raised
            if size == 1 or not is_out_of_memory(exc):
                raise
            if device is not None and device.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2


def _check(model, prepare, batch, autocast, device, requested: int | None = None,
           compiled_prepare: Callable[[], torch.nn.Module] | None = None) -> Check:
    """Switch to the configuration, count its cost on one image, and run one full batch.

    A batch that runs out of memory is halved until one fits (down to 1 image); the size that fit is the one
    this configuration is timed and evaluated with. `requested` is the batch asked for, when the synthetic batch
    itself had to be smaller. With `compiled_prepare` (--compile), GFLOPs and tokens are still counted on the
    eager model (the flop counter sees the real ops, not inductor's kernels), and the full batch runs through
    the compiled module: its first call compiles, and compile_s is that call less the next one (one forward).
    """
    requested = requested or len(batch)
    one = batch[:1]
    try:
        module = prepare() or model  # a prepare that switches in place (returns None) runs `model`
        gflops = count_gflops(model, one)
        with torch.inference_mode():
            tokens = final_tokens(model, one)
        info = patch_info(model)
        clamp = None if info is None else _clamp_note(info.r, token_counts(model)[0])
    except Exception as exc:  # noqa: BLE001 - any failure of one configuration becomes its row's error
        return Check(error=_failure(exc, device), batch_size=requested)
    if compiled_prepare is not None:
        module = compiled_prepare()

    def forward(size: int) -> float:
        with torch.inference_mode(), autocast():
            _synchronize(device)
            begin = time.perf_counter()
            module(batch[:size])
            _synchronize(device)
            return time.perf_counter() - begin

    compile_s = None
    try:
        first, size = largest_that_fits(forward, len(batch), device)
        if compiled_prepare is not None:
            compile_s = max(0.0, first - forward(size))
    except Exception as exc:  # noqa: BLE001
        error = _failure(exc, device)
        if compiled_prepare is not None and not is_out_of_memory(exc):
            error = f"compile failed: {error}"
        return Check(error=error, batch_size=requested)
    backoff = None if size == requested else f"out of memory at batch {requested}; measured at batch {size}"
    return Check(gflops=gflops, tokens_final=tokens, clamp_note=clamp, batch_size=size, backoff_note=backoff,
                 compile_s=compile_s)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _failure(exc: BaseException, device: torch.device) -> str:
    """A failed configuration's error text; what it held on the GPU is released for the others."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if is_out_of_memory(exc):
        return f"out of memory even at batch 1: {one_line(exc)}"
    return one_line(exc)


def _clamp_note(requested: tuple[int, ...], effective: tuple[int, ...]) -> str | None:
    """Name the blocks where r was more than the tokens allow ((N - prefix) // 2), as the paper clamps."""
    clamped = [f"{i + 1}:{a}->{b}" for i, (a, b) in enumerate(zip(requested, effective)) if a != b]
    if not clamped:
        return None
    return f"r clamped at block(s) {' '.join(clamped)} (a block merges at most (N - prefix) // 2 tokens)"


def _stepper(model, batch, autocast) -> Callable[[], object]:
    def step() -> object:
        with autocast():
            return model(batch)

    return step


def _row(identity: Row, check: Check, timing: Timing | None, acc: Accuracy | None, images, skipped,
         reference: Timing | None, retimed: int = 0, latency: Timing | None = None,
         base_latency: Timing | None = None) -> Row:
    notes = [check.backoff_note, check.clamp_note]
    values: dict = dict(
        infer_batch_size=check.batch_size,
        infer_gflops=None if check.gflops is None else round(check.gflops, 4),
        tokens_final=check.tokens_final,
        error=check.error,
        compile_s=check.compile_s,
    )
    if latency is not None and latency.error is None:
        p50, p90, p99 = (q * 1e3 for q in latency.latency_quantiles())
        values.update(latency_ms_p50=p50, latency_ms_p90=p90, latency_ms_p99=p99)
        if base_latency is not None and base_latency.error is None:
            values["latency_speedup"] = base_latency.latency_quantiles()[0] / latency.latency_quantiles()[0]
    elif latency is not None:
        notes.append(f"no latency: {latency.error}")
    if timing is not None and timing.error is not None:
        values["error"] = f"timing: {timing.error}"
    elif timing is not None:
        median, p10, p90 = timing.samples_per_sec()
        values.update(
            infer_samples_per_sec=median,
            infer_samples_per_sec_p10=p10,
            infer_samples_per_sec_p90=p90,
            infer_step_time=timing.median_step_ms(),
            peak_mem_mb=timing.peak_mem_mb,
        )
        if reference is not None:
            p10_speedup, p90_speedup = timing.speedup_spread(reference)
            values.update(speedup=timing.speedup_over(reference), speedup_p10=p10_speedup, speedup_p90=p90_speedup,
                          baseline_samples_per_sec=reference.samples_per_sec()[0])
        else:
            notes.append("no speedup: the unpatched model failed")
        if timing.spread() > NOISY_SPREAD:
            again = f", after {retimed} re-timing(s)" if retimed else ""
            notes.append(f"noisy timing (p10-p90 spread {timing.spread():.0%} of the median{again})")
    if acc is not None and images is not None:
        values.update(top1=acc.top1, top5=acc.top5, n_images=acc.n_images, dataset=images.name)
        if acc.error:
            values["error"] = f"accuracy pass: {acc.error}"
        if skipped:
            notes.append(f"{skipped} unreadable image(s) skipped")
    note = "; ".join(n for n in notes if n)
    return replace(identity, note=note or None, **values)


def config_label(row: Row) -> str:
    """A configuration as people say it, unique within a sweep: "tome r=8", "tome r=8 (decreasing; features=q;
    no prop_attn)"; "unpatched" for the baseline."""
    if row.reducer == "none":
        return "unpatched"
    extra = [row.schedule] if row.schedule != "constant" else []
    extra += [row.reducer_options] if row.reducer_options else []
    extra += [] if row.prop_attn else ["no prop_attn"]
    return f"{row.reducer} r={row.r}" + (f" ({'; '.join(extra)})" if extra else "")


def _workers(requested: int | None) -> int:
    return requested if requested is not None else min(4, os.cpu_count() or 1)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model() or platform.processor() or platform.machine() or "cpu"


def _cpu_model() -> str | None:
    """The CPU's marketing name on Linux (platform.processor() often says only "x86_64")."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def describe(spec: SweepSpec) -> str:
    """One line naming what a spec measures, for progress titles."""
    if spec.r is None:
        r = "full range"
    elif isinstance(spec.r, range):
        r = f"{spec.r.start}..{spec.r[-1]}" + (f":{spec.r.step}" if spec.r.step != 1 else "") if spec.r else "none"
    else:
        r = schedule_label(list(spec.r))
    return f"{spec.model}: {','.join(spec.reducers)} r={r}"
