"""DiffRate (Chen et al., ICCV 2023), off the shelf: the per-block compression rates the authors searched and
released, applied as their inference code applies them (OpenGVLab/DiffRate, `DiffRate/patch/deit.py`
`DiffRateBlock.forward`, eval branch; `DiffRate/merge.py` `get_merge_func`).

In every block, between the attention residual and the MLP: the patch tokens are sorted by the attention the cls
token pays them (mean over heads, proportional attention applied); the tail of that order is pruned down to the
block's prune count; of what is left, the tokens past the merge count each merge into their most similar kept
token (cosine similarity of the tokens themselves, after the attention residual; never into the cls token). The
merged features are a plain mean; the merged tokens' sizes are scaled by that similarity before they are added
(the authors' "proportional attention considering similarity"). Kept tokens leave in the sorted order.

The schedules are `compression_rate.json` of the authors' repository, bundled as package data
(`tomebench/reducers/data/diffrate_schedules.json`, its source inside), keyed by the authors' model names and
GMACs targets; timm's architecture names map onto those keys.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Annotated, Literal

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.options import Applies, Range
from tomebench.reducers.plans import Plan, PruneMerge

SOURCE = (
    "OpenGVLab/DiffRate@91ae3e3 DiffRate/patch/deit.py DiffRateBlock.forward, DiffRate/merge.py, compression_rate.json"
)

# The authors' model keys (compression_rate.json; main.py's model_name_dict) for the timm architectures they ran:
# their timm 0.4.5 called DeiT `vit_deit_*`; today's timm calls it `deit_*`. The MAE checkpoints are fine-tuned
# facebookresearch/mae weights, which timm loads into the plain `vit_*_224` architectures shared with supervised
# ViTs, so those are never guessed: name the key (model_key=ViT-B-MAE).
ARCHITECTURES = {
    "deit_tiny_patch16_224": "ViT-T-DeiT",
    "deit_small_patch16_224": "ViT-S-DeiT",
    "deit_base_patch16_224": "ViT-B-DeiT",
    "vit_deit_tiny_patch16_224": "ViT-T-DeiT",
    "vit_deit_small_patch16_224": "ViT-S-DeiT",
    "vit_deit_base_patch16_224": "ViT-B-DeiT",
    "vit_base_patch16_mae": "ViT-B-MAE",
    "vit_large_patch16_mae": "ViT-L-MAE",
    "vit_huge_patch14_mae": "ViT-H-MAE",
}
ModelKey = Literal["auto", "ViT-T-DeiT", "ViT-S-DeiT", "ViT-B-DeiT", "ViT-B-MAE", "ViT-L-MAE", "ViT-H-MAE"]


@functools.cache
def released() -> dict[str, dict[str, dict[str, tuple[int, ...]]]]:
    """{model key: {target: {"prune_kept": counts, "merge_kept": counts}}}: the authors' kept token counts per
    block, cls token included, for a 1-prefix-token model."""
    text = resources.files("tomebench.reducers").joinpath("data/diffrate_schedules.json").read_text()
    models = json.loads(text)["models"]
    return {m: {t: {k: tuple(v) for k, v in s.items()} for t, s in targets.items()} for m, targets in models.items()}


def target_key(target: float) -> str:
    """The file's key of a GMACs target: 2.9 -> "2.9", 10 -> "10.0" (the authors look up str(float))."""
    return str(float(target))


def available() -> str:
    """Every released (model, targets), one line."""
    return "; ".join(f"{m}: {', '.join(targets)}" for m, targets in released().items())


def model_key(options: dict, layout: Layout) -> str | None:
    if options["model_key"] != "auto":
        return str(options["model_key"])
    return ARCHITECTURES.get(layout.architecture)


def _counts(text: str) -> tuple[int, ...]:
    """ "197,196,190", "197:196:190" or the authors' "[197, 196, 190]" -> (197, 196, 190)."""
    return tuple(int(v) for v in re.split(r"[\s,:\[\]]+", text) if v)


