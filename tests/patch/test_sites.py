"""Where a reducer acts and what the block loop does for it: every site (between attention and MLP, after the MLP,
before attention with the attention matrix fused alongside), the clamp and the skip, and a decided patch installed
without checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import timm
import torch

import tomebench
from tomebench.errors import UsageError
from tomebench.patch import forward_with_state, install, plan_patch, unpatch
from tomebench.reducers import REDUCERS, Plan, ReducerSpec, reducer_spec
from tomebench.reducers.prune import keep_highest
from tomebench.reducers.tome import bipartite_soft_matching


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=4).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, images


def _prune_by_norm(tokens, r):
    """Drop the r tokens whose features (the tensor the plan applies to) have the smallest norm."""
    return keep_highest(tokens.x[:, tokens.num_prefix_tokens :].norm(dim=-1), r, tokens.num_prefix_tokens)


@dataclass(frozen=True, eq=False)
class _FusedAttention(Plan):
    """A ToMe merge of the block input whose attention matrix is fused alongside: key columns summed, query rows
    averaged (what a reducer acting before attention returns)."""

    inner: Plan

    def __call__(self, x, mode="sum"):
        return self.inner(x, mode)

    def attend(self, probs):
        b, h, n, _ = probs.shape
        cols = self.inner(probs.permute(0, 3, 1, 2).reshape(b, n, h * n), "sum")  # (B, N', H * Nq)
        k = cols.shape[1]
        cols = cols.reshape(b, k, h, n).permute(0, 2, 3, 1)  # (B, H, Nq, N')
        rows = self.inner(cols.permute(0, 2, 1, 3).reshape(b, n, h * k), "mean")  # (B, N', H * N')
        return rows.reshape(b, k, h, k).permute(0, 2, 1, 3)


def _fuse_before(tokens, r):
    assert tokens.attention is not None and tokens.x is not None
    return _FusedAttention(bipartite_soft_matching(tokens.x, r, tokens.num_prefix_tokens))


SITES = {
    "attention-mlp": reducer_spec("t-between", _prune_by_norm, kind="prune", needs=("x",)),
    "after-mlp": reducer_spec("t-after", _prune_by_norm, kind="prune", acts="after-mlp", needs=("x",)),
    "before-attention": reducer_spec(
        "t-before", _fuse_before, kind="merge", acts="before-attention", needs=("attention", "x")
    ),
}


def _manual_after_mlp(model, images, r):
    """The reference for a reducer acting after the MLP: timm's own blocks, pruned by norm after each one."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
    for block in model.blocks:
        x = block(x)
        keep = x[:, 1:].norm(dim=-1).topk(x.shape[1] - 1 - r, dim=-1).indices.sort(dim=-1).values + 1
        index = torch.cat([torch.zeros_like(keep[:, :1]), keep], dim=1)[..., None]
        x = x.gather(1, index.expand(-1, -1, x.shape[-1]))
    return model.forward_head(model.norm(x))


@pytest.mark.parametrize("site", list(SITES))
def test_every_site_runs_and_r_zero_is_the_unpatched_model(vit, site):
    model, images = vit
    spec = SITES[site]
    with torch.no_grad():
        plain = model(images)
        try:
            tomebench.patch(model, spec, 0)
            assert torch.allclose(model(images), plain, atol=1e-5)
            tomebench.patch(model, spec, 3)
            logits, state = forward_with_state(model, images)
            assert state.tokens == (14, 11, 8, 5)  # 16 patches + cls, 3 fewer after each block
            assert state.eager == (site == "before-attention")  # only a reducer that reads the matrix builds it
            assert torch.isfinite(logits).all()
            alone = forward_with_state(model, images[1:2])[0]  # no image depends on its batch
            assert torch.allclose(alone, logits[1:2], atol=1e-5)
            if site == "after-mlp":
                assert torch.allclose(logits, _manual_after_mlp(model, images, 3), atol=1e-5)
        finally:
            unpatch(model)


def test_the_loop_clamps_the_budget_and_skips_empty_blocks(vit):
    model, images = vit
    planned = []

    def counting(tokens, r):
        planned.append((tokens.layer, r))
        return _prune_by_norm(tokens, r)

    spec = reducer_spec("t-counting", counting, kind="prune", needs=("x",), most=lambda n, p: min(2, n - p))
    try:
        tomebench.patch(model, spec, [5, 0, 1, 0])
        with torch.no_grad():
            _, state = forward_with_state(model, images)
    finally:
        unpatch(model)
    assert planned == [(0, 2), (2, 1)]  # clamped to what `most` allows; blocks with nothing to remove never asked
    assert state.tokens == (15, 15, 14, 14)


def test_a_decided_patch_installs_without_any_check(vit, monkeypatch):
    model, images = vit
    info = plan_patch(model, "tome", 4, "decreasing", distance="euclidean")

    def refuse(*args, **kwargs):
        raise AssertionError("checked again")

    monkeypatch.setattr(ReducerSpec, "check", refuse)
    monkeypatch.setattr(type(REDUCERS), "get", refuse)
    try:
        with torch.no_grad():
            for _ in range(3):
                install(model, info)
                model(images)
                unpatch(model)
    finally:
        unpatch(model)
    with pytest.raises(UsageError, match="planned for a VisionTransformer"):
        install(torch.nn.Linear(2, 2), info)
