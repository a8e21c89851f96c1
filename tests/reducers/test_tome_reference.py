"""`tome` against a slow, obviously correct reference of the authors' algorithm (facebookresearch/ToMe).

The reference is written from the rules, token by token in plain Python, not from our tensor code:
1. A and B alternate over the whole sequence, prefix tokens included (A = positions 0, 2, ..., B = 1, 3, ...).
2. Prefix tokens are never merged: one in A is never merged away, nothing merges into one in B.
3. Each A token links to its most similar B token (cosine); the r strongest links are merged, size-weighted.
4. Output: prefix tokens in order, then the unmerged A tokens (in token order when the model has prefix tokens,
   else by descending score), then the B tokens in order.
Registers (several cls-like prefix tokens) extend rules 2 and 4 in the natural way: all protected, all in front.
"""

from __future__ import annotations

import math

import pytest
import torch

from tomebench.reducers import max_r, merge_tokens
from tomebench.reducers.tome import bipartite_soft_matching


def cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_merge(tokens: list[dict], r: int, p: int) -> list[dict]:
    """One image's tokens (dicts: metric, x, size, source as a frozenset of input positions) -> merged tokens."""
    n = len(tokens)
    r = min(r, (n - p) // 2)
    a_pos = list(range(0, n, 2))
    b_pos = list(range(1, n, 2))
    links = []  # (score, a position, its best b position) for every A token that may be merged away
    for i in a_pos:
        if i < p:
            continue
        best = max((j for j in b_pos if j >= p), key=lambda j: cosine(tokens[i]["metric"], tokens[j]["metric"]))
        links.append((cosine(tokens[i]["metric"], tokens[best]["metric"]), i, best))
    links.sort(key=lambda link: -link[0])
    merged, kept = links[:r], links[r:]
    into = {j: [j] for j in b_pos}
    for _, i, j in merged:
        into[j].append(i)
    unmerged = [i for _, i, _ in kept]
    if p > 0:
        unmerged.sort()
    order = list(range(p)) + unmerged + [j for j in b_pos if j >= p]
    out = []
    for pos in order:
        group = into.get(pos, [pos])
        size = sum(tokens[g]["size"] for g in group)
        out.append(
            dict(
                metric=[
                    sum(tokens[g]["metric"][c] * tokens[g]["size"] for g in group) / size
                    for c in range(len(tokens[pos]["metric"]))
                ],
                x=[
                    sum(tokens[g]["x"][c] * tokens[g]["size"] for g in group) / size
                    for c in range(len(tokens[pos]["x"]))
                ],
                size=size,
                source=frozenset().union(*(tokens[g]["source"] for g in group)),
            )
        )
    return out


CASES = [  # (prefix tokens, tokens): cls only, cls + distillation, none, cls + 4 registers; odd and even N
    (1, 17),
    (1, 16),
    (2, 17),
    (2, 18),
    (0, 15),
    (0, 16),
    (5, 21),
    (5, 22),
]


@pytest.mark.parametrize("p, n", CASES)
@pytest.mark.parametrize("which_r", ["one", "max"])
def test_tome_equals_the_reference_over_two_blocks(p: int, n: int, which_r: str):
    g = torch.Generator().manual_seed(1000 * p + n)
    batch, channels = 3, 5
    metric = torch.randn(batch, n, 4, generator=g, dtype=torch.float64)
    x = torch.randn(batch, n, channels, generator=g, dtype=torch.float64)
    source = torch.eye(n, dtype=torch.float64).expand(batch, n, n)
    reference = [
        [dict(metric=metric[b, i].tolist(), x=x[b, i].tolist(), size=1.0, source=frozenset([i])) for i in range(n)]
        for b in range(batch)
    ]
    size = None
    expected = n
    for _ in range(2):  # the second block sees the first block's order and sizes
        r = 1 if which_r == "one" else max_r(x.shape[1], p)
        expected -= r
        merge = bipartite_soft_matching(metric, r, p)
        x, new_size, source = merge_tokens(merge, x, size, source)
        metric, _, _ = merge_tokens(merge, metric, size, None)
        size = new_size
        reference = [reference_merge(tokens, r, p) for tokens in reference]

    assert x.shape[1] == expected
    for b, tokens in enumerate(reference):
        assert len(tokens) == expected
        # Which input tokens each output token holds, in which order: exactly.
        assert [frozenset(source[b, t].nonzero().flatten().tolist()) for t in range(len(tokens))] == [
            t["source"] for t in tokens
        ]
        assert size[b, :, 0].tolist() == [t["size"] for t in tokens]
        torch.testing.assert_close(x[b], torch.tensor([t["x"] for t in tokens], dtype=x.dtype))
