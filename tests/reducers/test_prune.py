"""The pruning baselines: random pruning's seeded draw per block, attention pruning's scores and its refusal of a
cls score on a model without a cls token."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tomebench
from tests.helpers import make_vit
from tests.reducers.layers import (
    reduce,
    tokens_for,
)
from tomebench.errors import UsageError
from tomebench.reducers import REDUCERS, LayerTokens, Layout, max_r

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(
    n=st.integers(30, 40),
    p=st.integers(0, 4),
    seeds=st.lists(st.integers(0, 1000), min_size=2, max_size=2, unique=True),
    layer_pair=st.lists(st.integers(0, 50), min_size=2, max_size=2, unique=True),
)
def test_prune_selection_depends_on_seed_and_layer(n, p, seeds, layer_pair):
    metric = torch.randn(2, n, 4, dtype=torch.float64)
    ids = torch.arange(n, dtype=torch.float64).expand(2, n)[..., None]
    r = max_r(n, p)

    def kept(seed: int, layer: int) -> torch.Tensor:
        return reduce("prune", metric, ids, None, p, r, layer=layer, seed=seed)[0][..., 0]

    base = kept(seeds[0], layer_pair[0])
    assert torch.equal(base, kept(seeds[0], layer_pair[0]))
    assert not torch.equal(base, kept(seeds[1], layer_pair[0]))
    assert not torch.equal(base, kept(seeds[0], layer_pair[1]))
    # One draw per block shared by the batch: an image's tokens do not depend on its place in the batch.
    assert torch.equal(base[0], base[1])


@SETTINGS
@given(
    b=st.integers(1, 3),
    n=st.integers(2, 40),
    p=st.integers(0, 4),
    r=st.integers(0, 40),
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(["cls", "auto", "mean"]),
)
def test_attn_prune_drops_the_lowest_scored_tokens(b, n, p, r, seed, mode):
    p = min(p, n - 1)
    g = torch.Generator().manual_seed(seed)
    good = torch.stack([torch.randperm(n, generator=g) for _ in range(b)]).double()  # distinct scores
    bad = -good  # the opposite ranking: picking the wrong thunk selects other tokens
    good[:, :p] = -1.0  # prefix tokens score lowest, yet must never be dropped
    calls = []

    def thunk(scores, which):
        def compute():
            calls.append(which)
            return scores

        return compute

    cls, mean = (good, bad) if mode in ("cls", "auto") else (bad, good)
    tokens = LayerTokens(
        metric=torch.randn(b, n, 3, generator=g, dtype=torch.float64),
        size=None,
        num_prefix_tokens=p,
        cls_attention=thunk(cls, "cls"),
        mean_attention=thunk(mean, "mean"),
    )
    merge = REDUCERS.get("attn-prune")(tokens, r, score=mode)
    r_eff = min(r, max_r(n, p))
    # Computed once, and only the one it uses; not at all when the block has nothing to remove (the contract
    # skips the reducer there).
    assert calls == ([] if r_eff == 0 else ["mean"] if mode == "mean" else ["cls"])

    ids = torch.arange(n, dtype=torch.float64).expand(b, n)[..., None]
    kept = merge(ids)[..., 0].long()
    for row, scores in zip(kept.tolist(), good):
        dropped = set((scores[p:].argsort()[:r_eff] + p).tolist())  # the r lowest non-prefix scores
        assert row == [i for i in range(n) if i not in dropped]


@SETTINGS
@given(b=st.integers(1, 3), n=st.integers(4, 40), seed=st.integers(0, 2**31 - 1))
def test_attn_prune_auto_falls_back_to_mean_attention_without_cls(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.stack([torch.randperm(n, generator=g) for _ in range(b)]).double()
    tokens = LayerTokens(torch.randn(b, n, 3, generator=g), None, 1, mean_attention=lambda: scores)
    r = max_r(n, 1)
    kept = REDUCERS.get("attn-prune")(tokens, r)(torch.arange(n).expand(b, n)[..., None])[..., 0]
    for row, s in zip(kept.tolist(), scores):
        assert row == [0] + sorted((s[1:].argsort(descending=True)[: n - 1 - r] + 1).tolist())


def test_attn_prune_refuses_cls_score_without_cls_and_unknown_scores():
    # Refused once, when the configuration is planned for a model's layout, never inside the forward.
    tokens = tokens_for(torch.randn(1, 9, 4), None, 1, has_cls=False)
    fn = REDUCERS.get("attn-prune")
    with pytest.raises(UsageError, match="cls"):
        fn.check({"score": "cls"}, Layout(num_tokens=9, num_prefix_tokens=1, depth=1, has_cls=False))
    with pytest.raises(UsageError, match="auto, cls, mean"):
        fn.check({"score": "max"})
    fn.check({"score": "cls"}, Layout(num_tokens=9, num_prefix_tokens=1, depth=1, has_cls=True))
    assert fn(tokens, 2, score="mean")(torch.randn(1, 9, 4)).shape == (1, 7, 4)


def test_attn_prune_score_cls_is_refused_when_patching_a_model_without_cls():
    model = make_vit("test_vit2")
    images = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    try:
        with pytest.raises(UsageError, match="cls"):  # at patch time, before any forward
            tomebench.patch(model, "attn-prune", 4, score="cls")
        assert type(model).__name__ == "VisionTransformer"  # the refused patch left the model untouched
        tomebench.patch(model, "attn-prune", 4, score="auto")
        with torch.no_grad():
            assert torch.isfinite(model(images)).all()
    finally:
        tomebench.unpatch(model)