def kept_counts(options: dict, layout: Layout) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prune_kept, merge_kept) per block, as the file writes them (cls included), from the options: an explicit
    schedule, or the released one of the model and target (`refuses` has checked that it exists)."""
    if options["prune_kept"] or options["merge_kept"]:
        return _counts(options["prune_kept"]), _counts(options["merge_kept"])
    schedule = released()[model_key(options, layout)][target_key(options["target"])]
    return schedule["prune_kept"], schedule["merge_kept"]


def refuses(options: dict, layout: Layout) -> str | None:
    """Why these options cannot run on this model (one line), or None."""
    if not layout.has_cls:
        return "diffrate ranks tokens by the cls token's attention; this model has no cls token"
    if options["prune_kept"] or options["merge_kept"]:
        try:
            prune, merge = kept_counts(options, layout)
        except ValueError:
            return "diffrate prune_kept and merge_kept are whole numbers separated by , or :, one per block"
        if len(prune) != layout.depth or len(merge) != layout.depth:
            return f"diffrate prune_kept and merge_kept need {layout.depth} counts each, one per block"
        if min(prune + merge) < 1:
            return "diffrate kept counts include the cls token: each is at least 1"
        return None
    key = model_key(options, layout)
    if key is None:
        shown = layout.architecture or "this model"
        return f"diffrate has no released schedule for {shown}; pass model_key= one of {available()}"
    targets = released()[key]
    if target_key(options["target"]) not in targets:
        return f"diffrate released no {key} schedule at target={options['target']:g}; its targets: {', '.join(targets)}"
    prune = targets[target_key(options["target"])]["prune_kept"]
    if len(prune) != layout.depth or prune[0] + layout.num_prefix_tokens - 1 != layout.num_tokens:
        return (
            f"diffrate's {key} schedule is for {len(prune)} blocks of {prune[0]} tokens (cls included); this model "
            f"has {layout.depth} blocks of {layout.num_tokens - layout.num_prefix_tokens + 1}"
        )
    return None


def split(options: dict, layout: Layout) -> tuple[tuple[int, int], ...]:
    """(tokens pruned, tokens removed in all) of every block, as the authors' eval branch spends them: prune to
    min(N, prune_kept), then merge down to merge_kept if that is fewer (the FLOP count's `ste_min(N, prune,
    merge)`). A model with p prefix tokens keeps the p - 1 extra ones besides every count (they are protected)."""
    prune_kept, merge_kept = kept_counts(options, layout)
    extra = layout.num_prefix_tokens - 1
    n = layout.num_tokens
    out = []
    for p_kept, m_kept in zip(prune_kept, merge_kept):
        after_prune = min(n, p_kept + extra)
        after_merge = min(after_prune, m_kept + extra)
        out.append((n - after_prune, n - after_merge))
        n = after_merge
    return tuple(out)


def budget(options: dict, layout: Layout) -> tuple[int, ...]:
    if refuses(options, layout):  # nothing to plan; the refusal is the configuration's error when it is decided
        return (0,) * layout.depth
    return tuple(removed for _, removed in split(options, layout))


def per_block(options: dict, layout: Layout) -> tuple[dict, ...]:
    if refuses(options, layout):
        return ({"prune": 0},) * layout.depth
    return tuple({"prune": pruned} for pruned, _ in split(options, layout))


def grid(layout: Layout) -> tuple[float, ...]:
    """The released targets of the model's auto-resolved key (none for a model whose key must be named)."""
    key = ARCHITECTURES.get(layout.architecture)
    return tuple(float(t) for t in released().get(key, {}))


def most(num_tokens: int, num_prefix_tokens: int) -> int:
    """DiffRate's last blocks keep 3 of 56 tokens: a block may remove every patch token."""
    return max(num_tokens - num_prefix_tokens, 0)


def prune_then_merge(x: Tensor, received: Tensor, prune: int, merge: int, num_prefix_tokens: int) -> Plan:
    """The plan of one DiffRate block.

    x: (B, N, C) the tokens after the attention residual (the similarity features); received: (B, N) the cls
    token's attention (mean over heads). Patch tokens are sorted by it, descending; the last `prune` are dropped,
    the next-to-last `merge` join their most similar token among the K = N - p - prune - merge leading ones. The
    plan maps (B, N, C) to (B, p + K, C): prefix tokens, then the K kept tokens in sorted order.
    """
    p = num_prefix_tokens
    b, n, _ = x.shape
    k = n - p - prune - merge
    with torch.no_grad():
        order = received[:, p:].sort(dim=-1, descending=True).indices + p  # (B, N - p)
        prefix = torch.arange(p, device=x.device).expand(b, p)
        keep = torch.cat([prefix, order[:, :k]], dim=1)[..., None]  # (B, p + K, 1)
        src = order[:, k : k + merge][..., None]  # (B, S, 1)
        if merge == 0 or k == 0:  # nothing to merge into (only prefix tokens left): the rest is dropped
            empty = src[:, :0]
            return PruneMerge(keep, empty, empty)
        metric = x / x.norm(dim=-1, keepdim=True)
        important = metric.gather(1, order[:, :k, None].expand(-1, -1, x.shape[-1]))  # (B, K, C)
        unimportant = metric.gather(1, src.expand(-1, -1, x.shape[-1]))  # (B, S, C)
        similarity = unimportant @ important.transpose(-1, -2)  # (B, S, K); prefix tokens are never a target
        node_max, node_idx = similarity.max(dim=-1)  # (B, S)
    return PruneMerge(keep, src, node_idx[..., None] + p, node_max[..., None].to(x.dtype))


@register(
    "diffrate",
    kind="hybrid",
    needs=("cls_attention", "x"),
    knob="target",
    prop_attn=True,
    source=SOURCE,
    most=most,
    refuses=refuses,
    budget=budget,
    grid=grid,
    per_block=per_block,
)
def diffrate(
    tokens: LayerTokens,
    r: int,
    target: Annotated[float, Range(0, None), Applies(prune_kept="")] = 2.9,
    model_key: Annotated[ModelKey, Applies(prune_kept="")] = "auto",
    prune_kept: str = "",
    merge_kept: str = "",
    *,
    prune: int = 0,
) -> Plan:
    """DiffRate: a released per-block schedule; prune by cls attention, then merge into the most similar kept token.

    target: the GMACs target of a released schedule (the authors' --target_flops); model_key: the schedule's model
    (auto: from the timm architecture); prune_kept / merge_kept: your own schedule instead ("197,196,..." or
    "197:196:...", kept tokens per block, cls included, as DiffRate's search writes them). prune (per block, from
    the schedule): how many of this block's r tokens are pruned; the rest are merged.
    """
    if tokens.cls_attention is None:
        raise ValueError("diffrate needs the cls token's attention; this layer has no cls token")
    prune = min(prune, r)
    x = tokens.x if tokens.x is not None else tokens.metric
    return prune_then_merge(x, tokens.cls_attention(), prune, r - prune, tokens.num_prefix_tokens)
