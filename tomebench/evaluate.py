"""Accuracy in one data pass: each batch is decoded once and run under every configuration.

Switching configuration is a `prepare()` call (patch/unpatch swaps the model's class; no weights move), so
the cost of decoding, resizing and host-to-device copies is paid once however many configurations a sweep has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

from tomebench.data import DeviceNormalize
from tomebench.errors import one_line
from tomebench.patch import logits_of


@dataclass(frozen=True)
class Accuracy:
    """top1/top5 in percent over n_images readable images; error set if the configuration failed mid-pass.

    correct1/correct5 are the exact counts behind the percentages and skipped the unreadable images, so the
    results of disjoint shards of a dataset add up exactly (`combine`)."""

    top1: float | None
    top5: float | None
    n_images: int
    error: str | None = None
    correct1: int = 0
    correct5: int = 0
    skipped: int = 0
    # ImageNet-ReaL (--real-labels): top-1 among the real_n images that have a ReaL label set, as timm's
    # RealLabelsImagenet counts it; None without ReaL labels.
    real_top1: float | None = None
    real_correct1: int = 0
    real_n: int = 0


def combine(parts: Sequence[Accuracy]) -> Accuracy:
    """The accuracy over the union of disjoint shards, from their exact counts; the first error wins."""
    seen = sum(p.n_images for p in parts)
    c1, c5 = sum(p.correct1 for p in parts), sum(p.correct5 for p in parts)
    skipped = sum(p.skipped for p in parts)
    real_c1, real_n = sum(p.real_correct1 for p in parts), sum(p.real_n for p in parts)
    error = next((p.error for p in parts if p.error), None)
    real = dict(real_correct1=real_c1, real_n=real_n)
    if error is not None or seen == 0:
        return Accuracy(None, None, seen, error, c1, c5, skipped, **real)
    real_top1 = 100.0 * real_c1 / real_n if real_n else None
    return Accuracy(100.0 * c1 / seen, 100.0 * c5 / seen, seen, None, c1, c5, skipped, real_top1, **real)


@dataclass(frozen=True)
class Evaluation:
    per_config: tuple[Accuracy, ...]
    skipped: int  # unreadable images, identical for every configuration


def count_correct(logits: Tensor, labels: Tensor, k: int) -> int:
    """Images whose label is among the k highest logits. logits (B, C), labels (B,)."""
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices  # (B, k)
    return int((top == labels[:, None]).any(dim=-1).sum())


def count_real(logits: Tensor, sets: Tensor, labelled: Tensor) -> int:
    """Images whose top-1 class is in their ReaL set. logits (B, C), sets (B, W) bool, labelled (B,) bool."""
    top1 = logits.topk(1, dim=-1).indices[:, 0]  # (B,), the same pick as count_correct
    inside = top1 < sets.shape[-1]
    hit = sets.gather(1, top1.clamp(max=sets.shape[-1] - 1)[:, None])[:, 0] & inside
    return int((hit & labelled).sum())


def _logits(
    module: torch.nn.Module,
    model: torch.nn.Module,
    x: Tensor,
    step: int,
    autocast: Callable[[], AbstractContextManager],
) -> Tensor:
    """(B, classes) for images x (B, 3, H, W), in forwards of at most `step` images."""
    with autocast():
        # logits_of: a transformers model returns an output object, not the logits tensor.
        outputs = [module(x[j : j + step]) for j in range(0, len(x), step)]
        return torch.cat([logits_of(model, out) for out in outputs])


def evaluate_in_one_pass(
    model: torch.nn.Module,
    prepares: Sequence[Callable[[], torch.nn.Module | None]],
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    normalize: DeviceNormalize,
    autocast: Callable[[], AbstractContextManager],
    on_batch: Callable[[int], None] | None = None,
    batch_sizes: Sequence[int | None] | None = None,
    valid: Sequence[int] | None = None,
) -> Evaluation:
    """Evaluate `model` under each configuration (`prepares[i]()` switches to it) over the same batches.

    A prepare that returns a module (a compiled configuration's own) has that module called instead of `model`.

    batches yield (uint8 images (B, 3, H, W), labels (B,), readable (B,) bool[, ReaL sets (B, W) bool]). valid,
    for a class subset, are the logits kept (labels index them), as timm's --valid-labels. A configuration that
    raises is marked with its error and left out of later batches; the others go on. batch_sizes[i], when given, splits
    each batch into forwards of at most that many images (a configuration that backed off after running out
    of memory); top-1/top-5 do not depend on how a batch is split.
    """
    batch_sizes = list(batch_sizes) if batch_sizes is not None else [None] * len(prepares)
    correct1 = [0] * len(prepares)
    correct5 = [0] * len(prepares)
    real_correct = [0] * len(prepares)
    real_n = 0
    has_real = False
    errors: list[str | None] = [None] * len(prepares)
    seen = skipped = 0
    with torch.inference_mode():
        for images, labels, readable, *real in batches:
            keep = readable.bool()
            skipped += int((~keep).sum())
            if on_batch:
                on_batch(len(labels))
            if not keep.any():
                continue
            # Copy the whole (pinned) batch, then drop unreadable images on the device: indexing on the host
            # first would make an unpinned copy and the transfer synchronous.
            on_device = keep.to(normalize.device, non_blocking=True)
            x = normalize(images)[on_device]
            y = labels.to(normalize.device, non_blocking=True)[on_device]
            seen += int(keep.sum())
            if real:
                has_real = True
                sets = real[0].to(normalize.device)[on_device]  # (B', W)
                labelled = sets.any(dim=-1)  # images without a ReaL label are left out of ReaL top-1
                real_n += int(labelled.sum())
            for i, prepare in enumerate(prepares):
                if errors[i] is not None:
                    continue
                try:
                    logits = _logits(prepare() or model, model, x, batch_sizes[i] or len(x), autocast)
                except (RuntimeError, ValueError, NotImplementedError) as exc:
                    errors[i] = one_line(exc)
                    continue
                if valid is not None:
                    logits = logits[:, list(valid)]  # (B', len(valid))
                correct1[i] += count_correct(logits, y, 1)
                correct5[i] += count_correct(logits, y, 5)
                if real:
                    real_correct[i] += count_real(logits, sets, labelled)
    results = tuple(
        combine([Accuracy(None, None, seen, err, c1, c5, skipped, None, rc, real_n if has_real else 0)])
        for c1, c5, err, rc in zip(correct1, correct5, errors, real_correct)
    )
    return Evaluation(results, skipped)
