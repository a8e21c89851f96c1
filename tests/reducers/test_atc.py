"""ATC (agglomerative token clustering): the batched clustering gives scikit-learn's partitions (the authors' own
call) for every linkage, on random metrics and on keys saved from a real ViT; ties go to the first pair; the
authors' count (r - 1 per block with a cls token) by default and exactly r with `exact_r`; r that removes nothing
is the unpatched model; the dtype follows the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import AgglomerativeClustering

from tests.patch.vits import build
from tests.patch.vits import images as vit_images
from tomebench.patch import forward_with_state, patch, unpatch
from tomebench.patch import layout as plan_layout
from tomebench.reducers import REDUCERS, LayerTokens, merge_tokens
from tomebench.reducers.atc import agglomerate, distances
from tomebench.schedule import CONSTANT

LINKAGES = ("average", "single", "complete")


def canonical(labels) -> list[int]:
    """A partition as labels numbered by first appearance, so two labellings of one partition compare equal."""
    seen: dict[int, int] = {}
    return [seen.setdefault(int(label), len(seen)) for label in labels]


def sklearn_partitions(d: torch.Tensor, k: int, linkage: str) -> list[list[int]]:
    """What the authors run per image: scikit-learn on the (M, M) distances of each image of d (B, M, M)."""
    clustering = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage=linkage)
    return [canonical(clustering.fit(image).labels_) for image in d.numpy()]


def plan_assign(metric: torch.Tensor, p: int, r: int, **options) -> torch.Tensor:
    """(B, M) the registered reducer's cluster of each non-prefix token, for a block removing r."""
    tokens = LayerTokens(metric=metric, size=None, num_prefix_tokens=p)
    return REDUCERS.get("atc")(tokens, r, **options).assign[..., 0]


@pytest.mark.parametrize("linkage", LINKAGES)
@pytest.mark.parametrize("p", [1, 0], ids=["cls", "no-prefix"])
@pytest.mark.parametrize("n, r", [(17, 5), (24, 11), (65, 16), (50, 48)])
def test_the_clusters_are_sklearns_on_random_metrics(linkage, p, n, r):
    g = torch.Generator().manual_seed(n * 100 + r * 10 + p)
    metric = torch.randn(3, n + p, 8, generator=g)  # float32, as the authors' model gives it
    r = min(r, n - 1)
    assign = plan_assign(metric, p, r, linkage=linkage)
    assert assign.shape == (3, n) and assign.max() == n - r - 1
    assert [canonical(a) for a in assign.tolist()] == sklearn_partitions(distances(metric, p), n - r, linkage)
    assert all(a == canonical(a) for a in assign.tolist())  # clusters come numbered by their first token


