"""Sweeps on a Ray cluster: each group's throughput on one whole device, accuracy data-parallel over shards.

The driver (the machine running `tomebench ... --executor ray`) plans, records and writes the CSV; it measures
nothing. For every group of configurations one throughput task checks and times them all, interleaved with the
unpatched model, on one whole GPU (or one whole CPU node), so its speedups compare like with like. Once a
group's timings are in, its accuracy is counted by shard tasks, each evaluating every configuration of the group
on a disjoint slice of the images; their exact counts are summed, so no image is counted twice or dropped. A
group's rows reach the CSV as soon as its last task finishes. A task whose worker dies is retried by Ray
(`retries`); if it still fails, its configurations become rows with `error`, and the sweep goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tomebench.engine.accuracy import accuracy_sizes, count_accuracy
from tomebench.engine.probe import Check
from tomebench.engine.progress import Progress
from tomebench.engine.rows import group_rows
from tomebench.engine.setup import Setup
from tomebench.engine.spec import DEMO_DATA, SYNTHETIC, RunSpec
from tomebench.engine.throughput import Throughput, measure_throughput
from tomebench.errors import UsageError, one_line
from tomebench.evaluate import Accuracy, combine
from tomebench.measure.device import resolve_device
from tomebench.results.row import Row

INSTALL = "--executor ray needs Ray: pip install 'tomebench[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


@dataclass
class RayExecutor:
    """Runs a sweep's groups as Ray tasks. address None: join the cluster in RAY_ADDRESS, or start a local one.

    shards: accuracy tasks per group (default: as many as the cluster has GPUs, or CPUs on a CPU cluster, but at
    least one batch each). fault, for tests: called at the start of every task, in the worker.
    """

    address: str | None = None
    shards: int | None = None
    retries: int = 2
    fault: Callable[[str], None] | None = None
    init_options: dict = field(default_factory=dict)

    def resolve(self, spec: RunSpec) -> RunSpec:
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, **self.init_options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(
                    f"cannot reach the Ray cluster at {self.address or 'RAY_ADDRESS/local'}: {one_line(exc)}"
                ) from None
        gpus = ray.cluster_resources().get("GPU", 0)
        if spec.device == "auto":
            return replace(spec, device="cuda" if gpus else "cpu")
        if spec.device.startswith("cuda"):
            if not gpus:
                raise UsageError(f"--device {spec.device}: the Ray cluster has no GPU; use --device cpu")
            return replace(spec, device="cuda")  # each task sees only the GPU Ray gave it
        resolve_device(spec.device)  # a device name that is not cpu fails here, in one line
        return spec

    def run(self, setup: Setup, groups, finished, progress: Progress) -> list[Row]:
        ray = import_ray()
        gpu = setup.device.type == "cuda"
        # A whole device per timing task: a GPU, or every core of a CPU node, so nothing else runs beside it.
        timing_resources = {"num_gpus": 1} if gpu else {"num_cpus": _cpus_per_node(ray)}
        shard_resources = {"num_gpus": 1} if gpu else {"num_cpus": 1}
        run = _Run(
            ray,
            setup,
            groups,
            finished,
            progress,
            count_task=ray.remote(max_retries=self.retries, **shard_resources)(_count_shard),
            shards=_shards(setup, self.shards or int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1))),
            fault=self.fault,
        )
        time_task = ray.remote(max_retries=self.retries, **timing_resources)(_time_group)
        progress.phase("groups (ray)", len(groups))
        spec = _absolute(setup.spec)
        run.waiting = {time_task.remote(spec, group, self.fault): ("time", g) for g, group in enumerate(groups)}
        try:
            run.collect()
        except BaseException:
            # Ctrl-C or SIGTERM on the driver: what finished is saved; stop what is still running on the cluster.
            for ref in run.waiting:
                ray.cancel(ref, force=True)
            raise
        return [row for g in sorted(run.rows) for row in run.rows[g]]  # plan order, whatever order they finished


@dataclass
class _Run:
    """The driver's state while a sweep's tasks are out: what is waited for, and what each group has so far."""

    ray: object
    setup: Setup
    groups: list[list[int]]
    finished: Callable
    progress: Progress
    count_task: object
    shards: list[tuple[int, int]]
    fault: Callable[[str], None] | None
    waiting: dict = field(default_factory=dict)  # task ref -> ("time" | "count K", group)
    throughput: dict[int, Throughput] = field(default_factory=dict)
    counts: dict[int, list] = field(default_factory=dict)  # group -> per shard: counts, an error text, or None
    rows: dict[int, list[Row]] = field(default_factory=dict)

    def collect(self) -> None:
        """Take results as they come: a timed group sends out its shard tasks; a fully counted group is saved."""
        ray = self.ray
        while self.waiting:
            [ref], _ = ray.wait(list(self.waiting), num_returns=1)
            kind, g = self.waiting.pop(ref)
            if kind == "time":
                try:
                    self.throughput[g] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    self.throughput[g] = _failed_group(self.setup, self.groups[g], f"ray task failed: {_cause(exc)}")
                self._count(g)
            else:
                k = int(kind.split()[1])
                try:
                    self.counts[g][k] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    self.counts[g][k] = f"shard {k + 1} of {len(self.shards)}: ray task failed: {_cause(exc)}"
            if g in self.throughput and all(part is not None for part in self.counts[g]):
                self.rows[g] = self.finished(*_rows(self.setup, self.groups[g], self.throughput[g], self.counts.pop(g)))
                self.progress.advance()

    def _count(self, g: int) -> None:
        """Send out the shard tasks of a timed group (none without images or without a working configuration)."""
        sizes = accuracy_sizes(self.setup, self.throughput[g])
        if self.setup.images is None or not sizes:
            self.counts[g] = []
            return
        parts = [self.count_task.remote(_absolute(self.setup.spec), sizes, shard, self.fault) for shard in self.shards]
        self.counts[g] = [None] * len(parts)
        self.waiting.update({part: (f"count {k}", g) for k, part in enumerate(parts)})


def _rows(setup: Setup, group: list[int], throughput: Throughput, parts: list):
    """Sum the shards' exact counts per configuration; a failed shard fails the accuracy of the whole group."""
    failed = next((p for p in parts if isinstance(p, str)), None)
    accuracy: dict[int, Accuracy] = {}
    if parts and failed is None:
        accuracy = {i: combine([part[i] for part in parts]) for i in parts[0]}
    return group_rows(setup, group, throughput, accuracy, failed)


