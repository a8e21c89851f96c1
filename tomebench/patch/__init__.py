"""Model surgery: token reduction inside a Vision Transformer of any supported family, and its undo.

`patch` swaps the model's class for a subclass whose forward runs the blocks with token reduction, and stores one
frozen `PatchInfo` on the model. Nothing else is touched: no parameter, no submodule, no block class. `unpatch`
restores the class and removes that one attribute, so the model is exactly what it was. Each forward passes sizes
and sources along as values; nothing is written to Python state inside forward, so the patched model is
re-entrant and the schedule is plain data.

`plan` decides a patch (every check happens there, once); `loop` is the one loop over blocks, the same for every
family; `attention` is a block's SDPA call and the reducer's view of it. Where a family keeps its q/k/v, norms,
LayerScale and head is its adapter's business (`tomebench.adapters`), looked up by the model's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from tomebench.adapters import adapter_for
from tomebench.errors import UsageError
from tomebench.patch.loop import TokenState, forward_tokens
from tomebench.patch.plan import (
    LayerPlan,
    PatchInfo,
    check_reducer_options,
    check_supported,
    default_prop_attn,
    install,
    is_patched,
    layout,
    patch_info,
    plan_patch,
    unpatch,
)
from tomebench.reducers import ReducerSpec
from tomebench.schedule import Schedule

__all__ = [
    "LayerPlan",
    "PatchInfo",
    "TokenState",
    "check_reducer_options",
    "check_supported",
    "default_prop_attn",
    "depth",
    "forward_with_state",
    "grid_size",
    "install",
    "is_patched",
    "layout",
    "logits_of",
    "num_input_tokens",
    "num_prefix_tokens",
    "patch",
    "patch_info",
    "plan_patch",
    "token_counts",
    "tokens_after_blocks",
    "unpatch",
]


def patch(
    model: nn.Module,
    reducer: str | ReducerSpec = "tome",
    r: int | Sequence[int] = 16,
    schedule: str | Schedule | Sequence[int] = "constant",
    prop_attn: bool | None = None,
    trace_source: bool = False,
    **options: Any,
) -> nn.Module:
    """Patch a ViT in place for token reduction and return it: a timm VisionTransformer, a torchvision
    VisionTransformer, or a transformers ViT/DeiT image classifier (anything else is refused).

    r: tokens removed per block (int) or an explicit per-block list; schedule: "constant", "decreasing" or
    an explicit per-block list (then r is ignored). prop_attn=None picks the default for the model and reducer.
    trace_source keeps a (B, N, N0) map from tokens to input patches (for visualisation). `options` go to
    the reducer, which is a registered name or a `ReducerSpec` (`tomebench.reducers.reducer_spec`, unregistered).
    Calling patch again replaces the previous settings.
    """
    return install(model, plan_patch(model, reducer, r, schedule, prop_attn, trace_source, **options))


def num_prefix_tokens(model: nn.Module) -> int:
    return adapter_for(model).num_prefix_tokens(model)


def num_input_tokens(model: nn.Module) -> int:
    """Tokens entering the first block at the model's configured image size (patches + prefix tokens)."""
    gh, gw = grid_size(model)
    return gh * gw + num_prefix_tokens(model)


def depth(model: nn.Module) -> int:
    """Blocks (transformer layers) of the model."""
    return len(adapter_for(model).blocks(model))


def grid_size(model: nn.Module) -> tuple[int, int]:
    """Patch grid (gh, gw) at the model's configured image size."""
    return tuple(adapter_for(model).grid_size(model))


def forward_with_state(model: nn.Module, x: Tensor) -> tuple[Tensor, TokenState]:
    """Run a patched model on images x (B, 3, H, W); return logits and the final TokenState."""
    if patch_info(model) is None:
        # Without a patch there is no token state to return (and a bare AttributeError would not say why).
        raise UsageError(
            f"forward_with_state needs a patched model, and this {type(model).__name__} is not patched: "
            "call tomebench.patch(model, reducer, r) first (r=0 keeps every token)"
        )
    feats, state = forward_tokens(model, x)
    return adapter_for(model).head(model, feats, state.size), state


def token_counts(model: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(effective r per block, tokens after each block) at the model's configured image size: each block's
    requested r clamped by its reducer to what the block's tokens allow, as the loop does."""
    info = patch_info(model)
    n, p = num_input_tokens(model), num_prefix_tokens(model)
    effective, tokens = [], []
    for layer in info.layers if info else ():
        r = max(0, min(layer.r, layer.reducer.most(n, p)))
        n -= r
        effective.append(r)
        tokens.append(n)
    if info is None:
        blocks = depth(model)
        return (0,) * blocks, (n,) * blocks
    return tuple(effective), tuple(tokens)


def logits_of(model: nn.Module, output: Any) -> Tensor:
    """The logits (B, classes) in what `model`'s forward (or a compiled form of it) returned: a tensor for timm and
    torchvision, an output object for transformers."""
    return adapter_for(model).logits(output)


def tokens_after_blocks(model: nn.Module, x: Tensor) -> Tensor:
    """The final normed tokens (B, N', C) for images x (B, 3, H, W), patched or not. Unpatched blocks keep every
    token, so then the tokens are the embedding's, run through all blocks in the family's own order."""
    if is_patched(model):
        return forward_tokens(model, x)[0]
    adapter = adapter_for(model)
    x = adapter.embed(model, x)
    for block in adapter.blocks(model):
        x = block(x)
    return adapter.final_norm(model, x)
