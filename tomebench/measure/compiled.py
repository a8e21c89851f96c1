"""Compiled configurations: each configuration of a sweep gets its own `torch.compile`d module.

The eager sweep switches one model between configurations by patching it in place. A compiled module cannot
follow that: dynamo would guard on the model's class and `PatchInfo` and recompile at every switch, and past
its recompile limit silently run eager. So each configuration (and batch size) gets a shallow copy of the
model that shares every parameter and buffer with the original (no weights are copied), is patched once, and
is compiled once with `dynamic=False`: r is fixed per configuration, so every shape in the forward is static
and inductor specialises the gathers and the token counts of every block.

All the copies run the same forward code object, and dynamo counts recompiles per code object; `limits`
raises that count for the duration of a sweep (and restores it), so a sweep of many configurations never
falls back to eager behind the user's back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

MODES = ("default", "max-autotune", "reduce-overhead")


def check_mode(mode: str | None) -> str | None:
    """The mode as given (None: eager), or a UsageError naming the choices."""
    from tomebench.errors import UsageError

    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown --compile mode {mode!r}: use {', '.join(MODES)}")
    return mode


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of model's module tree whose parameters and buffers are the original's tensors (no weight moves).

    Patching the copy (which swaps its class and sets `_tome`) leaves the original untouched."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def compile_module(module: nn.Module, mode: str) -> nn.Module:
    """torch.compile with static shapes (inductor). A failure shows at the first call, not here."""
    compiled = torch.compile(module, mode=mode, dynamic=False)
    return _NewStepPerCall(compiled) if mode == "reduce-overhead" else compiled


class _NewStepPerCall(nn.Module):
    """reduce-overhead replays CUDA graphs whose outputs live in a pool the next replay overwrites. The sweep
    interleaves many compiled modules and consumes each output before the next call (timing drops it, the
    accuracy pass reduces it to counts at once), so every call starts a new step; without the mark, cudagraph
    trees would guess step boundaries and could refuse an interleaved call or re-record."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return self.module(x)


class StaticBatch(nn.Module):
    """Calls `module` only with batches of exactly `size` images: a shorter batch (the last one of a data pass,
    or one with unreadable images dropped) is padded with zeros and its logits cut back, so a compiled module
    never sees a new shape (which would recompile it) during an accuracy pass. Images are independent in a ViT
    and the real ones keep their positions at the front, so padding changes no logit of theirs."""

    def __init__(self, module: nn.Module, size: int):
        super().__init__()
        self.module = module
        self.size = size

    def forward(self, x: Tensor) -> Tensor:  # x: (b <= size, 3, H, W) -> (b, classes)
        b = len(x)
        if b == self.size:
            return self.module(x)
        if b > self.size:
            return torch.cat([self(x[i : i + self.size]) for i in range(0, b, self.size)])
        pad = x.new_zeros((self.size - b, *x.shape[1:]))
        return self.module(torch.cat([x, pad]))[:b]


@contextmanager
def limits(modules: int) -> Iterator[None]:
    """Let dynamo keep `modules` compiled entries of one forward (one per configuration and shape), restored on
    exit. Without it, the ninth configuration of a sweep would run eager with only a log warning."""
    config = torch._dynamo.config
    names = [
        n
        for n in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit")
        if hasattr(config, n)
    ]
    before = {n: getattr(config, n) for n in names}
    try:
        for name in names:
            setattr(config, name, max(before[name], 4 * modules))
        yield
    finally:
        for name, value in before.items():
            setattr(config, name, value)
