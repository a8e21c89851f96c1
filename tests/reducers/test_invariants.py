"""Every registered reducer (read from the registry, plug-ins included) against the shared invariants: tokens out
= N - r, prefix tokens untouched, r = 0 is the identity, deterministic; merging loses no patch, pruning keeps exact
copies; and each one inside real timm ViTs, traced by torch.compile without a graph break."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tomebench
from tests.helpers import make_vit
from tests.reducers.layers import (
    KINDS,
    MERGING,
    NAMES,
    PRUNING,
    expected_final,
    expected_tokens,
    layers,
    reduce,
    row_indices,
    runnable_options,
    tokens_for,
)
from tomebench.errors import UsageError
from tomebench.patch import forward_with_state, layout, token_counts
from tomebench.reducers import REDUCERS, merge_tokens

SETTINGS = settings(max_examples=60, deadline=None)


def pools_by_size(name: str, metric, x, size, p: int, r: int, scores) -> bool:
    """Whether the reducer's plan averages merged tokens by size (ToMe's rule, which keeps the size-weighted sum);
    MCTF's default pools by attention x size instead."""
    return REDUCERS.get(name)(tokens_for(metric, size, p, scores, x=x), r).combine == "weighted"


def options_with_seed(name: str, seed: int) -> dict:
    """The seed for a reducer that takes one (prune; tome's only matters with partition=random)."""
    return {"seed": seed} if any(option.name == "seed" for option in REDUCERS.get(name).options) else {}


def prefix_kept(name: str) -> dict:
    """The options under which a reducer keeps every prefix token in front: a reducer whose authors protect only
    the cls token (EViT, PPT) offers `protect_prefix` for the others (its own tests cover the authors' rule)."""
    return {"protect_prefix": True} if any(o.name == "protect_prefix" for o in REDUCERS.get(name).options) else {}


# ---------------------------------------------------------------- invariants every reducer shares


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(layer=layers())
def test_same_budget_as_tome_and_prefix_untouched(name, layer):
    metric, x, _, p, r, scores = layer
    b, n, c = x.shape
    out, size, _ = reduce(name, metric, x, None, p, r, scores, **prefix_kept(name))
    n_out = expected_tokens(n, p, r, name)
    assert out.shape == (b, n_out, c) and size.shape == (b, n_out, 1)
    # Prefix tokens are untouched (x * 1 / 1 is exact) and stay in front.
    assert torch.equal(out[:, :p], x[:, :p])
    assert torch.equal(size[:, :p], torch.ones(b, p, 1, dtype=size.dtype))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(layer=layers(given_size=True))
