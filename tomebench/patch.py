"""Model surgery: token reduction inside a timm VisionTransformer, and its undo.

`patch` swaps the model's class for a subclass whose forward runs the blocks with token reduction between
attention and MLP, and stores one frozen `PatchInfo` on the model. Nothing else is touched: no parameter,
no submodule, no block class. `unpatch` restores the class and removes that one attribute, so the model is
exactly what it was. Each forward passes sizes and sources along as values; nothing is written to Python
state inside forward, so the patched model is re-entrant and the schedule is plain data.

The block and attention code follows timm >= 1.0 `Block` / `Attention`: LayerScale (ls1/ls2), drop-path,
q/k norm, the attention output norm and gate where present, all prefix tokens (cls, distillation,
registers) kept in front, attention through `F.scaled_dot_product_attention` with proportional attention as
an additive log(size) bias.
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
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

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


def num_prefix_tokens(model: VisionTransformer) -> int:
    return int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))


def num_input_tokens(model: VisionTransformer) -> int:
    """Tokens entering the first block at the model's configured image size (patches + prefix tokens)."""
    return int(model.patch_embed.num_patches) + num_prefix_tokens(model)


def default_prop_attn(model: nn.Module) -> bool:
    """Proportional attention helps supervised models; the paper turns it off for off-the-shelf MAE models."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = f"{cfg.get('architecture', '')}.{cfg.get('tag', '')}".lower()
    return "mae" not in names


def is_patched(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_tome", None), PatchInfo)


def patch_info(model: nn.Module) -> PatchInfo | None:
    return getattr(model, "_tome", None) if is_patched(model) else None


def patch(
    model: VisionTransformer,
    reducer: str = "tome",
    r: int | Sequence[int] = 16,
    schedule: str | Sequence[int] = "constant",
    prop_attn: bool | None = None,
    trace_source: bool = False,
    **options: Any,
) -> VisionTransformer:
    """Patch a timm VisionTransformer in place for token reduction and return it.

    r: tokens removed per block (int) or an explicit per-block list; schedule: "constant", "decreasing" or
    an explicit per-block list (then r is ignored). prop_attn=None picks the paper's default for the model.
    trace_source keeps a (B, N, N0) map from tokens to input patches (for visualisation). `options` go to
    the reducer. Calling patch again replaces the previous settings.
    """
    check_supported(model)
    depth = len(model.blocks)
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


def forward_with_state(model: VisionTransformer, x: Tensor) -> tuple[Tensor, TokenState]:
    """Run a patched model on images x (B, 3, H, W); return logits and the final TokenState."""
    if patch_info(model) is None:
        # Without a patch there is no token state to return (and a bare AttributeError would not say why).
        raise UsageError(f"forward_with_state needs a patched model, and this {type(model).__name__} is not patched: "
                         "call tomebench.patch(model, reducer, r) first (r=0 keeps every token)")
    feats, state = _forward_tokens(model, x)
    return _forward_head(model, feats, state.size), state


def token_counts(model: VisionTransformer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(effective r per block, tokens after each block) at the model's configured image size."""
    info = patch_info(model)
    rs = tuple(layer.r for layer in info.layers) if info else (0,) * len(model.blocks)
    return effective_schedule(rs, num_input_tokens(model), num_prefix_tokens(model))


def check_supported(model: nn.Module) -> None:
    if not isinstance(model, VisionTransformer):
        raise UsageError(
            f"{type(model).__name__} is not a timm VisionTransformer; tomebench patches ViT/DeiT-style models."
        )
    for i, block in enumerate(model.blocks):
        if not isinstance(block, Block) or not isinstance(block.attn, Attention):
            raise UsageError(
                f"block {i} is a {type(block).__name__} with {type(getattr(block, 'attn', None)).__name__}; "
                "tomebench supports timm's standard pre-norm Block with Attention."
            )


@functools.cache
def _patched_class(original: type) -> type:
    """A subclass of the model's own class (so DeiT's distilled head etc. keep working) with ToMe forward."""
    return type(f"ToMe{original.__name__}", (_ToMeForward, original), {})


def _new_patched(original: type) -> nn.Module:
    """An empty instance of the patched class of `original` (pickle fills in its state): the patched class is
    made at run time, so pickle cannot import it by name, but it can import this and the original class."""
    cls = _patched_class(original)
    return cls.__new__(cls)


