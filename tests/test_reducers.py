"""Every registered reducer against the shared invariants, each one's own behaviour, and all of them in timm ViTs."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import Attention

import tomebench
from tomebench.errors import UsageError
from tomebench.patch import forward_with_state, token_counts
from tomebench.patch.attention import attention as _attention
from tomebench.reducers import REDUCERS, LayerTokens, Layout, max_r, merge_tokens
from tomebench.reducers.kmeans import kmeans_assign

SETTINGS = settings(max_examples=60, deadline=None)
REDUCER_NAMES = ("tome", "prune", "attn-prune", "kmeans")
MERGING = ("tome", "kmeans")
PRUNING = ("prune", "attn-prune")


@st.composite
def layers(draw, given_size: bool = False):
    """A random layer: metric (B, N, C), features x (B, N, C), sizes (B, N, 1) or None, prefix P < N, r,
    and attention scores (B, N) for attn-prune's thunks."""
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


def tokens_for(metric, size, p, scores=None, layer: int = 0, has_cls: bool = True) -> LayerTokens:
    """LayerTokens whose attention thunks return fixed scores (B, N), as `_AttentionParts.with_context` would."""
    scores = torch.rand(metric.shape[:2], dtype=metric.dtype) if scores is None else scores
    return LayerTokens(
        metric=metric,
        size=size,
        num_prefix_tokens=p,
        layer=layer,
        cls_attention=(lambda: scores) if has_cls else None,
        mean_attention=lambda: scores,
    )


def reduce(name, metric, x, size, p, r, scores=None, layer: int = 0, **options):
    merge = REDUCERS.get(name)(tokens_for(metric, size, p, scores, layer), r, **options)
    return merge_tokens(merge, x, size, None)


