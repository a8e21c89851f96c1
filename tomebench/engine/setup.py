"""What any process measuring a spec builds from it, once: the model on its device, the synthetic batch, the
images, every configuration decided (its patch checked and frozen) and each one's identity. Building it checks
every input, so bad input fails here, before anything is measured."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from tomebench import data as datasets
from tomebench.engine.images import resolve_images
from tomebench.engine.plan import Decided, decide, plan_configs
from tomebench.engine.spec import Config, RunSpec
from tomebench.measure import compiled
from tomebench.measure.device import autocast_for, resolve_device, resolve_dtype
from tomebench.measure.memory import largest_that_fits
from tomebench.models import LoadedModel, create
from tomebench.patch import check_supported, default_prop_attn, install, unpatch
from tomebench.patch.plan import NATIVE
from tomebench.reducers import REDUCERS
from tomebench.results.row import Row


def batch_sizes_for(spec: RunSpec, device: torch.device) -> tuple[int, ...]:
    """--batch-size as given, or the device's default: 256 on CUDA (the paper's), 32 on CPU."""
    return spec.batch_sizes or ((256,) if device.type == "cuda" else (32,))


def synthetic_batch(batch_size: int, shape: tuple[int, ...], device: torch.device | None) -> Tensor:
    """(n, *shape) seeded noise, on `device` when given. n is batch_size, or half of it as often as needed for the
    host or the device to hold it: the same backoff (`largest_that_fits`) as each configuration's full batch
    gets when it is probed, which then starts from the batch that was allocated."""

    def allocate(size: int) -> Tensor:
        batch = torch.randn((size, *shape), generator=torch.Generator().manual_seed(0))
        return batch if device is None else batch.to(device)

    return largest_that_fits(allocate, batch_size, device)[0]


@dataclass
class Setup:
    """The loaded model and the plan of one spec.

    configs holds every (configuration, batch size) pair the sweep measures, configuration by configuration:
    with batch sizes (b1, b2), [unpatched@b1, unpatched@b2, tome r=0@b1, tome r=0@b2, ...]. An index into it
    (also into planned and decided) is what the rest of the engine calls a configuration."""

    spec: RunSpec
    device: torch.device
    dtype: str
    loaded: LoadedModel
    images: datasets.ImageList | None
    configs: list[Config]
    planned: list[Row]  # each configuration's identity: a Row without measurements
    decided: list[Decided]  # each configuration's patch, checked once
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
    def build(cls, spec: RunSpec, measures_here: bool = True) -> Setup:
        """measures_here False: the driver of a cluster run, which plans and records but measures nothing, so
        its own machine need not have the device (the model stays on the CPU)."""
        device = resolve_device(spec.device) if measures_here or spec.device == "auto" else torch.device(spec.device)
        dtype = resolve_dtype(spec.dtype, device)
        sizes = batch_sizes_for(spec, device)
        with torch.random.fork_rng(devices=[]):
            # Randomly initialised models (--no-pretrained) come out the same on every run and in every process;
            # the caller's RNG is untouched.
            torch.manual_seed(0)
            loaded = create(spec.model, pretrained=spec.pretrained, checkpoint=spec.checkpoint, **spec.model_args)
        check_supported(loaded.model)
        notes: list[str] = _timing_notes(spec)
        images = resolve_images(spec, loaded, notes)
        configs = [replace(cfg, batch_size=b) for cfg in plan_configs(spec, loaded, notes) for b in sizes]
        decided = [decide(loaded.model, cfg) for cfg in configs]
        if measures_here:
            loaded.model.to(device)
        base = Row(
            model=loaded.name,
            reducer="none",
            r=0,
            schedule="constant",
            prop_attn=False,
            infer_img_size=loaded.img_size,
            infer_batch_size=sizes[0],
            dtype=dtype,
            device=str(device),
            param_count=round(loaded.param_count, 3),
            compile=spec.compile,
            **dict(loaded.versions),
        )
        planned = [_identity(base, cfg, loaded.model) for cfg in configs]
        batch = synthetic_batch(max(sizes), tuple(loaded.data_config["input_size"]), device if measures_here else None)
        return cls(spec, device, dtype, loaded, images, configs, planned, decided, base, batch, tuple(notes), sizes)

    def prepare(self, i: int, eager: bool = False) -> Callable[[], torch.nn.Module]:
        """A function that switches to configuration i and returns the module to call; it checks nothing (the
        configuration was decided once, in `build`).

        Eager: the one model, patched in place (no weights move). Compiled (unless `eager`): configuration i's
        own compiled module, made on the first call (see `tomebench.measure.compiled`); the shared model is left
        as it is."""
        if self.spec.compile is not None and not eager:
            return functools.partial(self._compiled, i)
        model, info = self.model, self.decided[i].patch
        if info is None:
            return lambda: unpatch(model)
        return lambda: install(model, info)

    def _compiled(self, i: int) -> torch.nn.Module:
        if i not in self.compiled:
            copy = compiled.shared_copy(unpatch(self.model))
            info = self.decided[i].patch
            if info is not None:
                install(copy, info)
            self.compiled[i] = compiled.compile_module(copy, self.spec.compile)
        return self.compiled[i]


def _identity(base: Row, cfg: Config, model) -> Row:
    """A configuration's row before anything is measured: what it is, at which batch size."""
    identity = replace(base, infer_batch_size=cfg.batch_size, requested_batch_size=cfg.batch_size)
    if cfg.reducer == "none":
        return identity
    spec = REDUCERS.get(cfg.reducer)
    prop = default_prop_attn(model, spec) if cfg.prop_attn is None else cfg.prop_attn
    schedule = cfg.schedule.label if spec.budget is None else NATIVE
    options = ",".join(f"{k}={v}" for k, v in cfg.options) or None
    return replace(
        identity,
        reducer=cfg.reducer,
        r=cfg.r,
        schedule=schedule,
        prop_attn=prop,
        note=cfg.note,
        reducer_options=options,
    )


def _timing_notes(spec: RunSpec) -> list[str]:
    """What the user should know about the timing asked for."""
    if spec.repeats is not None and spec.repeats < 3:
        return [
            f"--repeats {spec.repeats}: with fewer than 3 rounds a speedup has no spread to tell it from noise "
            "(its interval is all of its rounds); use at least 3, or --time-budget"
        ]
    return []
