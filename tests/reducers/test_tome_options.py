"""ToMe's ablation options (the paper's design study) on constructed inputs where the choice shows, and in a real
ViT: similarity features, distance, heads, how a pair combines, how A and B are split."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tomebench
from tests.helpers import TOME_OPTIONS as OPTIONS
from tomebench.errors import UsageError
from tomebench.patch import check_reducer_options, forward_with_state
from tomebench.reducers import REDUCERS, LayerTokens, merge_tokens
from tomebench.reducers.tome import bipartite_soft_matching, partition_indices, similarity

SETTINGS = settings(max_examples=60, deadline=None)


def pairs(merge, n: int) -> set[tuple[int, int]]:
    """Which input tokens ended up together, from the merge of an identity source map (no prefix, batch 1)."""
    source = merge(torch.eye(n)[None], "amax")[0]  # (N', N)
    return {tuple(int(i) for i in row.nonzero()) for row in source if int(row.sum()) == 2}


def test_euclidean_and_cosine_pick_different_pairs_where_they_disagree():
    # A tokens 0, 2; B tokens 1, 3. Token 0 points the same way as token 1 but is ten times shorter, and lies
    # next to token 3: cosine pairs (0, 1), euclidean pairs (0, 3). Token 2 is far from everything.
    metric = torch.tensor([[[0.1, 0.0], [1.0, 0.0], [-5.0, 5.0], [0.1, 0.05]]])
    assert pairs(bipartite_soft_matching(metric, 1, 0, distance="cosine"), 4) == {(0, 1)}
    assert pairs(bipartite_soft_matching(metric, 1, 0, distance="euclidean"), 4) == {(0, 3)}
    # Dot product ranks the raw products.
    scores = similarity(metric[:, ::2], metric[:, 1::2], "dot")
    assert torch.allclose(scores, metric[:, ::2] @ metric[:, 1::2].transpose(1, 2))


def test_euclidean_similarity_is_minus_the_squared_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    assert torch.allclose(similarity(a, b, "euclidean"), -(torch.cdist(a, b) ** 2), atol=1e-5)


@pytest.mark.parametrize("partition", ["alternating", "sequential", "random"])
@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_partitions_split_the_tokens_into_a_and_b(partition, n):
    a, b = partition_indices(n, partition, 3)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(n)) and len(a) == (n + 1) // 2
    assert a.tolist() == sorted(a.tolist()) and b.tolist() == sorted(b.tolist())
    if partition == "alternating":
        assert a.tolist() == list(range(0, n, 2))
    if partition == "sequential":
        assert a.tolist() == list(range((n + 1) // 2))


def test_sequential_partition_merges_across_the_halves():
    # Tokens 0 and 1 are nearly the same: alternating pairs them (A = 0, 2; B = 1, 3); sequential puts both in A
    # (A = 0, 1; B = 2, 3), so token 1 goes to its best B partner, token 3.
    metric = torch.tensor([[[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.8, 0.6]]])
    assert pairs(bipartite_soft_matching(metric, 1, 0, partition="alternating"), 4) == {(0, 1)}
    assert pairs(bipartite_soft_matching(metric, 1, 0, partition="sequential"), 4) == {(1, 3)}


@pytest.mark.parametrize(("combine", "expected"), [("weighted", 1.5), ("mean", 2.0), ("max", 3.0), ("keep", 3.0)])
def test_combine_modes_on_a_known_pair(combine, expected):
    # Token 0 (value 1, size 3) merges into token 1 (value 3, size 1).
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    x = torch.tensor([[[1.0], [3.0]]])
    size = torch.tensor([[[3.0], [1.0]]])
    merge = bipartite_soft_matching(metric, 1, 0, combine=combine)
    out, new_size, _ = merge_tokens(merge, x, size, None)
    assert out.shape == (1, 1, 1) and float(out) == pytest.approx(expected)
    assert float(new_size) == 4.0  # sizes always add up: proportional attention still sees both patches


@SETTINGS
@given(
    st.integers(1, 3),
    st.integers(3, 30),
    st.integers(0, 3),
    st.integers(0, 30),
    st.sampled_from(OPTIONS),
    st.integers(0, 2**31 - 1),
)
def test_every_option_keeps_the_token_budget_and_the_prefix(b, n, p, r, option, seed):
    p = min(p, n - 1)
    g = torch.Generator().manual_seed(seed)
    k, q, v = (torch.randn(b, 2, n, 4, generator=g) for _ in range(3))
    x = torch.randn(b, n, 8, generator=g)
    per_head = {"k": k, "q": q, "v": v}
    tokens = LayerTokens(
        metric=k.mean(1),
        size=None,
        num_prefix_tokens=p,
        layer=2,
        features=lambda kind, heads: (
            x
            if kind == "x"
            else per_head[kind].mean(1)
            if heads == "mean"
            else per_head[kind].transpose(1, 2).flatten(2)
        ),
    )
    merge = REDUCERS.get("tome")(tokens, r, **dict([option]))
    out, size, _ = merge_tokens(merge, x, None, None)
    assert out.shape == (b, n - min(r, (n - p) // 2), 8)
    assert torch.equal(size.sum(dim=(1, 2)), torch.full((b,), float(n)))
    assert torch.equal(out[:, :p], x[:, :p])


def test_features_and_heads_reach_the_similarity_in_a_real_vit(tiny_vit):
    model = tiny_vit
    images = torch.randn(2, 3, 160, 160)
    token_maps = {}
    for option in [()] + [(o,) for o in OPTIONS if o[0] in ("features", "heads", "partition", "distance")]:
        tomebench.patch(model, "tome", 8, trace_source=True, **dict(option))
        with torch.no_grad():
            _, state = forward_with_state(model, images)
        assert state.size.shape[1] == 101 - 6 * 8  # the same budget for every option
        token_maps[option] = state.source
    tomebench.unpatch(model)
    default = token_maps.pop(())
    for option, source in token_maps.items():
        assert not torch.equal(source, default), f"{option} merged exactly what the defaults merged"


def test_bad_option_values_are_refused_with_the_choices():
    with pytest.raises(UsageError, match="tome.distance=manhattan: choose one of cosine, dot, euclidean"):
        check_reducer_options({"tome": {"distance": "manhattan"}})
    with pytest.raises(UsageError, match="tome.seed='x': expected a value of type int"):
        check_reducer_options({"tome": {"seed": "x"}})
    check_reducer_options({"tome": {"features": "q", "heads": "concat", "seed": 3}})
