"""Token Fusion (ToFu; Kim, Gao, Hsu, Shen and Jin, WACV 2024, "Token Fusion: Bridging the Gap between Token
Pruning and Token Merging", arXiv 2312.01026). No code by the authors was found; the rules are the paper's as far as
it could be read here (its abstract and published summaries: see docs/reducers/tofu.md for what was read where, and
what had to be chosen), with PiToMe's port (hchautran/PiToMe@550b5de `algo/tofu`) as a second opinion and as an
option.

Per block, between the attention residual and the MLP, ToMe's bipartite soft matching on the head-mean keys picks r
(A, B) pairs (alternating split, cosine similarity, prefix tokens protected). Where the model responds nonlinearly
to interpolated inputs (the early blocks) the pairs are pruned: the A token is dropped, its B partner kept as it
was. In the later blocks they are merged with MLERP: the average direction, rescaled to the largest norm among the
merged tokens, so merging does not shrink norms. Blocks `layer > merge_after * depth` merge, the others prune
(0.5: the port's split, `i > depth // 2`).

port=True reproduces the port's arithmetic token for token: a plain mean divided by the norm of the original B
token (not of the mean), no sizes. The port's budget, a ratio (r = floor(T - T * ratio) of the T tokens a block
receives, cls included), is given as tomebench's per-block r: `ratio_schedule(ratio, tokens, depth)`.
"""

from __future__ import annotations

import math
from typing import Annotated

from tomebench.reducers.base import LayerTokens, register
from tomebench.reducers.options import Range
from tomebench.reducers.plans import Bipartite, BipartitePrune, Mlerp, Plan
from tomebench.reducers.tome import bipartite_soft_matching

SOURCE = (
    "the paper (arXiv 2312.01026; no authors' code); port=True: hchautran/PiToMe@550b5de algo/tofu/merge.py "
    "bipartite_soft_matching, patch/deit.py apply_patch, patch/timm.py ToFuBlock"
)


def merges(layer: int, depth: int, merge_after: float) -> bool:
    """Whether block `layer` of `depth` merges with MLERP (else it prunes): layer > merge_after * depth. At 0.5 this
    is the port's `'tofu' if i > num_layers // 2 else 'prune'` (for whole numbers, i > d / 2 iff i > d // 2)."""
    return layer > merge_after * depth


def ratio_schedule(ratio: float, num_tokens: int, depth: int) -> tuple[int, ...]:
    """The port's budget as a per-block r: each block removes floor(T - T * ratio) of the T tokens it receives,
    prefix tokens included (`bipartite_soft_matching`: `T = metric.shape[1]`), nothing at ratio 1."""
    removed, t = [], num_tokens
    for _ in range(depth):
        r = math.floor(t - t * ratio) if ratio < 1.0 else 0
        removed.append(r)
        t -= r
    return tuple(removed)


@register("tofu", kind="hybrid", needs=("metric",), prop_attn=True, source=SOURCE)
def tofu(
    tokens: LayerTokens,
    r: int,
    merge_after: Annotated[float, Range(-1.0, 1.0)] = 0.5,
    port: bool = False,
) -> Plan:
    """Token Fusion: ToMe's matching; early blocks prune the matched A tokens, later blocks merge them with MLERP.

    merge_after: blocks with layer > merge_after * depth merge, the others prune (0.5: the port's split; 1: prune
    everywhere; below 0: merge everywhere). port: PiToMe's port's arithmetic (mean over the B token's own norm,
    no sizes) instead of the paper's MLERP (size-weighted mean over its own norm, sizes tracked).
    """
    match = bipartite_soft_matching(tokens.metric, r, tokens.num_prefix_tokens)
    if not isinstance(match, Bipartite):  # nothing to match (r clamped to 0)
        return match
    if merges(tokens.layer, tokens.depth, merge_after):
        return Mlerp(match, port=port)
    return BipartitePrune(match)
