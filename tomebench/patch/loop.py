"""The one loop over blocks, the same for every family, and the patched class that runs it.

Per block: the attention (SDPA, proportional attention as an additive log(size) bias), then the reducer where it
acts (between attention and MLP by default; after the MLP for a reducer that declares so), the MLP. The loop, not
the reducer, clamps each block's r to what its tokens allow and skips a block with nothing to remove; attention
stays one fused SDPA call unless the reducer declares it needs the full attention matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tomebench.adapters import Adapter, PatchedForward, adapter_for
from tomebench.patch.attention import attention
from tomebench.patch.plan import LayerPlan, PatchInfo


@dataclass(frozen=True)
class TokenState:
    """Tokens after the last block. size: (B, N, 1) or None (nothing merged); source: (B, N, N0) or None.
    tokens: tokens after each block; eager: whether a block built the full attention matrix."""

    size: Tensor | None
    source: Tensor | None
    tokens: tuple[int, ...] = ()
    eager: bool = False


@functools.cache
def patched_class(original: type) -> type:
    """A subclass of the model's own class (so DeiT's distilled head etc. keep working) with the reducing forward:
    the family's forward mixin (its signature and return type), then the hooks into the loop below."""
    mixin = adapter_for(original).forward_mixin(original)
    return type(f"ToMe{original.__name__}", (mixin, _Patched, original), {})


def _new_patched(original: type) -> nn.Module:
    """An empty instance of the patched class of `original` (pickle fills in its state): the patched class is
    made at run time, so pickle cannot import it by name, but it can import this and the original class."""
    cls = patched_class(original)
    return cls.__new__(cls)


class _Patched(PatchedForward):
    """The hooks every family's forward mixin calls, and pickling of the patched model."""

    def __reduce_ex__(self, protocol: int):
        # pickle.dumps, torch.save(model), copy.deepcopy: rebuilt through _new_patched with the same state
        # (weights, and the PatchInfo that names the original class), so it loads patched in a fresh process.
        return _new_patched, (self._tome.original_class,), self.__dict__

    def _tome_tokens(self, images: Tensor, **embed_kwargs: Any) -> tuple[Tensor, TokenState]:
        return forward_tokens(self, images, **embed_kwargs)

    def _tome_logits(self, images: Tensor, **embed_kwargs: Any) -> Tensor:
        feats, state = forward_tokens(self, images, **embed_kwargs)
        return adapter_for(self).head(self, feats, state.size)


def forward_tokens(model: Any, x: Tensor, **embed_kwargs: Any) -> tuple[Tensor, TokenState]:
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
    blocks = adapter.blocks(model)
    built: list = []  # this forward's own record of full attention matrices built (re-entrant: a local)
    tokens = []
    for index, (block, layer) in enumerate(zip(blocks, info.layers)):
        x, size, source = _block_forward(adapter, block, layer, index, x, size, source, p, has_cls, len(blocks), built)
        tokens.append(x.shape[1])
    return adapter.final_norm(model, x), TokenState(size, source, tuple(tokens), bool(built))


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
    depth: int,
    built: list,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One pre-norm block with token reduction where the reducer acts. x: (B, N, C) -> (B, N - r, C)."""
    spec = layer.reducer
    acts = layer.acts or spec.acts
    r = min(layer.r, spec.most(x.shape[1], p))  # the clamp: never more than the block's tokens allow
    if r > 0 and acts == "before-attention":
        x, size, source = _fused_before_attention(
            adapter, block, layer, r, index, x, size, source, p, has_cls, depth, built
        )
        return adapter.mlp_residual(block, x), size, source
    eager = r > 0 and "attention" in spec.needs
    attn_out, parts = attention(
        adapter.attention(block),
        adapter.attn_input(block, x),
        size if layer.prop_attn else None,
        r > 0,
        x,
        adapter,
        eager,
        built,
    )
    x = adapter.attn_residual(block, x, attn_out)
    if parts is not None and acts == "attention-mlp":
        plan = spec.plan(parts.tokens(size, p, index, has_cls, x, depth), r, **layer.options)
        x, size, source = plan.apply(x, size, source)
    x = adapter.mlp_residual(block, x)
    if parts is not None and acts == "after-mlp":
        plan = spec.plan(parts.tokens(size, p, index, has_cls, x, depth), r, **layer.options)
        x, size, source = plan.apply(x, size, source)
    return x, size, source


def _fused_before_attention(
    adapter: Adapter,
    block: nn.Module,
    layer: LayerPlan,
    r: int,
    index: int,
    x: Tensor,
    size: Tensor | None,
    source: Tensor | None,
    p: int,
    has_cls: bool,
    depth: int,
    built: list,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The attention half of a block whose reducer fuses tokens before attention (MCTF's one-step-ahead): the
    block's attention probabilities are computed on the unfused tokens, the reducer plans on them and the block
    input, the tokens and the attention matrix are fused alike, and the fused attention is applied to the values
    of the fused tokens. x: (B, N, C) -> (B, N - r, C) after the attention residual."""
    attn = adapter.attention(block)
    _, parts = attention(
        attn,
        adapter.attn_input(block, x),
        size if layer.prop_attn else None,
        True,
        x,
        adapter,
        eager=True,
        built=built,
        probabilities_only=True,
    )
    plan = layer.reducer.plan(parts.tokens(size, p, index, has_cls, x, depth), r, **layer.options)
    fused, size, source = plan.apply(x, size, source)
    probs = plan.attend(parts.probs)  # (B, H, N', N')
    h = adapter.attn_input(block, fused)
    if probs is None:  # the plan fuses the tokens only (MCTF's "precise" one-step-ahead): attend over them afresh
        out, _ = attention(attn, h, size if layer.prop_attn else None, False, fused, adapter)
        return adapter.attn_residual(block, fused, out), size, source
    v = adapter.values(attn, h)  # (B, H, N', D)
    b, n, _ = h.shape
    out = (probs.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, -1)  # (B, N', H * D)
    return adapter.attn_residual(block, fused, adapter.attn_output(attn, out, h)), size, source
