"""Random layers for the reducers' property tests, and the registry's reducers by kind: a reducer file added to
tomebench/reducers (or a plug-in) is covered by the shared invariants without editing a test."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from tomebench.reducers import REDUCERS, LayerTokens, max_r, merge_tokens

NAMES = tuple(REDUCERS.names())  # every registered reducer, `none` (the unpatched token flow) included
KINDS = {entry.name: entry.obj.kind for entry in REDUCERS}  # merge, prune, hybrid or none
MERGING = tuple(name for name in NAMES if KINDS[name] == "merge")
PRUNING = tuple(name for name in NAMES if KINDS[name] == "prune")


@st.composite
def layers(draw, given_size: bool = False):
    """A random layer: metric (B, N, C), features x (B, N, C), sizes (B, N, 1) or None, prefix P < N, r,
    and attention scores (B, N) for the attention thunks."""
    b = draw(st.integers(1, 3))
    n = draw(st.integers(2, 40))
    c = draw(st.integers(1, 8))
    p = draw(st.integers(0, min(4, n - 1)))
    r = draw(st.integers(0, n))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    metric = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    # Integer sizes as earlier layers would leave them (each token stands for 1..5 patches).
    size = torch.randint(1, 6, (b, n, 1), generator=g).to(torch.float64) if given_size else None
    scores = torch.rand(b, n, generator=g, dtype=torch.float64).softmax(dim=-1)
    return metric, x, size, p, r, scores


def tokens_for(metric, size, p, scores=None, layer: int = 0, has_cls: bool = True, x=None) -> LayerTokens:
    """LayerTokens whose attention thunks return fixed scores (B, N), as the loop's attention parts would. What
    else a reducer may declare it reads is there too: x (the tokens the plan applies to; the metric when not
    given), other features (x for "x", else the metric) and a full attention (B, 1, N, N) from the metric."""
    scores = torch.rand(metric.shape[:2], dtype=metric.dtype) if scores is None else scores
    x = metric if x is None else x
    return LayerTokens(
        metric=metric,
        size=size,
        num_prefix_tokens=p,
        layer=layer,
        cls_attention=(lambda: scores) if has_cls else None,
        mean_attention=lambda: scores,
        features=lambda kind, heads: x if kind == "x" else metric,
        attention=lambda: (metric @ metric.transpose(-2, -1)).softmax(dim=-1)[:, None],
        x=x,
        depth=layer + 1,
    )


def reduce(name, metric, x, size, p, r, scores=None, layer: int = 0, **options):
    merge = REDUCERS.get(name)(tokens_for(metric, size, p, scores, layer, x=x), r, **options)
    return merge_tokens(merge, x, size, None)


def expected_tokens(n: int, p: int, r: int, name: str = "tome") -> int:
    """Tokens a block leaves: N - r, r clamped to the most the reducer declares it can remove; for those that keep
    the default (every built-in but `none`), half the non-prefix tokens, restated here, not read from the package."""
    most = REDUCERS.get(name).most
    return n - min(r, (n - p) // 2 if most is max_r else most(n, p))


def row_indices(out: torch.Tensor, x: torch.Tensor) -> list[list[int]]:
    """For each batch element, the input row index that each output row equals exactly (fails if none or several)."""
    result = []
    for ob, xb in zip(out, x):
        matches = (ob[:, None, :] == xb[None, :, :]).all(dim=-1)  # (N_out, N_in)
        assert torch.all(matches.sum(dim=1) == 1), "an output row is not an exact copy of exactly one input row"
        result.append(matches.float().argmax(dim=1).tolist())
    return result


def diffrate_schedule(num_tokens: int, num_prefix_tokens: int, depth: int, prune: int, merge: int) -> dict:
    """diffrate options for an explicit schedule pruning `prune`, then merging `merge` tokens in every block of a
    model (counts written as the authors' file writes them: cls token included, for one prefix token)."""
    n = num_tokens - num_prefix_tokens + 1
    r = prune + merge
    prune_kept = [n - r * i - prune for i in range(depth)]
    merge_kept = [n - r * (i + 1) for i in range(depth)]
    return {"prune_kept": ",".join(map(str, prune_kept)), "merge_kept": ",".join(map(str, merge_kept))}


def expected_final(name: str, model, r: int, options: dict) -> int:
    """Tokens after the last block of `model` patched with `name` at r: r per block for a reducer whose budget is r,
    what its own knob asks of each block for the others, each clamped to what the block allows (as the loop
    does); restated from the declarations, not read from the patch."""
    from tomebench.patch.plan import layout

    spec = REDUCERS.get(name)
    shape = layout(model)
    n, p = shape.num_tokens, shape.num_prefix_tokens
    if spec.kind == "none":
        return n
    from tomebench.schedule import CONSTANT

    for v in spec.requested(r, CONSTANT, options, shape):
        n -= min(v, spec.most(n, p))
    return n


def runnable_options(name: str, model, r: int) -> dict | None:
    """Options under which a reducer acts on every block of `model` and keeps every prefix token, so the shared
    tests hold it to the same expectations: a reducer whose authors protect only the cls token gets
    protect_prefix, one that acts at a few blocks (EViT, PPT: 3, 6, 9) acts at every block, and diffrate gets a
    schedule removing r per block. None where it cannot run on that model (diffrate without a cls token)."""
    from tomebench.patch.plan import layout

    shape = layout(model)
    names = {option.name for option in REDUCERS.get(name).options}
    if name != "diffrate":
        return ({"protect_prefix": True} if "protect_prefix" in names else {}) | (
            {"locations": tuple(range(shape.depth))} if "locations" in names else {}
        )
    if not shape.has_cls:
        return None
    n, p = shape.num_tokens, shape.num_prefix_tokens
    prune_kept, merge_kept = [], []
    for _ in range(shape.depth):  # r clamped as the loop clamps it for the others; half pruned, half merged
        removed = min(r, max_r(n, p))
        prune_kept.append(n - removed // 2 - p + 1)
        n -= removed
        merge_kept.append(n - p + 1)
    return {"prune_kept": ",".join(map(str, prune_kept)), "merge_kept": ",".join(map(str, merge_kept))}