def test_budget_and_prefix_with_given_sizes(name, layer):
    metric, x, size_in, p, r, scores = layer
    b, n, c = x.shape
    out, size, _ = reduce(name, metric, x, size_in, p, r, scores, **prefix_kept(name))
    assert out.shape == (b, expected_tokens(n, p, r, name), c)
    assert torch.equal(size[:, :p], size_in[:, :p])
    torch.testing.assert_close(out[:, :p], x[:, :p], rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(layer=layers(given_size=True), seed=st.integers(0, 1000))
def test_deterministic_for_the_same_inputs_and_seed(name, layer, seed):
    metric, x, size_in, p, r, scores = layer
    options = options_with_seed(name, seed)
    first = reduce(name, metric, x, size_in, p, r, scores, layer=3, **options)
    second = reduce(name, metric.clone(), x.clone(), size_in.clone(), p, r, scores.clone(), layer=3, **options)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("name", NAMES)
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
    if min(r, REDUCERS.get(name).most(n, p)) > 0:
        assert size.max() >= 2  # something really was merged
    if pools_by_size(name, metric, x, None, p, r, scores):
        torch.testing.assert_close((out * size).sum(dim=1), x.sum(dim=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MERGING)
@SETTINGS
@given(layer=layers(given_size=True))
def test_merging_preserves_sizes_and_weighted_sum(name, layer):
    metric, x, size_in, p, r, scores = layer
    out, size, _ = reduce(name, metric, x, size_in, p, r, scores)
    assert torch.equal(size.sum(dim=1), size_in.sum(dim=1))
    if pools_by_size(name, metric, x, size_in, p, r, scores):
        torch.testing.assert_close((out * size).sum(dim=1), (x * size_in).sum(dim=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MERGING)
@SETTINGS
@given(layer=layers())
def test_merging_sources_partition_the_input_patches(name, layer):
    metric, x, _, p, r, scores = layer
    b, n, _ = x.shape
    source = torch.eye(n, dtype=torch.float64).expand(b, n, n).clone()  # (B, N, N0): each token is itself
    plan = REDUCERS.get(name)(tokens_for(metric, None, p, scores, x=x), r)
    _, size, source = merge_tokens(plan, x, None, source)
    assert source.shape == (b, expected_tokens(n, p, r, name), n)
    assert torch.all((source == 0) | (source == 1))
    assert torch.equal(source.sum(dim=1), torch.ones(b, n, dtype=source.dtype))  # each patch in one token
    assert torch.equal(source.sum(dim=-1, keepdim=True), size)  # a token's size counts its patches
    # Prefix tokens stand only for themselves.
    assert torch.equal(source[:, :p, :p], torch.eye(p, dtype=source.dtype).expand(b, p, p))


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
        assert len(kept) == expected_tokens(n, p, r, name) - p
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


# ---------------------------------------------------------------- inside real timm models


@pytest.fixture(scope="module")
def vits():
    """test_vit (cls token) and test_vit2 (a register token, no cls, avg pool); random weights, eval mode."""
    built = {name: make_vit(name) for name in ("test_vit", "test_vit2")}
    images = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    return built, images


@pytest.mark.parametrize("model_name", ["test_vit", "test_vit2"])
@pytest.mark.parametrize("name", NAMES)
def test_every_reducer_in_a_real_vit(vits, model_name, name):
    built, images = vits
    model = built[model_name]
    spec = REDUCERS.get(name)
    reason = spec.refuses(spec.defaults(), layout(model)) if spec.refuses else None
    if reason:  # a layout its rules cannot run (no cls token to rank by): refused when planned, in one line
        with pytest.raises(UsageError, match=reason[:20]):
            tomebench.patch(model, name, 4)
        return
    options = runnable_options(name, model, 4)
    try:
        tomebench.patch(model, name, 4, trace_source=True, **options)
        with torch.no_grad():
            logits, state = forward_with_state(model, images)
        n_final = token_counts(model)[1][-1]
    finally:
        tomebench.unpatch(model)
    n0 = 101
    assert n_final == expected_final(name, model, 4, options)
    spec = REDUCERS.get(name)
    if spec.budget is None:  # 4 in every block the reducer acts in (MCTF's authors skip the first)
        removed = 0 if KINDS[name] == "none" else sum(spec.only_active((4,) * len(model.blocks), {}, layout(model)))
        assert n_final == n0 - removed
    assert torch.isfinite(logits).all() and logits.shape == (2, model.num_classes)
    assert state.source.shape == (2, n_final, n0)
    if KINDS[name] == "merge":
        # Sizes count the input patches each token holds.
        assert state.size.shape == (2, n_final, 1)
        assert torch.equal(state.size[..., 0], state.source.sum(dim=-1))
        assert torch.equal(state.source.sum(dim=1), torch.ones(2, n0))  # every input patch in exactly one token
    elif KINDS[name] in ("prune", "none"):
        # Nothing was combined: every size is 1, left implicit (None) so attention needs no bias.
        assert state.size is None
        assert torch.equal(state.source.sum(dim=-1), torch.ones(2, n_final))
        assert state.source.sum(dim=1).max() == 1 and state.source.sum() == 2 * n_final
    # The prefix token stays first and alone.
    assert torch.equal(state.source[:, 0], F.one_hot(torch.zeros(2, dtype=torch.long), n0).to(state.source.dtype))


# Every reducer with its defaults, and the one option that draws a different split per block.
TRACED = [pytest.param(name, {}, id=name) for name in NAMES] + [
    pytest.param("tome", {"partition": "random"}, id="tome-partition=random")
]


@pytest.mark.parametrize("name, options", TRACED)
def test_patched_forward_traces_without_graph_breaks(name, options):
    model = timm.create_model("test_vit", pretrained=False, img_size=64).eval()
    model = tomebench.patch(model, name, 4, **options, **runnable_options(name, model, 4))
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert explained.graph_break_count == 0, [str(reason.reason)[:200] for reason in explained.break_reasons]
    assert explained.graph_count == 1
