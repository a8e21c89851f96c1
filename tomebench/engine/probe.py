"""One untimed run of a configuration before it is timed: its cost on one image (GFLOPs, the tokens each block
left, which attention ran) and one full batch, halved until it fits in memory. A configuration that fails here
becomes a row with its error; the rest of the sweep goes on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tomebench.measure.cost import count_gflops, token_trace
from tomebench.measure.device import synchronize
from tomebench.measure.memory import failure, is_out_of_memory, largest_that_fits
from tomebench.measure.timing import timed_repeat
from tomebench.patch import patch_info, token_counts


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
    tokens_per_layer: tuple[int, ...] = ()
    attn_impl: str | None = None


def probe(
    model,
    prepare,
    batch,
    autocast,
    device,
    requested: int | None = None,
    compiled_prepare: Callable[[], torch.nn.Module] | None = None,
) -> Check:
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
        tokens, attn_impl = token_trace(model, one)
        info = patch_info(model)
        clamp = None if info is None else _clamp_note(info.r, token_counts(model)[0], info.reducer)
    except Exception as exc:  # noqa: BLE001 - any failure of one configuration becomes its row's error
        return Check(error=failure(exc, device), batch_size=requested)
    if compiled_prepare is not None:
        module = compiled_prepare()
    try:
        size, compile_s = _full_batch(module, batch, autocast, device, compiled_prepare is not None)
    except Exception as exc:  # noqa: BLE001
        error = failure(exc, device)
        if compiled_prepare is not None and not is_out_of_memory(exc):
            error = f"compile failed: {error}"
        return Check(error=error, batch_size=requested)
    backoff = None if size == requested else f"out of memory at batch {requested}; measured at batch {size}"
    return Check(
        gflops=gflops,
        tokens_final=tokens[-1] if tokens else None,
        clamp_note=clamp,
        batch_size=size,
        backoff_note=backoff,
        compile_s=compile_s,
        tokens_per_layer=tokens,
        attn_impl=attn_impl,
    )


def _full_batch(module, batch, autocast, device, compiling: bool) -> tuple[int, float | None]:
    """(the batch that fits, halving after each out-of-memory error; the seconds its first call spent compiling,
    when `compiling`: that call less the next one)."""

    def forward(size: int) -> float:
        with torch.inference_mode(), autocast():
            synchronize(device)
            return timed_repeat(lambda: module(batch[:size]), 1, device)

    first, size = largest_that_fits(forward, len(batch), device)
    return size, max(0.0, first - forward(size)) if compiling else None


def _clamp_note(requested: tuple[int, ...], effective: tuple[int, ...], reducer: str = "tome") -> str | None:
    """Name the blocks where r was more than the tokens allow, and why: (N - prefix) // 2 as the paper clamps, or
    the reducer's own limit (the first sentence of its `most`: ATC goes down to one cluster, MCTF keeps 10)."""
    from tomebench.reducers import REDUCERS
    from tomebench.reducers.base import max_r

    clamped = [f"{i + 1}:{a}->{b}" for i, (a, b) in enumerate(zip(requested, effective)) if a != b]
    if not clamped:
        return None
    most = REDUCERS.get(reducer).most
    why = "a block merges at most (N - prefix) // 2 tokens"
    if most is not max_r and most.__doc__:
        why = f"{reducer}'s most per block: {most.__doc__.split('. ')[0].strip().rstrip('.')}"
    return f"r clamped at block(s) {' '.join(clamped)} ({why})"
