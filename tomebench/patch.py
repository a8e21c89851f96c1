"""Model surgery: token reduction inside a Vision Transformer of any supported family, and its undo.

`patch` swaps the model's class for a subclass whose forward runs the blocks with token reduction between
attention and MLP, and stores one frozen `PatchInfo` on the model. Nothing else is touched: no parameter,
no submodule, no block class. `unpatch` restores the class and removes that one attribute, so the model is
exactly what it was. Each forward passes sizes and sources along as values; nothing is written to Python
state inside forward, so the patched model is re-entrant and the schedule is plain data.

This module is the one loop over blocks, the same for every family: all prefix tokens (cls, distillation,
registers) kept in front, attention through `F.scaled_dot_product_attention` with proportional attention as an
additive log(size) bias, the reducer between attention and MLP. Where a family keeps its q/k/v, norms,
LayerScale and head is its adapter's business (`tomebench.adapters`), looked up here by the model's class.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tomebench.adapters import ADAPTERS, Adapter, PatchedForward, adapter_for
from tomebench.errors import UsageError
from tomebench.reducer_options import Option, options_of
from tomebench.reducers import REDUCERS, LayerTokens, Reducer, do_nothing, merge_tokens
from tomebench.schedule import effective_schedule, layer_schedule, schedule_label


@dataclass(frozen=True)
class LayerPlan:
    """What one block does: remove r tokens with `reducer`, bias attention by log(size) if prop_attn."""

    r: int
    reducer: Reducer
    prop_attn: bool


@dataclass(frozen=True)
class PatchInfo:
    """Everything `patch` decided, kept on the model as `model._tome`. Read-only once made."""

    reducer: str
    schedule: str  # as written in the CSV: "constant", "decreasing" or "8,8,4,..."
    r: tuple[int, ...]  # requested r per block (before the per-layer clamp)
    prop_attn: bool
    trace_source: bool
    original_class: type
    layers: tuple[LayerPlan, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenState:
    """Tokens after the last block. size: (B, N, 1) or None (nothing merged); source: (B, N, N0) or None."""

    size: Tensor | None
    source: Tensor | None


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


def default_prop_attn(model: nn.Module) -> bool:
    """Proportional attention helps supervised models; the paper turns it off for off-the-shelf MAE models."""
    return adapter_for(model).default_prop_attn(model)


def is_patched(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_tome", None), PatchInfo)


def patch_info(model: nn.Module) -> PatchInfo | None:
    return getattr(model, "_tome", None) if is_patched(model) else None


def patch(
    model: nn.Module,
    reducer: str = "tome",
    r: int | Sequence[int] = 16,
    schedule: str | Sequence[int] = "constant",
    prop_attn: bool | None = None,
    trace_source: bool = False,
    **options: Any,
) -> nn.Module:
    """Patch a ViT in place for token reduction and return it: a timm VisionTransformer, a torchvision
    VisionTransformer, or a transformers ViT/DeiT image classifier (anything else is refused).

    r: tokens removed per block (int) or an explicit per-block list; schedule: "constant", "decreasing" or
    an explicit per-block list (then r is ignored). prop_attn=None picks the paper's default for the model.
    trace_source keeps a (B, N, N0) map from tokens to input patches (for visualisation). `options` go to
    the reducer. Calling patch again replaces the previous settings.
    """
    check_supported(model)
    depth = len(adapter_for(model).blocks(model))
    name = REDUCERS.canonical(reducer)
    check_reducer_options({name: options})
    r = _whole_r(r)
    if name == "none":
        rs, label = (0,) * depth, "constant"
    elif isinstance(schedule, str) and isinstance(r, int):
        rs, label = layer_schedule(r, depth, schedule), schedule
    else:
        rs = layer_schedule(r if isinstance(schedule, str) else schedule, depth)
        label = schedule_label(rs)
    fn = REDUCERS.get(name)
    bound = functools.partial(fn, **options) if options else fn
    use_prop = default_prop_attn(model) if prop_attn is None else bool(prop_attn)
    previous = patch_info(model)
    original = previous.original_class if previous else type(model)
    layers = tuple(LayerPlan(r=v, reducer=bound, prop_attn=use_prop) for v in rs)
    info = PatchInfo(
        reducer=name,
        schedule=label,
        r=rs,
        prop_attn=use_prop,
        trace_source=trace_source,
        original_class=original,
        layers=layers,
        options=dict(options),
    )
    model.__class__ = _patched_class(original)
    model._tome = info
    return model


def _whole_r(r: object) -> int | tuple[int, ...]:
    """r as an int, or a tuple of ints for a per-block list: Python, numpy and 0-d torch integers are accepted;
    text ("8" would otherwise read as the list ["8"]), fractions and bools are refused."""
    if isinstance(r, (torch.Tensor, np.ndarray)):
        if r.dtype.is_floating_point if isinstance(r, torch.Tensor) else not np.issubdtype(r.dtype, np.integer):
            raise UsageError(f"r must hold whole numbers, got a {r.dtype} {type(r).__name__}")
        r = r.item() if r.ndim == 0 else r.tolist()
    if isinstance(r, numbers.Integral) and not isinstance(r, bool):
        return int(r)
    if isinstance(r, Sequence) and not isinstance(r, (str, bytes)):
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in r):
            return tuple(int(v) for v in r)
    raise UsageError(f"r must be a whole number of tokens per block (8) or a per-block list of them ([8, 8, 4]), "
                     f"got {r!r} ({type(r).__name__})")


def check_reducer_options(options: dict[str, dict]) -> None:
    """Every option must be a keyword the reducer function takes (after the tokens and r), with a value its
    annotation allows (one of a Literal's choices, or an int/float/bool/str). Raises UsageError, worded for the
    command line's `--opt REDUCER.KEY=VALUE` and the same from `patch(model, **options)`."""
    for name, values in options.items():
        accepted = {option.name: option for option in _options(REDUCERS.get(name))}
        for key, value in values.items():
            if key not in accepted:
                known = ", ".join(accepted) or "none"
                raise UsageError(f"reducer {name} has no option {key!r} (its options: {known})")
            option = accepted[key]
            if option.choices is not None and value not in option.choices:
                raise UsageError(f"{name}.{key}={value}: choose one of {', '.join(map(str, option.choices))}")
            if option.kind is not None and not _fits(value, option.kind):
                raise UsageError(f"{name}.{key}={value!r}: expected a value of type {option.kind.__name__}")


@functools.cache
def _options(fn) -> tuple[Option, ...]:
    """A reducer's options, cached: `patch` checks options on every call, and a sweep patches once per
    configuration per batch."""
    return tuple(options_of(fn))


def _fits(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def unpatch(model: nn.Module) -> nn.Module:
    """Undo `patch`: the model's class and attributes are exactly as before. A no-op on unpatched models."""
    info = patch_info(model)
    if info is not None:
        model.__class__ = info.original_class
        del model._tome
    return model


def forward_with_state(model: nn.Module, x: Tensor) -> tuple[Tensor, TokenState]:
    """Run a patched model on images x (B, 3, H, W); return logits and the final TokenState."""
    if patch_info(model) is None:
        # Without a patch there is no token state to return (and a bare AttributeError would not say why).
        raise UsageError(f"forward_with_state needs a patched model, and this {type(model).__name__} is not patched: "
                         "call tomebench.patch(model, reducer, r) first (r=0 keeps every token)")
    feats, state = _forward_tokens(model, x)
    return adapter_for(model).head(model, feats, state.size), state


def token_counts(model: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(effective r per block, tokens after each block) at the model's configured image size."""
    info = patch_info(model)
    rs = tuple(layer.r for layer in info.layers) if info else (0,) * depth(model)
    return effective_schedule(rs, num_input_tokens(model), num_prefix_tokens(model))


def logits_of(model: nn.Module, output: Any) -> Tensor:
    """The logits (B, classes) in what `model`'s forward (or a compiled form of it) returned: a tensor for timm and
    torchvision, an output object for transformers."""
    return adapter_for(model).logits(output)


def tokens_after_blocks(model: nn.Module, x: Tensor) -> Tensor:
    """The final normed tokens (B, N', C) for images x (B, 3, H, W), patched or not. Unpatched blocks keep every
    token, so then the tokens are the embedding's, run through all blocks in the family's own order."""
    if is_patched(model):
        return _forward_tokens(model, x)[0]
    adapter = adapter_for(model)
    x = adapter.embed(model, x)
    for block in adapter.blocks(model):
        x = block(x)
    return adapter.final_norm(model, x)


def check_supported(model: nn.Module) -> None:
    """A UsageError unless the model belongs to a registered family with a structure its adapter can run."""
    adapter_for(model).check(model)


@functools.cache
def _patched_class(original: type) -> type:
    """A subclass of the model's own class (so DeiT's distilled head etc. keep working) with the reducing forward:
    the family's forward mixin (its signature and return type), then the hooks into the loop below."""
    mixin = adapter_for(original).forward_mixin(original)
    return type(f"ToMe{original.__name__}", (mixin, _Patched, original), {})


def _new_patched(original: type) -> nn.Module:
    """An empty instance of the patched class of `original` (pickle fills in its state): the patched class is
    made at run time, so pickle cannot import it by name, but it can import this and the original class."""
    cls = _patched_class(original)
    return cls.__new__(cls)


class _Patched(PatchedForward):
    """The hooks every family's forward mixin calls, and pickling of the patched model."""

    def __reduce_ex__(self, protocol: int):
        # pickle.dumps, torch.save(model), copy.deepcopy: rebuilt through _new_patched with the same state
        # (weights, and the PatchInfo that names the original class), so it loads patched in a fresh process.
        return _new_patched, (self._tome.original_class,), self.__dict__

    def _tome_tokens(self, images: Tensor, **embed_kwargs: Any) -> tuple[Tensor, TokenState]:
        return _forward_tokens(self, images, **embed_kwargs)

    def _tome_logits(self, images: Tensor, **embed_kwargs: Any) -> Tensor:
        feats, state = _forward_tokens(self, images, **embed_kwargs)
        return adapter_for(self).head(self, feats, state.size)


def _forward_tokens(model: Any, x: Tensor, **embed_kwargs: Any) -> tuple[Tensor, TokenState]:
    """Images (B, 3, H, W) -> final normed tokens (B, N', C) and their sizes/sources."""
    info: PatchInfo = model._tome
    adapter = adapter_for(model)
    x = adapter.embed(model, x, **embed_kwargs)  # (B, N, C), prefix tokens first
    p = adapter.num_prefix_tokens(model)
    size: Tensor | None = None
    source: Tensor | None = None
    if info.trace_source:
        b, n, _ = x.shape
        source = torch.eye(n, device=x.device, dtype=x.dtype).expand(b, n, n)  # (B, N, N0)
    has_cls = adapter.has_cls(model)
    for index, (block, layer) in enumerate(zip(adapter.blocks(model), info.layers)):
        x, size, source = _block_forward(adapter, block, layer, index, x, size, source, p, has_cls)
    return adapter.final_norm(model, x), TokenState(size, source)


def _block_forward(
    adapter: Adapter,
    block: nn.Module,
    layer: LayerPlan,
    index: int,
    x: Tensor,
    size: Tensor | None,
    source: Tensor | None,
    p: int,
    has_cls: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One pre-norm block with token reduction between attention and MLP. x: (B, N, C) -> (B, N - r, C)."""
    attn = adapter.attention(block)
    h = adapter.attn_input(block, x)
    attn_out, tokens = _attention(attn, h, size if layer.prop_attn else None, layer.r > 0, x, adapter)
    x = adapter.attn_residual(block, x, attn_out)
    if tokens is not None:
        merge = layer.reducer(tokens.with_context(size, p, index, has_cls), layer.r)
        if size is None and (merge is do_nothing or getattr(merge, "prunes_only", False)):
            # Every token still stands for one patch: leaving size None keeps the following blocks' attention
            # free of a bias, so SDPA can pick its fused kernels.
            x, source = merge(x), None if source is None else merge(source, "amax")
        else:
            x, size, source = merge_tokens(merge, x, size, source)
    x = adapter.mlp_residual(block, x)
    return x, size, source


@dataclass(frozen=True)
class _AttentionParts:
    """What one attention call leaves for the reducer: q, k, v (B, H, N, D) (q, k after q/k norm), the block's
    input tokens x (B, N, C) and the log-size bias."""

    q: Tensor
    k: Tensor
    v: Tensor
    x: Tensor
    bias: Tensor | None
    scale: float

    def with_context(self, size: Tensor | None, p: int, layer: int, has_cls: bool) -> LayerTokens:
        return LayerTokens(
            metric=self.k.mean(dim=1),  # (B, N, D): keys averaged over heads, the paper's metric
            size=size,
            num_prefix_tokens=p,
            layer=layer,
            cls_attention=functools.partial(self.received, cls_only=True) if has_cls else None,
            mean_attention=functools.partial(self.received, cls_only=False),
            features=self.features,
        )

    def features(self, kind: str, heads: str) -> Tensor:
        """(B, N, C') similarity features: "x", or "k"/"q"/"v" averaged over heads ("mean") or concatenated."""
        if kind == "x":
            return self.x
        per_head = {"k": self.k, "q": self.q, "v": self.v}[kind]  # (B, H, N, D)
        return per_head.mean(dim=1) if heads == "mean" else per_head.transpose(1, 2).flatten(2)

    def received(self, cls_only: bool) -> Tensor:
        """(B, N): attention each token receives, from the cls query only or averaged over all queries."""
        q = self.q[:, :, :1] if cls_only else self.q  # (B, H, 1 or N, D)
        logits = (q * self.scale) @ self.k.transpose(-2, -1)  # (B, H, 1 or N, N)
        if self.bias is not None:
            logits = logits + self.bias
        return logits.float().softmax(dim=-1).mean(dim=(1, 2))


def _attention(
    attn: nn.Module,
    x: Tensor,
    size: Tensor | None,
    reducing: bool,
    block_input: Tensor | None = None,
    adapter: Adapter | None = None,
) -> tuple[Tensor, _AttentionParts | None]:
    """A block's attention through SDPA, with log(size) added to every key's logit when size is given.

    attn: the block's attention module (its family's adapter says where q/k/v are; timm's by default); x: (B, N, C)
    normed tokens; size: (B, N, 1) or None; block_input: the block's tokens before the norm. Returns the attention
    output (B, N, C) and, when the block reduces, the parts a reducer may use (q, k from the same projection; the
    metric is derived from k, no second matmul).
    """
    adapter = adapter or ADAPTERS.get("timm")
    b, n, _ = x.shape
    q, k, v = adapter.qkv(attn, x)  # (B, H, N, D) each
    scale = adapter.attn_scale(attn)
    bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=adapter.attn_dropout(attn), scale=scale
    )  # (B, H, N, D)
    out = adapter.attn_output(attn, out.transpose(1, 2).reshape(b, n, -1), x)  # (B, N, C)
    parts = _AttentionParts(q, k, v, x if block_input is None else block_input, bias, scale) if reducing else None
    return out, parts
