"""The engine behind `sweep` and `compare`: a spec in, one Row per configuration out, group by group.

Order of work: resolve and load everything (bad input fails here, before anything is measured); probe each
configuration once (cost, tokens, one full batch: failures become error rows); time the working ones
interleaved against the unpatched model; then one accuracy pass over the data for all of them. Each finished
group goes to the sink (the CSV on disk) at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from tomebench.engine.accuracy import accuracy_sizes, count_accuracy
from tomebench.engine.images import data_source
from tomebench.engine.probe import Check
from tomebench.engine.progress import Progress, Silent
from tomebench.engine.rows import group_rows
from tomebench.engine.setup import Setup
from tomebench.engine.spec import RunSpec
from tomebench.engine.throughput import measure_throughput
from tomebench.errors import TomebenchError, one_line
from tomebench.measure.environment import capture_environment
from tomebench.measure.timing import Timing
from tomebench.patch import unpatch
from tomebench.results.row import Row


class Sink(Protocol):
    """Where finished rows go as a sweep runs (the CLI's is the CSV on disk, see `tomebench.results.journal`)."""

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


class Executor(Protocol):
    def resolve(self, spec: RunSpec) -> RunSpec:
        """The spec with anything the executor decides filled in (a cluster picks the device)."""
        ...

    def run(
        self,
        setup: Setup,
        groups: list[list[int]],
        finished: Callable[[list[Row], dict[str, Timing]], list[Row]],
        progress: Progress,
    ) -> list[Row]:
        """Measure each group (indices into setup.configs), calling `finished(rows, raw_times)` as each completes;
        return what `finished` returned, concatenated."""
        ...


class LocalExecutor:
    """Every group here, one after another, on the spec's device."""

    def resolve(self, spec: RunSpec) -> RunSpec:
        return spec

    def run(self, setup: Setup, groups, finished, progress) -> list[Row]:
        rows: list[Row] = []
        checks: dict[int, Check] = {}  # the baselines' are reused by every group
        try:
            for n, group in enumerate(groups, 1):
                tag = f" {n}/{len(groups)}" if len(groups) > 1 else ""
                throughput = measure_throughput(setup, group, progress, tag, checks)
                try:
                    accuracy, failed = (
                        count_accuracy(setup, accuracy_sizes(setup, throughput), None, progress, tag),
                        None,
                    )
                except (KeyboardInterrupt, TomebenchError):
                    raise
                except Exception as exc:  # noqa: BLE001 - the data pass broke (a worker died): the timings stay
                    accuracy, failed = {}, one_line(exc)
                rows += finished(*group_rows(setup, group, throughput, accuracy, failed))
        finally:
            unpatch(setup.model)
        return rows


def run_sweep(
    spec: RunSpec, progress: Progress | None = None, sink: Sink | None = None, executor: Executor | None = None
) -> list[Row]:
    """Measure every configuration of spec; one Row each, failures included as rows with `error` set.

    Configurations run in groups of spec.group_size: each group is timed interleaved with the unpatched model
    (so its speedups are same-run ratios) and evaluated in one data pass, then handed to `sink` at once, so an
    interrupted sweep keeps every finished group. Configurations the sink already has are skipped. `executor`
    runs the groups (default: here, one after another; `tomebench.engine.ray.RayExecutor` spreads them over a
    Ray cluster). Returns the rows measured by this call, in plan order.
    """
    progress = progress or Silent()
    sink = sink or _Collect()
    executor = executor or LocalExecutor()
    spec = executor.resolve(spec)
    setup = Setup.build(spec, measures_here=isinstance(executor, LocalExecutor))
    done = sink.begin(settings(spec, setup), setup.planned)
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

        return executor.run(setup, groups(setup, todo, spec.group_size), finished, progress)
    finally:
        end = getattr(sink, "end", None)  # optional: a sink holding a resource (the journal's lock) lets go
        if end is not None:
            end()


def groups(setup: Setup, todo: list[int], size: int) -> list[list[int]]:
    """Split configuration indices into groups of `size` configurations (0: one group), each with all its batch
    sizes (so its accuracy is computed once, in one group); the baselines lead the first group."""
    siblings: dict[int, list[int]] = {}
    for i in todo:
        siblings.setdefault(setup.sibling_key(i), []).append(i)
    base = siblings.pop(0, [])
    others = list(siblings.values())
    size = size or max(len(others), 1)
    chunks = [[i for sets in others[k : k + size] for i in sets] for k in range(0, len(others), size)] or [[]]
    chunks[0] = base + chunks[0]
    return chunks


def settings(spec: RunSpec, setup: Setup) -> dict:
    """What makes two sweeps' rows comparable: every input that changes a measured value (not its precision)."""
    from tomebench import __version__

    base, images = setup.base, setup.images
    return {
        "model": base.model,
        "checkpoint": None if spec.checkpoint is None else str(spec.checkpoint),
        "pretrained": spec.pretrained,
        "model_kwargs": spec.model_args,
        "img_size": base.infer_img_size,
        # One size as a number, as CSVs of earlier versions recorded it; several as a list.
        "batch_size": setup.batch_sizes[0] if len(setup.batch_sizes) == 1 else list(setup.batch_sizes),
        "compile": spec.compile,
        "dtype": base.dtype,
        "device": base.device,
        "data": data_source(spec, setup.loaded),
        "labels": None if spec.labels is None else str(spec.labels),
        "limit": spec.limit,
        "real_labels": None if spec.real_labels is None else str(spec.real_labels),
        "class_subset": spec.class_subset,
        "dataset": None if images is None else images.name,
        "n_files": None if images is None else len(images.files),
        "tomebench": __version__,
    }
