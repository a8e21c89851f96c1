"""Invariants of bipartite soft matching and `merge_tokens` (the maths of ToMe, no model involved), and its order of
tokens on hand-made layers."""

from __future__ import annotations

import torch
from hypothesis import given, settings

from tests.reducers.layers import (
    expected_tokens,
    layers,
)
from tomebench.reducers import IDENTITY, REDUCERS, LayerTokens, max_r, merge_tokens
from tomebench.reducers.tome import bipartite_soft_matching

SETTINGS = settings(max_examples=100, deadline=None)


def identity_source(b: int, n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64).expand(b, n, n).clone()  # (B, N, N0)


@SETTINGS
@given(layers())
def test_token_count_sizes_and_prefix_from_no_size(layer):
    metric, x, _, p, r, _ = layer
    b, n, c = x.shape
    merge = bipartite_soft_matching(metric, r, p)
    out, size, _ = merge_tokens(merge, x, None, None)

    n_out = expected_tokens(n, p, r)
    assert out.shape == (b, n_out, c)
    assert size.shape == (b, n_out, 1)
    # Every input patch is counted exactly once.
    assert torch.equal(size.sum(dim=(1, 2)), torch.full((b,), float(n), dtype=size.dtype))
    assert torch.all(size >= 1)
    # Prefix tokens are untouched and stay in front (x * 1 / 1 is exact).
    assert torch.equal(out[:, :p], x[:, :p])
    assert torch.equal(size[:, :p], torch.ones(b, p, 1, dtype=size.dtype))


