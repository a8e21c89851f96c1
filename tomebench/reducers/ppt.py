"""PPT, token Pruning and Pooling (Wu et al., 2023, "PPT: Token Pruning and Pooling for Efficient Vision
Transformers"), as its authors released it (xjwu1024/PPT, `ppt_deit.py`), used off the shelf.

At a few blocks (3, 6 and 9 in the authors' DeiT-S command), after the attention residual and before the MLP,
every image decides for itself. Each token's significance is the cls token's attention to it (summed over heads)
times the norm of its value vector (all heads), normalised to sum to 1 over the tokens other than the cls token
(ATS's score assignment). When the variance of these scores is under `threshold` (the attention is spread out:
the tokens are alike), the image pools r tokens by ToMe's bipartite matching (size-weighted, sizes tracked);
otherwise it prunes its r least significant tokens, keeping the others by descending significance. Proportional
attention is on.

Only the cls token is protected from pruning (a distillation token has a significance score like a patch); the
pooling protects the cls and distillation tokens as the authors' ToMe does. `protect_prefix` protects every prefix
token from pruning too (an extension).
"""

from __future__ import annotations

from typing import Annotated

import torch

from tomebench.reducers.base import LayerTokens, Layout, max_r, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Keep, PerImage, Plan
from tomebench.reducers.tome import bipartite_soft_matching

LOCATIONS = (3, 6, 9)  # the authors' published DeiT-S command: --pp_loc_list 3 6 9
THRESHOLD = 7e-5  # the same command's --threshold; their code's own default, 0, always prunes


def significance(tokens: LayerTokens, guarded: int) -> torch.Tensor:
    """(B, N - guarded) the authors' significance scores (`PPTAttention.score_assignment_step`): the cls token's
    attention to each token times the norm of its values (heads concatenated), normalised over the scored tokens.
    The cls attention comes averaged over heads; the authors sum it, a factor the normalisation removes."""
    attention = tokens.cls_attention()  # (B, N), proportional attention applied
    values = tokens.features("v", "concat").float()  # (B, N, H * D)
    scores = (attention * values.norm(dim=-1))[:, guarded:]
    return scores / scores.sum(dim=1, keepdim=True)


def _budget(options: dict, layout: Layout, r: int) -> tuple[int, ...]:
    """r at each location (blocks beyond the model's depth do not exist), 0 elsewhere: the authors' blocks pop r
    only where they pool or prune."""
    return tuple(r if block in options["locations"] else 0 for block in range(layout.depth))


def _needs_cls(options: dict, layout: Layout) -> str | None:
    if not layout.has_cls:
        return "ppt scores tokens by the cls token's attention, and this model has no cls token"
    return None


@register(
    "ppt",
    kind="hybrid",
    needs=("metric", "cls_attention", "qkv"),
    budget=_budget,
    refuses=_needs_cls,
    source="xjwu1024/PPT@706bcdd ppt_deit.py PPTAttention.score_assignment_step, pp_block_adaptive.forward, "
    "apply_patch; tome.py bipartite_soft_matching, merge_wavg; README (DeiT-S: --r_tokens 50 --pp_loc_list 3 6 9 "
    "--threshold 7e-5)",
)
def ppt(
    tokens: LayerTokens,
    r: int,
    threshold: Annotated[float, Range(0.0, 1.0)] = THRESHOLD,
    locations: Annotated[tuple[int, ...], Range(0, None)] = LOCATIONS,
    protect_prefix: bool = False,
) -> Plan:
    """PPT: at blocks 3, 6, 9 each image pools r tokens (ToMe) if its significance scores vary little, else prunes.

    threshold: the variance under which an image pools (the authors' DeiT-S command: 7e-5; 0: always prune);
    locations: the blocks that reduce, r tokens at each (blocks beyond the model's depth are skipped);
    protect_prefix: never prune distillation or register tokens either (extension; the authors protect only the
    cls token from pruning). Plan: (B, N, C) -> (B, N - r, C); a pooled image laid out as ToMe leaves it, a pruned
    one as [protected tokens, kept tokens by descending significance].
    """
    p = tokens.num_prefix_tokens
    q = p if protect_prefix else min(p, 1)
    n = tokens.metric.shape[1]
    r = min(r, max_r(n, p))  # the authors clamp to (N - 1) // 2, their ToMe to (N - protected) // 2
    with torch.no_grad():
        scores = significance(tokens, q)  # (B, N - q)
        b = scores.shape[0]
        pool = scores.var(dim=1) < threshold  # (B,): torch.var, unbiased, as the authors'
        order = scores.sort(dim=1, descending=True).indices[:, : n - q - r]  # (B, N - q - r) most significant
        guard = torch.arange(q, device=order.device).expand(b, q)
        prune = Keep(torch.cat([guard, order + q], dim=1)[..., None])  # (B, N - r, 1)
    return PerImage(pool, bipartite_soft_matching(tokens.metric, r, p), prune)
