"""A finished group's rows: each configuration's probe, timing, latency and accuracy as one Row, with the notes
a reader should see (out-of-memory backoff, clamped r, noisy timing, skipped images)."""

from __future__ import annotations

from dataclasses import replace

from tomebench.engine.probe import Check
from tomebench.engine.setup import Setup
from tomebench.engine.throughput import Throughput
from tomebench.errors import TomebenchError
from tomebench.evaluate import Accuracy
from tomebench.measure.timing import NOISY_SPREAD, Timing
from tomebench.results.row import Row


def group_rows(
    setup: Setup,
    group: list[int],
    throughput: Throughput,
    accuracy: dict[int, Accuracy],
    accuracy_error: str | None = None,
) -> tuple[list[Row], dict[str, Timing]]:
    """The rows of a finished group, and its raw timings by label."""
    if (
        setup.images is not None
        and throughput.evaluable
        and accuracy
        and all(a.n_images == 0 and a.error is None for a in accuracy.values())
    ):
        raise TomebenchError(f"none of the {len(setup.images.files)} images under {setup.images.name} could be read")
    rows = []
    accuracy = {i: accuracy[j] for i in group for j in accuracy if setup.sibling_key(i) == setup.sibling_key(j)}
    latency = {
        i: throughput.latency[j]
        for i in group
        for j in throughput.latency
        if setup.sibling_key(i) == setup.sibling_key(j)
    }
    base_latency = next((t for j, t in throughput.latency.items() if setup.sibling_key(j) == 0), None)
    for i in group:
        acc = accuracy.get(i) if i in throughput.evaluable else None
        if accuracy_error is not None and i in throughput.evaluable:
            acc = Accuracy(None, None, 0, accuracy_error)
        baseline = throughput.timings.get(setup.baseline_for(i))
        reference = baseline if baseline is not None and baseline.error is None else None
        row = make_row(
            setup.planned[i],
            throughput.checks[i],
            throughput.timings.get(i),
            acc,
            setup.images,
            reference,
            throughput.retimed,
            latency.get(i),
            base_latency,
            throughput.gave_up_s,
            _classes(setup),
        )
        rows.append(replace(row, device_name=throughput.device_name or None))
    raw = {throughput.labels[i]: throughput.timings[i] for i in throughput.timings}
    raw.update({f"{throughput.labels[j]} latency": t for j, t in throughput.latency.items()})
    return rows, raw


def make_row(
    identity: Row,
    check: Check,
    timing: Timing | None,
    acc: Accuracy | None,
    images,
    reference: Timing | None,
    retimed: int = 0,
    latency: Timing | None = None,
    base_latency: Timing | None = None,
    gave_up_s: float | None = None,
    classes: int | None = None,
) -> Row:
    """One configuration's row from what was measured of it; `reference` is the unpatched model's timing in the
    same group (what speedup divides by)."""
    notes = [identity.note, check.backoff_note, check.clamp_note]  # the plan's own note first (a GMACs match)
    values: dict = dict(
        infer_batch_size=check.batch_size,
        infer_gflops=None if check.gflops is None else round(check.gflops, 4),
        tokens_final=check.tokens_final,
        tokens_per_layer=",".join(map(str, check.tokens_per_layer)) or None,
        attn_impl=check.attn_impl,
        error=check.error,
        compile_s=check.compile_s,
    )
    notes += _latency(values, latency, base_latency)
    notes += _timing(values, timing, reference, retimed, gave_up_s)
    if acc is not None and images is not None:
        # Among 5 classes or fewer every label is in the top 5: a top-5 of 100% says nothing.
        top5 = acc.top5 if classes is None or classes > TOP_K else None
        values.update(top1=acc.top1, top5=top5, n_images=acc.n_images, dataset=images.name, n_unreadable=acc.skipped)
        values.update(real_top1=acc.real_top1)
        if top5 is None and acc.top5 is not None:
            notes.append(f"no top-5: the model predicts {classes} classes")
        if acc.error:
            values["error"] = f"accuracy pass: {acc.error}"
        if acc.skipped:
            notes.append(f"{acc.skipped} unreadable image(s) skipped")
    note = "; ".join(n for n in notes if n)
    return replace(identity, note=note or None, **values)


def _classes(setup: Setup) -> int:
    """The classes an image's prediction is chosen among: the model's, or a class subset's (ImageNet-A/R)."""
    images = setup.images
    return setup.loaded.num_classes if images is None or images.valid is None else len(images.valid)


def _latency(values: dict, latency: Timing | None, base: Timing | None) -> list[str]:
    if latency is None:
        return []
    if latency.error is not None:
        return [f"no latency: {latency.error}"]
    p50, p90, p99 = (q * 1e3 for q in latency.latency_quantiles())
    values.update(latency_ms_p50=p50, latency_ms_p90=p90, latency_ms_p99=p99)
    if base is not None and base.error is None:
        values["latency_speedup"] = base.latency_quantiles()[0] / latency.latency_quantiles()[0]
    return []


TOP_K = 5


def _timing(
    values: dict, timing: Timing | None, reference: Timing | None, retimed: int, gave_up_s: float | None = None
) -> list[str]:
    if timing is None:
        return []
    if timing.error is not None:
        values["error"] = f"timing: {timing.error}"
        return []
    notes = []
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
        low, high = timing.speedup_interval(reference)
        values.update(speedup_ci_low=low, speedup_ci_high=high)
        values.update(
            speedup=timing.speedup_over(reference),
            speedup_p10=p10_speedup,
            speedup_p90=p90_speedup,
            baseline_samples_per_sec=reference.samples_per_sec()[0],
        )
    else:
        notes.append("no speedup: the unpatched model failed")
    if timing.spread() > NOISY_SPREAD:
        again = f", after {retimed} re-timing(s)" if retimed else ""
        stopped = f"; re-timing stopped after {gave_up_s:.0f} s, its share of time" if gave_up_s else ""
        notes.append(f"noisy timing (p10-p90 spread {timing.spread():.0%} of the median{again}{stopped})")
    return notes
