"""The engine behind `sweep` and `compare`: a spec in, one Row per configuration out.

Order of work: resolve and load everything (bad input fails here, before anything is measured); check each
configuration once (cost, tokens, one full batch: failures become error rows); time the working ones
interleaved against the unpatched model; then one accuracy pass over the data for all of them.
"""

from __future__ import annotations

import inspect
import os
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import torch

from tomebench import data as datasets
from tomebench.cost import count_gflops, final_tokens
from tomebench.demo import digits
from tomebench.demo import model as demo_model
from tomebench.errors import TomebenchError, UsageError, one_line
from tomebench.evaluate import Accuracy, evaluate_in_one_pass
from tomebench.models import LoadedModel, create
from tomebench.patch import (
    check_supported,
    default_prop_attn,
    num_input_tokens,
    num_prefix_tokens,
    patch,
    patch_info,
    token_counts,
    unpatch,
)
from tomebench.reducers import REDUCERS
from tomebench.results import Row, capture_environment
from tomebench.schedule import full_r, parse_schedule, schedule_label
from tomebench.timing import NOISY_SPREAD, Candidate, Timing, TimingPlan, time_interleaved

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEMO_DATA = "demo"
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class SweepSpec:
    """What to measure. None means "the model's or the device's default"."""

    model: str = "demo"
    reducers: tuple[str, ...] = ("tome",)
    r: tuple[int, ...] | None = None  # None: 0 .. full_r, every token spent by the last block
    schedule: str = "constant"  # "constant", "decreasing" or an explicit list "16,12,8"
    prop_attn: bool | None = None  # None: on for supervised models, off for MAE (as in the paper)
    batch_size: int | None = None  # None: 256 on CUDA (the paper's), 32 on CPU
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


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep. reducer "none" is the unpatched model."""

    reducer: str
    r: int


class Progress(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _Silent:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
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


def plan_configs(spec: SweepSpec, loaded: LoadedModel) -> list[Config]:
    """The unpatched baseline first, then every (reducer, r), reducers in the order given."""
    model = loaded.model
    r_values = spec.r
    if r_values is None:
        r_values = tuple(range(full_r(num_input_tokens(model), num_prefix_tokens(model), len(model.blocks)) + 1))
    schedule = parse_schedule(spec.schedule)
    if isinstance(schedule, tuple):
        # An explicit per-block list is one configuration; its r is the mean tokens removed per block.
        r_values = (sum(schedule) // len(model.blocks),)
    configs = [Config("none", 0)]
    for name in dict.fromkeys(REDUCERS.canonical(n) for n in spec.reducers):
        if name != "none":
            configs += [Config(name, r) for r in r_values]
    return configs


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


def check_reducer_options(options: dict[str, dict]) -> None:
    """Every option must be a keyword the reducer function takes (after the tokens and r)."""
    for name, values in options.items():
        accepted = list(inspect.signature(REDUCERS.get(name)).parameters)[2:]
        for key in values:
            if key not in accepted:
                known = ", ".join(accepted) or "none"
                raise UsageError(f"reducer {name} has no option {key!r} (its options: {known})")


def resolve_images(spec: SweepSpec, loaded: LoadedModel) -> datasets.ImageList | None:
    """The images to evaluate (None: throughput only), checked against the model's classifier."""
    source = spec.data
    if source is None:
        source = DEMO_DATA if loaded.name.startswith(demo_model.ARCHITECTURE) else SYNTHETIC
    if source == SYNTHETIC:
        return None
    if source == DEMO_DATA:
        root = digits.write_image_folder(_cache_dir() / "digits-test", "test")
        images = datasets.discover(root)
        images = datasets.ImageList(images.files, images.labels, images.classes, "digits-test")
    else:
        images = datasets.discover(Path(source), spec.labels)
    num_classes = int(getattr(loaded.model, "num_classes", 0) or 0)
    if num_classes == 0:
        raise UsageError(f"{loaded.name} has no classifier head, so it has no accuracy; use --data synthetic")
    if images.classes is not None and len(images.classes) != num_classes:
        raise UsageError(
            f"--data {source} has {len(images.classes)} class folders but {loaded.name} predicts {num_classes} classes"
        )
    if images.classes is None and images.num_classes > num_classes:
        raise UsageError(f"--labels uses class {images.num_classes - 1} but {loaded.name} predicts {num_classes}")
    return datasets.balanced_subset(images, spec.limit)