def test_the_clusters_are_sklearns_on_keys_saved_from_a_vit(tmp_path):
    """Head-mean keys of every block of a tiny ViT (100 patches + cls), saved and reloaded: the metrics a real
    model gives, with their near ties, not only Gaussian noise."""
    model = build("test_vit")
    keys = []

    def capture(module, inputs, _out):
        t = inputs[0]  # (B, N, C), after norm1
        qkv = module.qkv(t).reshape(*t.shape[:2], 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        keys.append(qkv[1].mean(1))  # (B, N, D): ToMe's metric

    handles = [block.attn.register_forward_hook(capture) for block in model.blocks]
    with torch.no_grad():
        model(vit_images(model, 2))
    for handle in handles:
        handle.remove()
    torch.save(torch.stack(keys), tmp_path / "keys.pt")
    saved = torch.load(tmp_path / "keys.pt")  # (blocks, B, 101, D)
    assert saved.shape[:3] == (6, 2, 101)
    for block, metric in enumerate(saved):
        d = distances(metric, 1)
        for linkage in LINKAGES:
            for r in (16, 50) if block % 2 else (3, 99):
                ours = [canonical(a) for a in agglomerate(d, 100 - r, linkage).tolist()]
                assert ours == sklearn_partitions(d, 100 - r, linkage), (block, linkage, r)


def test_only_the_upper_triangle_is_read():
    """scikit-learn hands scipy X[i, j] for i < j; a matrix made asymmetric below the diagonal changes nothing."""
    d = distances(torch.randn(2, 30, 6, generator=torch.Generator().manual_seed(0)), 0)
    noisy = d + torch.tril(torch.rand(2, 30, 30), diagonal=-1)
    for linkage in LINKAGES:
        assert torch.equal(agglomerate(noisy, 12, linkage), agglomerate(d, 12, linkage))
        assert [canonical(a) for a in agglomerate(noisy, 12, linkage).tolist()] == sklearn_partitions(
            noisy, 12, linkage
        )


@pytest.mark.parametrize("linkage", LINKAGES)
def test_ties_go_to_the_first_pair(linkage):
    """All distances equal: the first pair in row-major order (0, 1) merges, its survivor keeps index 0, and every
    later tie is again (0, next): one cluster of the first r + 1 points, the others alone."""
    d = torch.ones(1, 8, 8)
    assert agglomerate(d, 5, linkage).tolist() == [[0, 0, 0, 0, 1, 2, 3, 4]]


def test_sizes_sources_and_the_size_weighted_average():
    g = torch.Generator().manual_seed(4)
    metric = torch.randn(2, 21, 5, generator=g, dtype=torch.float64)
    x = torch.randn(2, 21, 3, generator=g, dtype=torch.float64)
    size = torch.randint(1, 5, (2, 21, 1), generator=g).double()
    source = torch.eye(21, dtype=torch.float64).expand(2, 21, 21)
    tokens = LayerTokens(metric=metric, size=size, num_prefix_tokens=1)
    plan = REDUCERS.get("atc")(tokens, 7)
    out, new_size, new_source = merge_tokens(plan, x, size, source)
    onehot = torch.nn.functional.one_hot(plan.assign[..., 0], 13).double()  # (B, M, k)
    expected_size = onehot.transpose(1, 2) @ size[:, 1:]
    assert torch.equal(new_size[:, 1:], expected_size) and torch.equal(new_size[:, :1], size[:, :1])
    torch.testing.assert_close(out[:, 1:], onehot.transpose(1, 2) @ (x[:, 1:] * size[:, 1:]) / expected_size)
    assert torch.equal(out[:, :1], x[:, :1])
    assert torch.equal(new_source[:, 1:, 1:], onehot.transpose(1, 2))  # each cluster's patches


def test_the_authors_count_by_default_and_exact_r_on_request():
    """The authors ask for T - r clusters with the cls token among the T, then cluster without it: a block with
    a cls token removes r - 1. Without a cls token, and with exact_r, r."""
    spec = REDUCERS.get("atc")
    cls_model = build("test_vit", img_size=64)  # 16 patches + cls, 6 blocks
    no_cls = build("test_vit", img_size=64, class_token=False, global_pool="avg")
    layout, layout_no_cls = plan_layout(cls_model), plan_layout(no_cls)
    assert spec.requested(4, CONSTANT, spec.defaults(), layout) == (3,) * 6
    assert spec.requested(4, CONSTANT, spec.defaults() | {"exact_r": True}, layout) == (4,) * 6
    assert spec.requested(4, CONSTANT, spec.defaults(), layout_no_cls) == (4,) * 6
    assert spec.requested(0, CONSTANT, spec.defaults(), layout) == (0,) * 6
    x = vit_images(cls_model, 2)
    with torch.no_grad():
        for model, options, tokens in (
            (cls_model, {}, (14, 11, 8, 5, 2, 2)),  # 17 - 3 per block, down to cls + one cluster
            (cls_model, {"exact_r": True}, (13, 9, 5, 2, 2, 2)),
            (no_cls, {}, (12, 8, 4, 1, 1, 1)),
        ):
            patch(model, "atc", 4, **options)
            try:
                _, state = forward_with_state(model, x)
            finally:
                unpatch(model)
            assert state.tokens == tokens, options


@pytest.mark.parametrize("r, options", [(0, {}), (1, {}), (0, {"exact_r": True})])
def test_a_budget_that_removes_nothing_is_the_unpatched_model(r, options):
    """r = 1 with a cls token is the authors' T - 1 clusters of T - 1 tokens: nothing merges."""
    model = build("test_vit", img_size=64)
    x = vit_images(model, 2)
    with torch.no_grad():
        before = model(x)
        patch(model, "atc", r, **options)
        try:
            after, state = forward_with_state(model, x)
        finally:
            unpatch(model)
    assert state.tokens == (17,) * 6
    assert torch.equal(after, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_dtype_follows_the_input(dtype):
    """The authors merge into float32 zeros whatever came in; here tokens keep their dtype, and the distances run
    in float32 (with autocast off), so the clusters are those of the float32 keys."""
    g = torch.Generator().manual_seed(2)
    metric = torch.randn(2, 33, 8, generator=g).to(dtype)
    x = torch.randn(2, 33, 4, generator=g).to(dtype)
    tokens = LayerTokens(metric=metric, size=None, num_prefix_tokens=1)
    plan = REDUCERS.get("atc")(tokens, 9)
    out, size, _ = merge_tokens(plan, x, None, None)
    assert out.dtype == dtype and size.dtype == dtype and out.shape == (2, 24, 4)
    assert torch.equal(plan.assign[..., 0], plan_assign(metric.float(), 1, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = plan_assign(metric.float(), 1, 9)
    assert torch.equal(inside, plan.assign[..., 0])


def test_a_bfloat16_model_runs_in_bfloat16():
    model = build("test_vit", img_size=64).to(torch.bfloat16)
    with torch.no_grad():
        try:
            patch(model, "atc", 4, linkage="complete")
            logits, state = forward_with_state(model, vit_images(model).to(torch.bfloat16))
        finally:
            unpatch(model)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert state.tokens == (14, 11, 8, 5, 2, 2)


def test_the_linkage_is_checked():
    from tomebench.errors import UsageError

    with pytest.raises(UsageError):
        patch(build("test_vit", img_size=64), "atc", 4, linkage="ward")


def test_the_batched_clustering_matches_per_image_runs():
    d = distances(torch.randn(5, 40, 6, generator=torch.Generator().manual_seed(9)), 1)
    for linkage in LINKAGES:
        whole = agglomerate(d, 20, linkage)
        alone = torch.cat([agglomerate(d[i : i + 1], 20, linkage) for i in range(5)])
        assert torch.equal(whole, alone)
    assert np.all(np.diff(whole.numpy().max(axis=1)) == 0)  # every image: exactly k clusters


@pytest.mark.parametrize(
    "r, options, removed",
    [
        ([4, 4, 2, 2, 1, 0], {}, (3, 3, 1, 1, 0, 0)),  # r - 1 of each block's r (a cls token)
        ([4, 4, 2, 2, 1, 0], {"exact_r": True}, (4, 4, 2, 2, 1, 0)),
        (4, {"schedule": "decreasing"}, (7, 5, 3, 0, 0, 0)),  # the schedule's 8, 6, 4, 1, 0, 0, each less one
    ],
)
def test_a_schedule_or_a_per_block_list_is_spent_the_authors_way(r, options, removed):
    """The authors' count applies to whatever r a block is given, so schedules and per-block lists work as for
    ToMe; the tokens each block removes are those the forward really left."""
    from tomebench.patch import token_counts

    model = build("test_vit", img_size=64)  # 17 tokens, a cls token, 6 blocks
    patch(model, "atc", r, **options)
    try:
        planned, left = token_counts(model)
        _, state = forward_with_state(model, vit_images(model, 2))
    finally:
        unpatch(model)
    assert planned == removed
    assert state.tokens == left and left[-1] == 17 - sum(removed)


@pytest.mark.gpu
@pytest.mark.parametrize("linkage", LINKAGES)
def test_on_cuda_eager_and_compiled_the_clusters_are_sklearns(linkage):
    """The point of the batched clustering: on the device, inside the compiled forward, the same partitions."""
    metric = torch.randn(16, 197, 64, generator=torch.Generator().manual_seed(5))
    d = distances(metric, 1)  # (16, 196, 196) float32, on the CPU
    expected = sklearn_partitions(d, 196 - 15, linkage)
    on_device = distances(metric.cuda(), 1)
    eager = agglomerate(on_device, 196 - 15, linkage)
    compiled = torch.compile(agglomerate, fullgraph=True)(on_device, 196 - 15, linkage)
    assert eager.device.type == "cuda"
    assert [canonical(a) for a in eager.tolist()] == expected
    assert [canonical(a) for a in compiled.tolist()] == expected
