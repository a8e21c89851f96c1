"""Multi-Criteria Token Fusion (MCTF; Lee, Choi and Kim, CVPR 2024), as its authors released it (mlvlab/MCTF).

Per active block (`models/modules/blocks.py` `Block_DEIT.forward`, one-step-ahead on): the block's attention is
computed on its input tokens; the tokens are matched on three criteria multiplied together, each softened by its
temperature (`utils/mctf.py` `bipartite_soft_matching`):

    W_sim  = ((cos(x_i, x_j) + 1) / 2) ** (1 / tau_sim)           similarity of the block-input tokens
    W_info = (a_i * a_j) ** (1 / tau_info)                        informativeness: a = 1 / attention received,
                                                                  over its maximum
    W_size = (s_i * s_j) ** (1 / tau_size)                        size: s = 1 / size, over its maximum

and merged by bipartite matching in both directions: A (even positions) into B (odd) for r // 2 tokens, then the
B tokens into the A tokens left for the other r - r // 2. Merged tokens are pooled by attention x size (`merge_wavg`,
pooling_type 1). One step ahead, the fusion happens before the attention: the attention matrix computed on the
unfused tokens is fused alongside (key columns summed, query rows pooled like the tokens) and multiplied with the
values of the fused tokens (`models/SA/MHSA.py` `MHSA.forward` with `_attn` a tensor).

The defaults are the authors' evaluation scripts' (`run/eval_deit_s_mctf.sh`, `run/eval_deit_t_mctf.sh`):
`--mctf_type [16,0,0,1,1,1,20,40,1,1,0]` (r 16, proportional attention, one-step-ahead 1, tau_sim 1, tau_info 20,
tau_size 40, bidirection, pooling 1) and `--activate_layer [1,...,11]` (every block but the first).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import Tensor

from tomebench.reducers.base import LayerTokens, Layout, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Bidirectional, Plan

Pooling = Literal["attention", "size", "max", "mean"]  # the authors' pooling_type 1, 0, 2, 3
MAX_TAU = 1000.0
MAX_FIRST_BLOCK = 1000


def _most(n: int, p: int) -> int:
    """The authors' clamp (`mctf`): at least 10 tokens stay (`if t - r < 10: r = t - 10`), and at most half of
    the non-prefix tokens merge."""
    return max(min(n - 10, (n - p) // 2), 0)


def _active(options: dict, layout: Layout) -> tuple[bool, ...]:
    """`--activate_layer`: the authors' scripts for a constant r merge in every block but the first."""
    return tuple(block >= options["first_block"] for block in range(layout.depth))


def multi_criteria_matching(
    metric: Tensor,
    attn: Tensor | None,
    size: Tensor | None,
    r: int,
    num_prefix_tokens: int,
    tau_sim: float,
    tau_info: float,
    tau_size: float,
    bidirection: bool,
) -> tuple[Tensor, ...]:
    """The matching of the authors' `bipartite_soft_matching`: metric (B, N, C) the block-input tokens, attn (B,
    H, N, N) the block's attention probabilities, size (B, N, 1) or None (nothing merged yet), 0 < r <= (N - p) // 2.

    Returns the indices of a `Bidirectional` plan: unm_idx, src_idx, dst_idx (step 1, A into B) and src2_idx,
    dst2_idx, unm2_idx (step 2, B into the A tokens left; None without bidirection). A zero temperature switches
    its criterion off, as in the authors' code.
    """
    p = num_prefix_tokens
    pa, pb = (p + 1) // 2, p // 2  # prefix tokens at even positions are A's, at odd positions B's
    r1, r2 = (r // 2, r - r // 2) if bidirection else (r, 0)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[:, ::2], metric[:, 1::2]  # (B, Na, C), (B, Nb, C)
    if tau_sim:
        w_sim = a @ b.transpose(-1, -2)
        w_sim = ((w_sim + 1) / 2) ** (1 / tau_sim)  # (B, Na, Nb)
    else:
        w_sim = torch.ones((a.shape[0], a.shape[1], b.shape[1]), device=a.device)
    w_info: Tensor | float = 1
    if tau_info > 0 and attn is not None:
        informative = 1 / attn.mean(dim=[1, 2])  # (B, N): rarely attended tokens are the informative ones
        informative = informative / informative.max(1, keepdim=True)[0]
        w_info = (informative[..., ::2, None] * informative[..., 1::2, None].transpose(1, 2)) ** (1 / tau_info)
    w_size: Tensor | float = 1
    if tau_size and size is not None:
        small = 1 / size
        small = small / small.max(1, keepdim=True)[0]  # (B, N, 1)
        w_size = (small[..., ::2, :] * small[..., 1::2, :].transpose(1, 2)) ** (1 / tau_size)
    scores = w_sim * w_info * w_size  # (B, Na, Nb)
    if pa:
        scores[:, :pa, :] = -math.inf  # prefix tokens in A are never merged away (the authors' num_protected)
    if pb:
        scores[:, :, :pb] = -math.inf  # nothing merges into a prefix token in B (the authors have none there)

    node_max, node_idx = scores.max(dim=-1)  # (B, Na): best B partner of each A token
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]  # (B, Na, 1)
    unm_idx = edge_idx[:, r1:]
    src_idx = edge_idx[:, :r1]
    dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)  # (B, r1, 1)
    if p:
        unm_idx = unm_idx.sort(dim=1)[0]  # the authors sort to keep the cls token first
    if not bidirection:
        return unm_idx, src_idx, dst_idx, None, None, None
    # Step 2 on the scores already computed: each B token (rows) against the A tokens left (columns); a prefix A
    # token's column is -inf, so nothing merges into it; B prefix tokens are left out of the rows.
    new_scores = scores.gather(dim=1, index=unm_idx.expand(-1, -1, scores.shape[2])).transpose(1, 2)[:, pb:]
    node_max2, node_idx2 = new_scores.max(dim=-1)  # (B, Nb - pb): best A token left for each B token
    edge_idx2 = node_max2.sort(dim=-1, descending=True)[1][..., None]  # (B, Nb - pb, 1)
    src2 = edge_idx2[:, :r2]
    dst2_idx = node_idx2[..., None].gather(dim=1, index=src2)  # (B, r2, 1) positions among the A tokens left
    return unm_idx, src_idx, dst_idx, src2 + pb, dst2_idx, edge_idx2[:, r2:] + pb