class _ToMeForward:
    """Forward methods placed in front of the original VisionTransformer class by `patch`."""

    def __reduce_ex__(self, protocol: int):
        # pickle.dumps, torch.save(model), copy.deepcopy: rebuilt through _new_patched with the same state
        # (weights, and the PatchInfo that names the original class), so it loads patched in a fresh process.
        return _new_patched, (self._tome.original_class,), self.__dict__

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        return _forward_tokens(self, x)[0]

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        feats, state = _forward_tokens(self, x)
        return _forward_head(self, feats, state.size)


def _refuse_masks(attn_mask: Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise NotImplementedError("token reduction changes the sequence, so attention masks cannot be applied")


def _forward_tokens(model: Any, x: Tensor) -> tuple[Tensor, TokenState]:
    """Images (B, 3, H, W) -> final normed tokens (B, N', C) and their sizes/sources."""
    info: PatchInfo = model._tome
    x = model.patch_embed(x)
    x = model._pos_embed(x)  # (B, N, C), prefix tokens first
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    p = num_prefix_tokens(model)
    size: Tensor | None = None
    source: Tensor | None = None
    if info.trace_source:
        b, n, _ = x.shape
        source = torch.eye(n, device=x.device, dtype=x.dtype).expand(b, n, n)  # (B, N, N0)
    has_cls = getattr(model, "cls_token", None) is not None  # timm puts it first among the prefix tokens
    for index, (block, layer) in enumerate(zip(model.blocks, info.layers)):
        x, size, source = _block_forward(block, layer, index, x, size, source, p, has_cls)
    return model.norm(x), TokenState(size, source)


def _block_forward(
    block: Block,
    layer: LayerPlan,
    index: int,
    x: Tensor,
    size: Tensor | None,
    source: Tensor | None,
    p: int,
    has_cls: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One timm Block with token reduction between attention and MLP. x: (B, N, C) -> (B, N - r, C)."""
    attn_out, tokens = _attention(block.attn, block.norm1(x), size if layer.prop_attn else None, layer.r > 0, x)
    x = x + block.drop_path1(block.ls1(attn_out))
    if tokens is not None:
        merge = layer.reducer(tokens.with_context(size, p, index, has_cls), layer.r)
        if size is None and (merge is do_nothing or getattr(merge, "prunes_only", False)):
            # Every token still stands for one patch: leaving size None keeps the following blocks' attention
            # free of a bias, so SDPA can pick its fused kernels.
            x, source = merge(x), None if source is None else merge(source, "amax")
        else:
            x, size, source = merge_tokens(merge, x, size, source)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
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
    attn: Attention, x: Tensor, size: Tensor | None, reducing: bool, block_input: Tensor | None = None
) -> tuple[Tensor, _AttentionParts | None]:
    """timm Attention through SDPA, with log(size) added to every key's logit when size is given.

    x: (B, N, C) normed tokens; size: (B, N, 1) or None; block_input: the block's tokens before the norm. Returns the attention output (B, N, C) and, when the block reduces,
    the parts a reducer may use (q, k from the same qkv projection; the metric is derived from k, no second matmul).
    """
    b, n, _ = x.shape
    gate = getattr(attn, "gate", None)
    gate_values = gate(x).sigmoid() if gate is not None else None
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)  # (B, 1, 1, N)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (B, H, N, D)
    out = out.transpose(1, 2).reshape(b, n, attn.num_heads * attn.head_dim)
    norm = getattr(attn, "norm", None)  # timm's optional attention-output norm (scale_norm); Identity when off
    if norm is not None:
        out = norm(out)
    if gate_values is not None:
        out = out * gate_values
    out = attn.proj_drop(attn.proj(out))
    scale = getattr(attn, "scale", attn.head_dim**-0.5)
    parts = _AttentionParts(q, k, v, x if block_input is None else block_input, bias, scale) if reducing else None
    return out, parts


def _forward_head(model: Any, x: Tensor, size: Tensor | None) -> Tensor:
    """The classifier head; average pooling weighs each token by its size so merged tokens count fully."""
    pooling = getattr(model, "global_pool", "token")
    if size is None or getattr(model, "attn_pool", None) is not None or pooling not in ("avg", "avgmax"):
        return model.forward_head(x)
    if not getattr(model, "pool_include_prefix", False):
        p = num_prefix_tokens(model)
        x, size = x[:, p:], size[:, p:]
    pooled = (x * size).sum(dim=1) / size.sum(dim=1)  # (B, C)
    if pooling == "avgmax":
        pooled = 0.5 * (x.amax(dim=1) + pooled)
    return model.head(model.head_drop(model.fc_norm(pooled)))