def _cache_dir() -> Path:
    return Path(os.environ.get("TOMEBENCH_CACHE", Path.home() / ".cache" / "tomebench"))


def run_sweep(
    spec: SweepSpec,
    progress: Progress | None = None,
    on_raw_times: Callable[[dict[str, Timing]], None] | None = None,
) -> list[Row]:
    """Measure every configuration of spec; one Row each, failures included as rows with `error` set.

    on_raw_times receives the raw timings ({"tome r=8": Timing, ...}) once timing is done, for keeping.
    """
    progress = progress or _Silent()
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    schedule = parse_schedule(spec.schedule)
    for name in spec.reducers:
        REDUCERS.canonical(name)
    check_reducer_options(spec.reducer_options)
    for flag, value, least in (("--batch-size", spec.batch_size, 1), ("--repeats", spec.repeats, 1),
                               ("--workers", spec.workers, 0), ("--limit", spec.limit, 1)):
        if value is not None and value < least:
            raise UsageError(f"{flag} must be >= {least}, got {value}")
    loaded = create(spec.model, pretrained=spec.pretrained, checkpoint=spec.checkpoint, **spec.model_kwargs)
    check_supported(loaded.model)
    if isinstance(schedule, tuple) and len(schedule) > len(loaded.model.blocks):
        raise UsageError(f"--schedule lists {len(schedule)} blocks but {loaded.name} has {len(loaded.model.blocks)}")
    images = resolve_images(spec, loaded)
    configs = plan_configs(spec, loaded)
    model = loaded.model.to(device)
    batch_size = spec.batch_size or (256 if device.type == "cuda" else 32)
    autocast = autocast_for(device, dtype)

    def prepare(cfg: Config) -> Callable[[], None]:
        if cfg.reducer == "none":
            return lambda: unpatch(model)
        sched = schedule if isinstance(schedule, tuple) else cfg.r
        label = "constant" if isinstance(schedule, tuple) else schedule
        options = spec.reducer_options.get(cfg.reducer, {})
        return lambda: patch(model, cfg.reducer, sched, label, spec.prop_attn, **options)

    # What identifies each row, known before anything runs, so a failed configuration keeps its identity.
    prop = default_prop_attn(model) if spec.prop_attn is None else spec.prop_attn
    label = schedule_label(schedule)
    identities = [("constant", False) if cfg.reducer == "none" else (label, prop) for cfg in configs]

    prepares = [prepare(cfg) for cfg in configs]
    input_shape = tuple(loaded.data_config["input_size"])
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, *input_shape), generator=gen).to(device)
    one = batch[:1]

    progress.phase("checking", len(configs))
    checks = []
    try:
        for cfg, prep, (sched_label, use_prop) in zip(configs, prepares, identities):
            checks.append(_check(model, prep, one, batch, autocast, device, sched_label, use_prop))
            progress.advance()

        ok = [i for i, c in enumerate(checks) if c.error is None]
        plan = TimingPlan.for_device(device, spec.repeats)
        progress.phase("timing", plan.repeats * len(ok))
        candidates = [Candidate(_label(configs[i]), prepares[i], _stepper(model, batch, autocast)) for i in ok]
        with torch.inference_mode():
            timings = dict(zip(ok, time_interleaved(candidates, device, plan, lambda _: progress.advance())))
        if on_raw_times is not None:
            on_raw_times({_label(configs[i]): timings[i] for i in timings})
        ok = [i for i in ok if timings[i].error is None]
        accuracy, skipped = _accuracy(spec, loaded, images, model, [prepares[i] for i in ok], batch_size, device,
                                      autocast, progress)
        accuracy = dict(zip(ok, accuracy))
    finally:
        unpatch(model)


    env = capture_environment(_device_name(device))
    base = Row(
        model=loaded.name,
        reducer="none",
        r=0,
        schedule="constant",
        prop_attn=False,
        infer_img_size=loaded.img_size,
        infer_batch_size=batch_size,
        dtype=dtype,
        device=str(device),
        param_count=round(loaded.param_count, 3),
    ).with_environment(env)
    baseline = timings.get(0)
    reference = baseline if baseline is not None and baseline.error is None else None
    rows = []
    for i, cfg in enumerate(configs):
        rows.append(
            _row(base, cfg, checks[i], timings.get(i), accuracy.get(i), images, skipped, batch_size, reference)
        )
    return rows