def _failed_group(setup: Setup, group: list[int], error: str) -> Throughput:
    indices = dict.fromkeys([*(setup.baseline_for(i) for i in group), *group])
    checks = {i: Check(error=error, batch_size=setup.configs[i].batch_size) for i in indices}
    return Throughput(checks, {}, (), {})


def _cause(exc: BaseException) -> str:
    """The one line that says why a Ray task failed (its own exception when it raised, else Ray's)."""
    cause = getattr(exc, "cause", None)
    return one_line(cause if isinstance(cause, BaseException) else exc)


def _shards(setup: Setup, wanted: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices of the images, at least one batch each."""
    if setup.images is None:
        return []
    n = len(setup.images.files)
    count = max(1, min(wanted, math.ceil(n / setup.eval_batch_size)))
    bounds = [round(k * n / count) for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _cpus_per_node(ray) -> int:
    """The CPUs of the smallest alive node that has any (a head started with --num-cpus=0 runs no tasks): a
    timing task that asks for them has that node to itself."""
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    cpus = [c for c in cpus if c > 0]
    return max(1, int(min(cpus))) if cpus else 1


# ---------------------------------------------------------------- what runs in the workers

_SETUPS: dict[str, Setup] = {}  # a worker process reuses its model across the tasks of one sweep


def _setup(spec: RunSpec) -> Setup:
    key = repr(spec)
    if key not in _SETUPS:
        _SETUPS.clear()
        _SETUPS[key] = Setup.build(spec)
    return _SETUPS[key]


def _time_group(spec: RunSpec, group: list[int], fault) -> Throughput:
    if fault is not None:
        fault("time")
    _use_assigned_cpus()
    return measure_throughput(_setup(spec), group)


def _count_shard(spec: RunSpec, sizes: dict[int, int], shard: tuple[int, int], fault) -> dict[int, Accuracy]:
    if fault is not None:
        fault("count")
    _use_assigned_cpus()
    return count_accuracy(_setup(spec), sizes, shard)


def _use_assigned_cpus() -> None:
    """As many torch threads as CPUs Ray gave this task: a reused worker keeps the count of its first task."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def _absolute(spec: RunSpec) -> RunSpec:
    """Paths as the workers need them: absolute, since a worker's working directory is not the driver's."""

    def resolved(path):
        return None if path is None else Path(path).expanduser().resolve()

    data = spec.data
    if data is not None and data.startswith("wds:") and not data[4:].startswith("/"):
        data = "wds:" + str(Path(data[4:]).expanduser().absolute())  # a pattern: {00..63} is no path to resolve
    elif data not in (None, DEMO_DATA, SYNTHETIC) and not data.startswith(("hf:", "wds:")):
        data = str(Path(data).expanduser().resolve())
    subset = spec.class_subset
    if subset is not None and subset not in ("synsets", "indices"):
        subset = str(resolved(subset))
    return replace(
        spec,
        data=data,
        labels=resolved(spec.labels),
        checkpoint=resolved(spec.checkpoint),
        real_labels=resolved(spec.real_labels),
        class_subset=subset,
        cache_data=resolved(spec.cache_data),
    )