def expected_tokens(n: int, p: int, r: int) -> int:
    return n - min(r, (n - p) // 2)


def row_indices(out: torch.Tensor, x: torch.Tensor) -> list[list[int]]:
    """For each batch element, the input row index that each output row equals exactly (fails if none or several)."""
    result = []
    for ob, xb in zip(out, x):
        matches = (ob[:, None, :] == xb[None, :, :]).all(dim=-1)  # (N_out, N_in)
        assert torch.all(matches.sum(dim=1) == 1), "an output row is not an exact copy of exactly one input row"
        result.append(matches.float().argmax(dim=1).tolist())
    return result


# ---------------------------------------------------------------- invariants every reducer shares


@pytest.mark.parametrize("name", REDUCER_NAMES)
@SETTINGS
@given(layer=layers())
def test_same_budget_as_tome_and_prefix_untouched(name, layer):
    metric, x, _, p, r, scores = layer
    b, n, c = x.shape
    out, size, _ = reduce(name, metric, x, None, p, r, scores)
    n_out = expected_tokens(n, p, r)
    assert out.shape == (b, n_out, c) and size.shape == (b, n_out, 1)
    # Prefix tokens are untouched (x * 1 / 1 is exact) and stay in front.
    assert torch.equal(out[:, :p], x[:, :p])
    assert torch.equal(size[:, :p], torch.ones(b, p, 1, dtype=size.dtype))


@pytest.mark.parametrize("name", REDUCER_NAMES)
@SETTINGS
@given(layer=layers(given_size=True))
def test_budget_and_prefix_with_given_sizes(name, layer):
    metric, x, size_in, p, r, scores = layer
    b, n, c = x.shape
    out, size, _ = reduce(name, metric, x, size_in, p, r, scores)
    assert out.shape == (b, expected_tokens(n, p, r), c)
    assert torch.equal(size[:, :p], size_in[:, :p])
    torch.testing.assert_close(out[:, :p], x[:, :p], rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", REDUCER_NAMES)
@SETTINGS
@given(layer=layers(given_size=True), seed=st.integers(0, 1000))
def test_deterministic_for_the_same_inputs_and_seed(name, layer, seed):
    metric, x, size_in, p, r, scores = layer
    options = {"seed": seed} if name == "prune" else {}
    first = reduce(name, metric, x, size_in, p, r, scores, layer=3, **options)
    second = reduce(name, metric.clone(), x.clone(), size_in.clone(), p, r, scores.clone(), layer=3, **options)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("name", REDUCER_NAMES)
@SETTINGS
@given(layer=layers(given_size=True))
def test_r0_is_identity(name, layer):
    metric, x, size_in, p, _, scores = layer
    merge = REDUCERS.get(name)(tokens_for(metric, size_in, p, scores), 0)
    assert merge(x) is x
    out, size, _ = merge_tokens(merge, x, size_in, None)
    torch.testing.assert_close(out, x, rtol=1e-14, atol=0)
    assert torch.equal(size, size_in)


# ---------------------------------------------------------------- merging reducers: nothing is lost


@pytest.mark.parametrize("name", MERGING)
@SETTINGS
@given(layer=layers())
def test_merging_counts_every_patch_once(name, layer):
    metric, x, _, p, r, scores = layer
    b, n, _ = x.shape
    out, size, _ = reduce(name, metric, x, None, p, r, scores)
    assert torch.equal(size.sum(dim=(1, 2)), torch.full((b,), float(n), dtype=size.dtype))
    assert torch.all(size >= 1)
    if min(r, max_r(n, p)) > 0:
        assert size.max() >= 2  # something really was merged
    torch.testing.assert_close((out * size).sum(dim=1), x.sum(dim=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MERGING)
@SETTINGS
@given(layer=layers(given_size=True))
def test_merging_preserves_sizes_and_weighted_sum(name, layer):
    metric, x, size_in, p, r, scores = layer
    out, size, _ = reduce(name, metric, x, size_in, p, r, scores)
    assert torch.equal(size.sum(dim=1), size_in.sum(dim=1))
    torch.testing.assert_close((out * size).sum(dim=1), (x * size_in).sum(dim=1), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- pruning reducers: kept rows are copies


@pytest.mark.parametrize("name", PRUNING)
@SETTINGS
@given(layer=layers())
def test_pruning_keeps_exact_copies_in_order(name, layer):
    metric, x, _, p, r, scores = layer
    n = x.shape[1]
    out, size, _ = reduce(name, metric, x, None, p, r, scores)
    for kept in row_indices(out[:, p:], x):
        assert all(i >= p for i in kept)  # no prefix token reappears among the rest
        assert kept == sorted(set(kept))  # no duplicates, original order
        assert len(kept) == expected_tokens(n, p, r) - p
    assert torch.equal(size, torch.ones_like(size))


@pytest.mark.parametrize("name", PRUNING)
@SETTINGS
@given(layer=layers(given_size=True))
def test_pruning_keeps_sizes_of_kept_tokens(name, layer):
    metric, x, size_in, p, r, scores = layer
    b, n, c = x.shape
    ids = torch.arange(n, dtype=torch.float64).expand(b, n)[..., None]  # (B, N, 1): (i * s) / s is exact
    out, size, _ = reduce(name, metric, torch.cat([x, ids], dim=-1), size_in, p, r, scores)
    kept = out[..., -1].long()  # (B, N_out) input index of each output token
    assert torch.equal(out[..., -1], kept.to(out.dtype))
    assert torch.equal(kept[:, :p], torch.arange(p).expand(b, p))
    assert torch.all(kept[:, p + 1 :] > kept[:, p:-1])  # strictly increasing: distinct and in order
    assert torch.equal(size, size_in.gather(1, kept[..., None]))
    assert torch.equal(size.sum(dim=1), size_in.gather(1, kept[..., None]).sum(dim=1))
    torch.testing.assert_close(out[..., :c], x.gather(1, kept[..., None].expand(-1, -1, c)), rtol=1e-14, atol=0)


# ---------------------------------------------------------------- random pruning


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


# ---------------------------------------------------------------- attention pruning


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


@pytest.mark.parametrize("cls_only", [True, False])
def test_received_attention_is_proportional(cls_only):
    """The scores attn-prune ranks by: softmax(q k^T * scale + log size), mean over heads (and queries)."""
    torch.manual_seed(0)
    b, n, heads, dim = 2, 7, 2, 8
    attn = Attention(dim, num_heads=heads, qkv_bias=True).eval()
    x = torch.randn(b, n, dim)
    size = torch.randint(1, 6, (b, n, 1)).float()
    size[:, 0] = 1
    with torch.no_grad():
        _, parts = _attention(attn, x, size, reducing=True)
        tokens = parts.tokens(size, 1, 0, cls_only, x, 1)
        got = tokens.cls_attention() if cls_only else tokens.mean_attention()
        if not cls_only:
            assert tokens.cls_attention is None
        q, k, _ = attn.qkv(x).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # (B, H, N, D) each
        logits = q @ k.transpose(-2, -1) * (dim // heads) ** -0.5  # (B, H, N, N)
        plain = logits.softmax(dim=-1)
        weighted = (logits + size.log()[:, None, None, :, 0]).softmax(dim=-1)
        if cls_only:
            plain, weighted = plain[:, :, :1], weighted[:, :, :1]
        expected = weighted.mean(dim=(1, 2))  # (B, N)
    assert got.shape == (b, n)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got - plain.mean(dim=(1, 2))).abs().max() > 1e-3  # sizes really changed the scores
    torch.testing.assert_close(got.sum(dim=-1), torch.ones(b))


# ---------------------------------------------------------------- k-means merging


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
@given(b=st.integers(1, 3), m=st.integers(1, 40), k_frac=st.floats(0.0, 1.0), iters=st.integers(0, 4),
       seed=st.integers(0, 2**31 - 1))
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


# ---------------------------------------------------------------- inside real timm models


@pytest.fixture(scope="module")
def vits():
    """test_vit (cls token) and test_vit2 (a register token, no cls, avg pool); random weights, eval mode."""
    torch.manual_seed(0)
    built = {name: timm.create_model(name, pretrained=False).eval() for name in ("test_vit", "test_vit2")}
    images = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    return built, images


@pytest.mark.parametrize("model_name", ["test_vit", "test_vit2"])
@pytest.mark.parametrize("name", REDUCER_NAMES)
def test_every_reducer_in_a_real_vit(vits, model_name, name):
    built, images = vits
    model = built[model_name]
    try:
        tomebench.patch(model, name, 4, trace_source=True)
        with torch.no_grad():
            logits, state = forward_with_state(model, images)
        n_final = token_counts(model)[1][-1]
    finally:
        tomebench.unpatch(model)
    n0 = 101
    assert n_final == n0 - 4 * len(model.blocks)
    assert torch.isfinite(logits).all() and logits.shape == (2, model.num_classes)
    assert state.source.shape == (2, n_final, n0)
    if name in MERGING:
        # Sizes count the input patches each token holds.
        assert state.size.shape == (2, n_final, 1)
        assert torch.equal(state.size[..., 0], state.source.sum(dim=-1))
        assert torch.equal(state.source.sum(dim=1), torch.ones(2, n0))  # every input patch in exactly one token
    else:
        # Nothing was combined: every size is 1, left implicit (None) so attention needs no bias.
        assert state.size is None
        assert torch.equal(state.source.sum(dim=-1), torch.ones(2, n_final))
        assert state.source.sum(dim=1).max() == 1 and state.source.sum() == 2 * n_final
    # The prefix token stays first and alone.
    assert torch.equal(state.source[:, 0], F.one_hot(torch.zeros(2, dtype=torch.long), n0).to(state.source.dtype))


def test_attn_prune_score_cls_is_refused_when_patching_a_model_without_cls(vits):
    built, images = vits
    model = built["test_vit2"]
    try:
        with pytest.raises(UsageError, match="cls"):  # at patch time, before any forward
            tomebench.patch(model, "attn-prune", 4, score="cls")
        assert type(model).__name__ == "VisionTransformer"  # the refused patch left the model untouched
        tomebench.patch(model, "attn-prune", 4, score="auto")
        with torch.no_grad():
            assert torch.isfinite(model(images)).all()
    finally:
        tomebench.unpatch(model)


# ---------------------------------------------------------------- seeded draws and compilation

def test_seeded_keys_are_distinct_deterministic_and_seed_dependent():
    from tomebench.reducers.base import seeded_keys

    keys = seeded_keys(7, 500)
    assert keys.dtype == torch.int64 and len(set(keys.tolist())) == 500  # a bijective hash: never a tie
    assert torch.equal(keys, seeded_keys(7, 500)) and not torch.equal(keys, seeded_keys(8, 500))
    assert torch.equal(seeded_keys(7, 100), keys[:100])  # position i's key does not depend on n
    # Not the identity order: the ranks of consecutive positions look shuffled.
    order = keys.argsort()
    assert (order[1:] > order[:-1]).float().mean().item() < 0.7


@pytest.mark.parametrize("name, options", [("tome", {}), ("tome", {"partition": "random"}), ("prune", {}),
                                           ("attn-prune", {}), ("kmeans", {})])
def test_patched_forward_traces_without_graph_breaks(name, options):
    model = tomebench.patch(timm.create_model("test_vit", pretrained=False, img_size=64).eval(), name, 4, **options)
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert explained.graph_break_count == 0, [str(reason.reason)[:200] for reason in explained.break_reasons]
    assert explained.graph_count == 1