def _accuracy(spec, loaded, images, model, prepares, batch_size, device, autocast, progress):
    """One data pass over images for the given configurations -> (accuracies, unreadable images)."""
    if images is None or not prepares:
        return [], 0
    progress.phase("accuracy", len(images.files))
    loader = datasets.make_loader(
        images, loaded.data_config, batch_size, _workers(spec.workers), pin_memory=device.type == "cuda"
    )
    normalize = datasets.DeviceNormalize(loaded.data_config, device)
    evaluation = evaluate_in_one_pass(model, prepares, loader, normalize, autocast, progress.advance)
    if all(a.n_images == 0 for a in evaluation.per_config):
        raise TomebenchError(f"none of the {len(images.files)} images under {images.name} could be read")
    return list(evaluation.per_config), evaluation.skipped


@dataclass(frozen=True)
class _Check:
    """What one untimed run of a configuration showed."""

    error: str | None = None
    gflops: float | None = None
    tokens_final: int | None = None
    schedule: str = "constant"
    prop_attn: bool = False
    clamp_note: str | None = None


def _check(model, prepare, one, batch, autocast, device, schedule: str, prop_attn: bool) -> _Check:
    """Switch to the configuration, count its cost on one image, and run one full batch (catches OOM)."""
    try:
        prepare()
        gflops = count_gflops(model, one)
        with torch.inference_mode():
            tokens = final_tokens(model, one)
            with autocast():
                model(batch)
    except Exception as exc:  # noqa: BLE001 - any failure of one configuration becomes its row's error
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _Check(error=one_line(exc), schedule=schedule, prop_attn=prop_attn)
    info = patch_info(model)
    clamp = None if info is None else _clamp_note(info.r, token_counts(model)[0])
    return _Check(gflops=gflops, tokens_final=tokens, schedule=schedule, prop_attn=prop_attn, clamp_note=clamp)


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


def _row(base, cfg, check, timing: Timing | None, acc: Accuracy | None, images, skipped, batch_size,
         reference: Timing | None):
    notes = [check.clamp_note]
    values: dict = dict(
        reducer=cfg.reducer,
        r=cfg.r,
        schedule=check.schedule,
        prop_attn=check.prop_attn,
        infer_gflops=None if check.gflops is None else round(check.gflops, 4),
        tokens_final=check.tokens_final,
        error=check.error,
    )
    if timing is not None and timing.error is not None:
        values["error"] = f"timing: {timing.error}"
    elif timing is not None:
        median, p10, p90 = timing.samples_per_sec(batch_size)
        values.update(
            infer_samples_per_sec=median,
            infer_samples_per_sec_p10=p10,
            infer_samples_per_sec_p90=p90,
            infer_step_time=timing.median_step_ms(),
            speedup=timing.speedup_over(reference) if reference else None,
            peak_mem_mb=timing.peak_mem_mb,
        )
        if reference is None:
            notes.append("no speedup: the unpatched model failed")
        if timing.spread(batch_size) > NOISY_SPREAD:
            notes.append(f"noisy timing (p10-p90 spread {timing.spread(batch_size):.0%} of the median)")
    if acc is not None and images is not None:
        values.update(top1=acc.top1, top5=acc.top5, n_images=acc.n_images, dataset=images.name)
        if acc.error:
            values["error"] = f"accuracy pass: {acc.error}"
        if skipped:
            notes.append(f"{skipped} unreadable image(s) skipped")
    note = "; ".join(n for n in notes if n)
    return replace(base, note=note or None, **values)


def _label(cfg: Config) -> str:
    return "unpatched" if cfg.reducer == "none" else f"{cfg.reducer} r={cfg.r}"


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
    r = "full range" if spec.r is None else schedule_label(list(spec.r))
    return f"{spec.model}: {','.join(spec.reducers)} r={r}"