@SETTINGS
@given(layers(given_size=True))
def test_sizes_and_weighted_sum_preserved_from_given_size(layer):
    metric, x, size_in, p, r, _ = layer
    b, n, c = x.shape
    merge = bipartite_soft_matching(metric, r, p)
    out, size, _ = merge_tokens(merge, x, size_in, None)

    assert out.shape == (b, expected_tokens(n, p, r), c)
    assert torch.equal(size.sum(dim=1), size_in.sum(dim=1))
    # The size-weighted mean of the features is invariant under merging.
    torch.testing.assert_close((out * size).sum(dim=1), (x * size_in).sum(dim=1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[:, :p], x[:, :p], rtol=1e-12, atol=1e-12)
    assert torch.equal(size[:, :p], size_in[:, :p])


@SETTINGS
@given(layers(given_size=True))
def test_source_is_a_partition_of_the_input_patches(layer):
    metric, x, size_in, p, r, _ = layer
    b, n, _ = x.shape
    # Two rounds, so that the second one merges tokens that already stand for several patches.
    source = identity_source(b, n)
    size = None
    for round_r in (r, max(r // 2, 1)):
        merge = bipartite_soft_matching(metric, round_r, p)
        x, size, source = merge_tokens(merge, x, size, source)
        metric = merge(metric, "mean")

    n_out = x.shape[1]
    assert source.shape == (b, n_out, n)
    assert torch.all((source == 0) | (source == 1))
    assert torch.equal(source.sum(dim=1), torch.ones(b, n, dtype=source.dtype))  # each patch in one token
    assert torch.equal(source.sum(dim=-1, keepdim=True), size)  # a token's size counts its patches
    # Prefix tokens stand only for themselves.
    assert torch.equal(source[:, :p, :p], torch.eye(p, dtype=source.dtype).expand(b, p, p))


@SETTINGS
@given(layers())
def test_each_output_token_is_the_mean_of_its_patches(layer):
    metric, x, _, p, r, _ = layer
    b, n, _ = x.shape
    merge = bipartite_soft_matching(metric, r, p)
    out, size, source = merge_tokens(merge, x, None, identity_source(b, n))
    # Independent formulation: average the input rows named by each source row.
    expected = (source @ x) / source.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(layers(given_size=True))
def test_r_zero_is_identity(layer):
    metric, x, size_in, p, _, _ = layer
    merge = bipartite_soft_matching(metric, 0, p)
    assert merge is IDENTITY
    assert merge(x) is x
    out, size, source = merge_tokens(merge, x, None, None)
    assert torch.equal(out, x)
    assert torch.equal(size, torch.ones_like(x[..., :1]))
    assert source is None
    out, size, _ = merge_tokens(merge, x, size_in, None)
    assert torch.equal(size, size_in)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(layers())
def test_registered_reducer_matches_matcher_and_clamps(layer):
    metric, x, _, p, r, _ = layer
    n = x.shape[1]
    merge = REDUCERS.get("tome")(LayerTokens(metric=metric, size=None, num_prefix_tokens=p), r)
    assert merge(x).shape[1] == n - min(r, max_r(n, p))
    assert torch.equal(merge(x), bipartite_soft_matching(metric, r, p)(x))


def test_identical_a_b_pair_is_merged_first():
    # The authors' split runs over the whole sequence (P=1): A = 0 (cls), 2, 4, 6; B = 1, 3, 5. Make A token 2
    # equal to B token 5, every other pair clearly dissimilar (orthogonal directions).
    p = 1
    metric = torch.zeros(1, 7, 7)
    for pos in (0, 1, 3, 4, 6):
        metric[0, pos, pos] = 1.0
    metric[0, 2, 2] = metric[0, 5, 2] = 1.0
    x = torch.arange(7, dtype=torch.float32).reshape(1, 7, 1) * 10  # token i carries value 10 i
    out, size, _ = merge_tokens(bipartite_soft_matching(metric, 1, p), x, None, None)

    # Layout [cls, unmerged A in token order, B]: token 2 vanished into token 5 -> value (20 + 50) / 2.
    assert out[0, :, 0].tolist() == [0.0, 40.0, 60.0, 10.0, 30.0, 35.0]
    assert size[0, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0]


def test_prefix_tokens_are_protected_by_their_scores_not_left_out_of_the_split():
    # P = 2 (cls, distillation): A = 0 (cls), 2, 4, 6; B = 1 (dist), 3, 5, 7. A tokens 2 and 4 are identical and
    # so are B tokens 3 and 5; the cls token looks exactly like B token 3 and A token 6 exactly like the
    # distillation token, yet neither prefix token may take part: the only allowed close pair is (6, 7).
    p = 2
    metric = torch.zeros(1, 8, 4)
    metric[0, 2, 0] = metric[0, 4, 0] = 1.0  # A, A
    metric[0, 0, 1] = metric[0, 3, 1] = metric[0, 5, 1] = 1.0  # cls (A), B, B
    metric[0, 1, 2] = metric[0, 6, 2] = 1.0  # dist (B), A
    metric[0, 7, 2], metric[0, 7, 3] = 1.0, 0.01  # B, nearly A token 6
    x = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)
    out, size, source = merge_tokens(bipartite_soft_matching(metric, 1, p), x, None, torch.eye(8)[None])

    # [cls, dist, unmerged A in order, B in order], as the authors' code lays out distilled models.
    assert out[0, :, 0].tolist() == [0.0, 1.0, 2.0, 4.0, 3.0, 5.0, 6.5]
    assert source[0, -1].nonzero().flatten().tolist() == [6, 7]
    assert size.sum().item() == 8.0


def test_without_prefix_tokens_unmerged_a_stays_in_score_order():
    # P = 0: A = 0, 2, 4, 6; B = 1, 3, 5, 7. A token 6 is closest to its partner, then 0, then 4, then 2; the
    # authors' code leaves the unmerged A tokens in that descending-score order when nothing needs to lead.
    metric = torch.zeros(1, 8, 8)
    for a, b, w in ((6, 7, 0.0), (0, 1, 0.2), (4, 5, 0.4), (2, 3, 0.8)):
        metric[0, a, a] = metric[0, b, a] = 1.0
        metric[0, b, b] = w
    x = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)
    out = bipartite_soft_matching(metric, 1, 0)(x)
    assert out[0, :3, 0].tolist() == [0.0, 4.0, 2.0]  # A token 6 merged; the rest by score, not position


def test_r_is_clamped_to_half_the_non_prefix_tokens():
    metric = torch.randn(2, 11, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 11, 4)
    for p, expected in ((0, 6), (1, 6), (3, 7), (4, 8)):
        merge = bipartite_soft_matching(metric, 100, p)
        assert merge(x).shape == (2, expected, 4), p