def _site(options: dict) -> str:
    """One step ahead (1, or 2 "precise"), the tokens are fused before the attention; without it (0) after the
    MLP, on the block's own attention (`Block_DEIT.forward`)."""
    return "before-attention" if options["one_step_ahead"] else "after-mlp"


@register(
    "mctf",
    kind="merge",
    acts="before-attention",
    needs=("attention", "x", "size"),
    prop_attn=True,
    most=_most,
    active=_active,
    site=_site,
    source="mlvlab/MCTF@2004da0 utils/mctf.py (mctf, bipartite_soft_matching, merge_wavg); "
    "models/modules/blocks.py Block_DEIT.forward; models/SA/MHSA.py; run/eval_deit_s_mctf.sh",
)
def mctf(
    tokens: LayerTokens,
    r: int,
    tau_sim: Annotated[float, Range(0, MAX_TAU)] = 1.0,
    tau_info: Annotated[float, Range(0, MAX_TAU)] = 20.0,
    tau_size: Annotated[float, Range(0, MAX_TAU)] = 40.0,
    bidirection: bool = True,
    one_step_ahead: Literal[1, 2, 0] = 1,
    pooling: Pooling = "attention",
    first_block: Annotated[int, Range(0, MAX_FIRST_BLOCK)] = 1,
) -> Plan:
    """Multi-criteria token fusion: similarity x informativeness x size, bidirectional matching, one step ahead.

    tau_sim, tau_info, tau_size: each criterion's temperature (0 switches it off); bidirection: merge A into B and
    then B into A (r // 2 and r - r // 2), else A into B only; one_step_ahead 1: fuse before the attention, the
    attention matrix fused alongside; 2 ("precise"): fuse before the attention, then attend over the fused tokens
    afresh (with their new sizes); 0: fuse after the MLP, on the block's own attention and output; pooling:
    attention x size weighted (the authors' pooling_type 1), size weighted (0), max (2) or mean (3); first_block:
    blocks before it do not merge (the authors' activate_layer).
    """
    x = tokens.x  # (B, N, C) the block's input (its output without one-step-ahead): matched on, not the keys
    attn = tokens.attention()  # (B, H, N, N) on the unfused tokens, proportional attention applied
    with torch.no_grad():
        indices = multi_criteria_matching(
            x, attn, tokens.size, r, tokens.num_prefix_tokens, tau_sim, tau_info, tau_size, bidirection
        )
        attn_m = attn.mean(dim=[1, 2]).unsqueeze(-1)  # (B, N, 1) attention received, merge_wavg's weight
    p = tokens.num_prefix_tokens
    return Bidirectional(
        p, (p + 1) // 2, *indices, pooling=pooling, attn_m=attn_m, size=tokens.size, fuse_attention=one_step_ahead == 1
    )
