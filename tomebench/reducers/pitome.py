"""PiToMe (Tran et al., NeurIPS 2024, "Accelerating Transformers with Spectrum-Preserving Token Merging"), off the
shelf, as the authors' DeiT/timm patch runs it (hchautran/PiToMe, `algo/pitome/patch/deit.py` `apply_patch` and
`PiToMeVisionTransformer.forward`, `algo/pitome/patch/timm.py` `PiToMeBlock.forward`, `algo/pitome/merge.py`
`pitome_vision`, `pitome`, `pitome_bsm`, `merge_wavg`).

In every block, between the attention residual and the MLP, on the head-mean keys of the non-prefix tokens:
each token's energy is the mean over all tokens of ELU(cosine similarity - margin), the margin falling linearly
over depth (0.75 at the first block towards 0); tokens are ranked by energy, highest first. A block removes
r = floor(T - T * ratio) of its T tokens. In the first half of the blocks (ceil(depth / 2)) the ranked tokens
alternate into sets A and B and the r best-matched A tokens merge into their B partners (bipartite matching over
the energy order); in the later blocks only the 2r highest-energy tokens take part (alternating into A and B,
every A token merging into its most similar B token) and the rest are protected. Merges are size-weighted; no
proportional attention (the authors' attention never receives the sizes).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Plan, PruneMerge

SOURCE = (
    "hchautran/PiToMe@550b5de algo/pitome/merge.py pitome_vision, pitome, pitome_bsm, merge_wavg; "
    "algo/pitome/patch/deit.py, patch/timm.py"
)
MARGIN = 0.75  # apply_patch: margins = [.75 - .75 * (i / num_layers) for i in range(num_layers)]
ALPHA = 1.0  # pitome_vision's ELU alpha


def margin(layer: int, depth: int) -> float:
    """The energy margin of block `layer` of `depth`: 0.75 at the first block, falling linearly with depth."""
    return MARGIN - MARGIN * (layer / depth) if depth else MARGIN


def uses_bsm(layer: int, depth: int) -> bool:
    """Whether block `layer` runs the bipartite variant: the first ceil(depth * 0.5) blocks do."""
    return layer < math.ceil(depth * 0.5)


def removed(tokens: int, ratio: float) -> int:
    """r = floor(T - T * ratio) of T mergeable tokens (pitome_vision), nothing at ratio 1."""
    return math.floor(tokens - tokens * ratio) if ratio < 1.0 else 0


def budget(options: dict, layout: Layout) -> tuple[int, ...]:
    """The tokens each block removes at this ratio: r of the T non-prefix tokens the block receives."""
    t = layout.num_tokens - layout.num_prefix_tokens
    out = []
    for _ in range(layout.depth):
        r = removed(t, options["ratio"])
        out.append(r)
        t -= r
    return tuple(out)


def energy_order(metric: Tensor, layer_margin: float) -> tuple[Tensor, Tensor]:
    """metric (B, T, C) -> (similarity (B, T, T), token indices (B, T) by energy, highest first)."""
    metric = F.normalize(metric, p=2, dim=-1)
    sim = metric @ metric.transpose(-1, -2)  # (B, T, T)
    energy = F.elu(sim - layer_margin, alpha=ALPHA).mean(dim=-1)  # (B, T)
    return sim, torch.argsort(energy, dim=-1, descending=True)


def _pairs(sim: Tensor, a_idx: Tensor, b_idx: Tensor) -> Tensor:
    """(B, T, T) similarities -> (B, Na, Nb) those between the A tokens and the B tokens."""
    b, t, _ = sim.shape
    scores = sim.gather(dim=-1, index=b_idx[:, None, :].expand(b, t, b_idx.shape[-1]))  # (B, T, Nb)
    return scores.gather(dim=-2, index=a_idx[..., None].expand(b, a_idx.shape[-1], b_idx.shape[-1]))


def pitome_plan(metric: Tensor, r: int, num_prefix_tokens: int, layer_margin: float, bsm: bool) -> Plan:
    """The plan of one PiToMe block, r tokens merged (0 < r <= T // 2).

    metric: (B, N, C) head-mean keys; the N - p non-prefix tokens take part. bsm (the first blocks): the
    energy-ranked tokens alternate into A and B, the r A tokens with the best match merge into their B partner;
    output [prefix, unmerged A in match order, B in energy order]. Otherwise: the 2r highest-energy tokens
    alternate into A and B, every A token merges into its most similar B token; output [prefix, the protected
    tokens in energy order, B]. The plan maps (B, N, C) to (B, N - r, C).
    """
    p = num_prefix_tokens
    batch = metric.shape[0]
    with torch.no_grad():
        sim, order = energy_order(metric[:, p:], layer_margin)  # (B, T, T), (B, T)
        prefix = torch.arange(p, device=metric.device).expand(batch, p)
        if bsm:
            a_idx, b_idx = order[:, ::2], order[:, 1::2]
            node_max, node_idx = _pairs(sim, a_idx, b_idx).max(dim=-1)  # (B, Na)
            edge_idx = node_max.argsort(dim=-1, descending=True)  # (B, Na)
            unm, src = edge_idx[:, r:], edge_idx[:, :r]
            dst = node_idx.gather(dim=-1, index=src)  # (B, r) positions in B
            kept = torch.cat([a_idx.gather(-1, unm), b_idx], dim=1)
            src_tokens = a_idx.gather(-1, src)
            first_b = unm.shape[1]
        else:
            merge_idx, protected = order[:, : 2 * r], order[:, 2 * r :]
            a_idx, b_idx = merge_idx[:, ::2], merge_idx[:, 1::2]  # r each
            dst = _pairs(sim, a_idx, b_idx).max(dim=-1).indices  # (B, r)
            kept = torch.cat([protected, b_idx], dim=1)
            src_tokens = a_idx
            first_b = protected.shape[1]
        keep = torch.cat([prefix, kept + p], dim=1)[..., None]  # (B, N - r, 1)
    return PruneMerge(keep, (src_tokens + p)[..., None], (dst + p + first_b)[..., None], combine="weighted")


@register(
    "pitome",
    kind="merge",
    needs=("metric",),
    knob="ratio",
    prop_attn=False,
    source=SOURCE,
    budget=budget,
)
def pitome(tokens: LayerTokens, r: int, ratio: Annotated[float, Range(0.5, 1.0)] = 0.9125) -> Plan:
    """PiToMe: energy-ranked merging that protects low-energy tokens; bipartite over the energy order in early blocks.

    ratio: the share of its mergeable tokens a block keeps (r = floor(T - T * ratio)); the default is the authors'
    main_ic.py --ratio default. The margin (0.75 falling over depth) and the first-half bipartite variant are the
    authors' DeiT patch's.
    """
    layer_margin = margin(tokens.layer, tokens.depth)
    return pitome_plan(tokens.metric, r, tokens.num_prefix_tokens, layer_margin, uses_bsm(tokens.layer, tokens.depth))
