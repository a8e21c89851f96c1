"""k-means merging: clusters gather tokens of one direction, no cluster empties, sizes weigh the centroids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reducers.layers import (
    reduce,
    tokens_for,
)
from tomebench.errors import UsageError
from tomebench.reducers import REDUCERS, merge_tokens
from tomebench.reducers.kmeans import kmeans_assign

SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(
    b=st.integers(1, 3),
    m=st.integers(2, 40),
    p=st.integers(0, 4),
    r_frac=st.floats(0.01, 1.0),
    iters=st.integers(0, 4),
    given_size=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_kmeans_merges_tokens_of_the_same_direction(b, m, p, r_frac, iters, given_size, seed):
    """k directions; every token is a positive multiple of one; each direction's first token sits where k-means
    seeds a cluster. Then every cluster must gather exactly the tokens of its direction."""
    g = torch.Generator().manual_seed(seed)
    r = max(1, round(r_frac * (m // 2))) if m >= 2 else 0
    k = m - r
    c = 16
    directions = F.normalize(torch.randn(b, k, c, generator=g, dtype=torch.float64), dim=-1)  # (B, k, C)
    seeds = [i * m // k for i in range(k)]
    label = torch.randint(0, k, (b, m), generator=g)
    label[:, seeds] = torch.arange(k)
    scale = torch.rand(b, m, 1, generator=g, dtype=torch.float64) + 0.5
    rest = directions.gather(1, label[..., None].expand(-1, -1, c)) * scale  # (B, M, C)
    prefix = torch.randn(b, p, c, generator=g, dtype=torch.float64)
    metric = torch.cat([prefix, rest], dim=1)
    size_in = torch.randint(1, 6, (b, p + m, 1), generator=g).double() if given_size else None

    assert torch.equal(kmeans_assign(rest, None if size_in is None else size_in[:, p:], k, iters), label)

    x = torch.randn(b, p + m, 3, generator=g, dtype=torch.float64)
    out, size, _ = reduce("kmeans", metric, x, size_in, p, r, iters=iters)
    weights = torch.ones(b, p + m, 1, dtype=torch.float64) if size_in is None else size_in
    onehot = F.one_hot(label, k).double()  # (B, M, k)
    expected_size = onehot.transpose(1, 2) @ weights[:, p:]  # (B, k, 1)
    assert torch.equal(size[:, p:], expected_size)
    expected_x = (onehot.transpose(1, 2) @ (x[:, p:] * weights[:, p:])) / expected_size
    torch.testing.assert_close(out[:, p:], expected_x, rtol=1e-10, atol=1e-10)


@SETTINGS
@given(
    b=st.integers(1, 3),
    m=st.integers(1, 40),
    k_frac=st.floats(0.0, 1.0),
    iters=st.integers(0, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_kmeans_never_leaves_a_cluster_empty(b, m, k_frac, iters, seed):
    k = max(1, round(k_frac * m))
    same = torch.randn(1, 1, 5, generator=torch.Generator().manual_seed(seed)).expand(b, m, 5)  # all identical
    assign = kmeans_assign(same, None, k, iters)
    assert assign.shape == (b, m)
    for row in assign:
        assert sorted(set(row.tolist())) == list(range(k))


def test_kmeans_iters_option():
    metric = torch.randn(2, 12, 4)
    x = torch.randn(2, 12, 4)
    fn = REDUCERS.get("kmeans")
    out, size, _ = merge_tokens(fn(tokens_for(metric, None, 1), 4, iters=0), x, None, None)
    assert out.shape == (2, 8, 4) and torch.equal(size.sum(dim=1), torch.full((2, 1), 12.0))
    with pytest.raises(UsageError, match="iters"):  # checked once, when planned
        fn.check({"iters": -1})


def test_kmeans_centroids_are_size_weighted():
    """Token 1 (50 deg) starts nearer the 90 deg anchor; once token 3 (35 deg) weighs 100 patches, cluster 0's
    centroid moves next to token 1, which then switches. Unweighted, it stays with the 90 deg anchor."""
    angles = torch.tensor([0.0, 50.0, 90.0, 35.0]).deg2rad()
    metric = torch.stack([angles.cos(), angles.sin()], dim=-1)[None].double()  # (1, 4, 2); seeds: tokens 0 and 2
    assert kmeans_assign(metric, None, 2, iters=0).tolist() == [[0, 1, 1, 0]]
    assert kmeans_assign(metric, None, 2, iters=1).tolist() == [[0, 1, 1, 0]]
    heavy = torch.tensor([1.0, 1.0, 1.0, 100.0]).double()[None, :, None]
    assert kmeans_assign(metric, heavy, 2, iters=1).tolist() == [[0, 0, 1, 0]]
