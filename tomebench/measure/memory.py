"""Out of memory, on the device or the host: telling it apart from other failures, and halving a batch until
it fits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from tomebench.errors import one_line

T = TypeVar("T")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or an allocator failure on the host."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def release(device: torch.device | None) -> None:
    """Give back what a failed attempt held on the GPU, so the next one (or the next configuration) has it."""
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()


def largest_that_fits(run: Callable[[int], T], size: int, device: torch.device | None) -> tuple[T, int]:
    """run(size), halving size after each out-of-memory error until it fits: (what it returned, the size). The
    last error is raised if even 1 does not fit; any other error at once."""
    while True:
        try:
            return run(size), size
        except Exception as exc:  # noqa: BLE001 - only out of memory is retried; the rest is re-raised
            if size == 1 or not is_out_of_memory(exc):
                raise
            release(device)
            size //= 2


def failure(exc: BaseException, device: torch.device) -> str:
    """A failed configuration's error text; what it held on the GPU is released for the others."""
    release(device)
    if is_out_of_memory(exc):
        return f"out of memory even at batch 1: {one_line(exc)}"
    return one_line(exc)
