"""A block's attention for the token-reducing loop: one SDPA call with proportional attention as an additive
log(size) bias, and what the reducer may read of it (LayerTokens), computed only when asked for."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from tomebench.adapters import Adapter
from tomebench.reducers import LayerTokens


@dataclass(frozen=True)
class AttentionParts:
    """What one attention call leaves for the reducer: q, k, v (B, H, N, D) (q, k after q/k norm), the block's
    input tokens x (B, N, C), the log-size bias and the attention probabilities when they were built (eager).
    `built` records, per forward, whether a reducer asked for the full N x N attention (the row's attn_impl)."""

    q: Tensor
    k: Tensor
    v: Tensor | None  # None before a fusion ahead of attention: the values are then the fused tokens'
    x: Tensor
    bias: Tensor | None
    scale: float
    probs: Tensor | None = None
    built: list = field(default_factory=list)

    def tokens(self, size: Tensor | None, p: int, layer: int, has_cls: bool, x: Tensor, depth: int) -> LayerTokens:
        """The reducer's view of this block; x is what its plan will be applied to."""
        return LayerTokens(
            metric=self.k.mean(dim=1),  # (B, N, D): keys averaged over heads, the paper's metric
            size=size,
            num_prefix_tokens=p,
            layer=layer,
            cls_attention=functools.partial(self.received, cls_only=True) if has_cls else None,
            mean_attention=functools.partial(self.received, cls_only=False),
            features=self.features,
            attention=self.attention,
            x=x,
            depth=depth,
        )

    def features(self, kind: str, heads: str) -> Tensor:
        """(B, N, C') similarity features: "x", or "k"/"q"/"v" averaged over heads ("mean") or concatenated."""
        if kind == "x":
            return self.x
        per_head = {"k": self.k, "q": self.q, "v": self.v}[kind]  # (B, H, N, D)
        return per_head.mean(dim=1) if heads == "mean" else per_head.transpose(1, 2).flatten(2)

    def attention(self) -> Tensor:
        """(B, H, N, N) attention probabilities of this block (proportional attention applied)."""
        self.built.append(True)
        if self.probs is not None:
            return self.probs
        return _probabilities(self.q, self.k, self.bias, self.scale)

    def received(self, cls_only: bool) -> Tensor:
        """(B, N): attention each token receives, from the cls query only or averaged over all queries."""
        if not cls_only:
            self.built.append(True)
        q = self.q[:, :, :1] if cls_only else self.q  # (B, H, 1 or N, D)
        return _probabilities(q, self.k, self.bias, self.scale).mean(dim=(1, 2))


def _probabilities(q: Tensor, k: Tensor, bias: Tensor | None, scale: float) -> Tensor:
    logits = (q * scale) @ k.transpose(-2, -1)  # (B, H, Nq, N)
    if bias is not None:
        logits = logits + bias
    return logits.float().softmax(dim=-1)


def attention(
    attn: nn.Module,
    x: Tensor,
    size: Tensor | None,
    reducing: bool,
    block_input: Tensor | None = None,
    adapter: Adapter | None = None,
    eager: bool = False,
    built: list | None = None,
    probabilities_only: bool = False,
) -> tuple[Tensor | None, AttentionParts | None]:
    """A block's attention, with log(size) added to every key's logit when size is given.

    attn: the block's attention module (its family's adapter says where q/k/v are; timm's by default); x: (B, N, C)
    normed tokens; size: (B, N, 1) or None; block_input: the block's tokens before the norm. eager: build the
    attention matrix (a reducer needs it) and multiply it with v, instead of one SDPA call; probabilities_only:
    stop at the matrix (the output is None). Returns the attention output (B, N, C) and, when the block reduces,
    the parts a reducer may use (q, k from the same projection; the metric is derived from k, no second matmul).
    """
    if adapter is None:
        from tomebench.adapters import ADAPTERS

        adapter = ADAPTERS.get("timm")
    b, n, _ = x.shape
    if probabilities_only:  # the values will be those of other tokens (fused before attention): q, k only
        (q, k), v = adapter.queries_keys(attn, x), None  # (B, H, N, D) each
    else:
        q, k, v = adapter.qkv(attn, x)  # (B, H, N, D) each
    scale = adapter.attn_scale(attn)
    bias = None if size is None else size.log()[:, None, None, :, 0].to(q.dtype)  # (B, 1, 1, N)
    probs = None
    if eager:
        probs = _probabilities(q, k, bias, scale)  # (B, H, N, N)
        out = None if probabilities_only else F.dropout(probs, adapter.attn_dropout(attn)).to(v.dtype) @ v
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=adapter.attn_dropout(attn), scale=scale
        )  # (B, H, N, D)
    if out is not None:
        out = adapter.attn_output(attn, out.transpose(1, 2).reshape(b, n, -1), x)  # (B, N, C)
    if not reducing:
        return out, None
    parts = AttentionParts(
        q, k, v, x if block_input is None else block_input, bias, scale, probs, [] if built is None else built
    )
    if eager:
        parts.built.append(True)
    return out, parts
