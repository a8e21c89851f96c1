"""MCTF (mlvlab/MCTF): a plain-loop reference of the authors' rules (three criteria per pair of tokens, bipartite
matching both ways, attention x size pooling, the attention matrix fused alongside) on cls-only, cls +
distillation and no-prefix layouts; r = 0 is the unpatched model on every family; the first block is left alone as
the authors' scripts do; batch independence; the full attention is built (eager) and recorded."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch

from tests.patch import test_families as families
from tests.patch.vits import build
from tests.patch.vits import images as vit_images
from tomebench.patch import forward_with_state, patch, patch_info, unpatch
from tomebench.reducers import REDUCERS, LayerTokens

POOLINGS = ("attention", "size", "max", "mean")


def reference_image(tokens, probs, s, r, p, tau_sim, tau_info, tau_size, bidirection, pool, has_size):
    """One image: tokens (N, C), probs (H, N, N), sizes s (N floats). Returns the fused tokens, their sizes, the
    groups of input positions, the fused attention."""
    n = tokens.shape[0]
    received = [probs[:, :, i].mean().item() for i in range(n)]  # over heads and queries
    info = [1 / v for v in received]
    info = [v / max(info) for v in info]
    small = [1 / v for v in s]
    small = [v / max(small) for v in small]

    @functools.cache  # each pair scored once
    def score(i, j):
        if (i < p and i % 2 == 0) or (j < p and j % 2 == 1):
            return -math.inf  # prefix tokens: never merged away, nothing merged into them
        cos = (tokens[i] @ tokens[j] / (tokens[i].norm() * tokens[j].norm())).item()
        w = ((cos + 1) / 2) ** (1 / tau_sim) if tau_sim else 1.0
        w *= (info[i] * info[j]) ** (1 / tau_info) if tau_info else 1.0
        w *= (small[i] * small[j]) ** (1 / tau_size) if (tau_size and has_size) else 1.0
        return w

    evens, odds = list(range(0, n, 2)), list(range(1, n, 2))
    r1, r2 = (r // 2, r - r // 2) if bidirection else (r, 0)
    best = {i: max(odds, key=lambda j: score(i, j)) for i in evens}
    by_score = sorted(evens, key=lambda i: -score(i, best[i]))
    group = {i: [i] for i in range(n)}
    for i in by_score[:r1]:  # A into B
        group[best[i]] += group.pop(i)
    kept_a = sorted(by_score[r1:]) if p else by_score[r1:]  # the authors sort only with a protected token
    rest_b = [j for j in odds if j >= p]
    if bidirection:  # B into the A tokens left, on the same scores
        best2 = {j: max(kept_a, key=lambda i: score(i, j)) for j in rest_b}
        by_score2 = sorted(rest_b, key=lambda j: -score(best2[j], j))
        for j in by_score2[:r2]:
            group[best2[j]] += group.pop(j)
        rest_b = by_score2[r2:]
    order = list(range(p)) + [i for i in kept_a if i >= p] + rest_b
    groups = [sorted(group[k]) for k in order]

    size_max = max(s)
    if pool == "attention":
        weight = [received[i] * (s[i] / size_max) for i in range(n)]
    else:
        weight = s if pool == "size" else [1.0] * n

    def pooled(rows):  # rows (N, ...) -> one row per group
        if pool == "max":
            return torch.stack([rows[g].amax(dim=0) for g in groups])
        return torch.stack([sum(weight[i] * rows[i] for i in g) / sum(weight[i] for i in g) for g in groups])

    fused = pooled(tokens)
    fused[:p] = tokens[:p]
    cols = torch.stack([probs[:, :, g].sum(dim=-1) for g in groups], dim=-1)  # (H, N, N'): keys summed
    fused_attn = pooled(cols.transpose(0, 1)).transpose(0, 1)  # queries pooled like the tokens
    sizes = torch.tensor([[sum(s[i] for i in g)] for g in groups], dtype=tokens.dtype)
    return fused, sizes, groups, fused_attn


def reference_mctf(x, attn, size, r, p, tau_sim=1.0, tau_info=20.0, tau_size=40.0, bidirection=True, pool="attention"):
    """The authors' `mctf` / `bipartite_soft_matching` / `merge_wavg`, one image and one pair of tokens at a time.

    x (B, N, C), attn (B, H, N, N), size (B, N, 1) or None; float64. r is clamped as in `mctf` (10 tokens stay, at
    most half the non-prefix ones merge). Returns the fused tokens (B, N - r, C), their sizes, the groups of input
    positions each output token holds, and the fused attention (B, H, N - r, N - r)."""
    n = x.shape[1]
    r = min(n - 10 if n - r < 10 else r, (n - p) // 2)
    results = [
        reference_image(
            x[i],
            attn[i],
            [1.0] * n if size is None else [float(v) for v in size[i, :, 0]],
            r,
            p,
            tau_sim,
            tau_info,
            tau_size,
            bidirection,
            pool,
            size is not None,
        )
        for i in range(x.shape[0])
    ]
    out, sizes, groups, attns = zip(*results)
    return torch.stack(out), torch.stack(sizes), list(groups), torch.stack(attns)


def layer(n, p, seed, with_size):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 5, generator=g, dtype=torch.float64)
    attn = torch.randn(2, 3, n, n, generator=g, dtype=torch.float64).mul(2).softmax(dim=-1)
    size = torch.randint(1, 5, (2, n, 1), generator=g).double() if with_size else None
    return x, attn, size


def plan_mctf(x, attn, size, r, p, **options):
    tokens = LayerTokens(metric=x, size=size, num_prefix_tokens=p, x=x, attention=lambda: attn)
    return REDUCERS.get("mctf")(tokens, r, **options)


CASES = list(itertools.product([1, 2, 0], [(14, 4), (25, 9)], [False, True]))


@pytest.mark.parametrize("p, nr, with_size", CASES, ids=[f"p{p}-n{n}-r{r}-size{s}" for p, (n, r), s in CASES])
@pytest.mark.parametrize("bidirection", [True, False])
def test_matches_the_plain_loop_reference(p, nr, with_size, bidirection):
    n, r = nr
    x, attn, size = layer(n, p, n * 7 + p + r, with_size)
    for pool in POOLINGS:
        plan = plan_mctf(x, attn, size, r, p, bidirection=bidirection, pooling=pool)
        source = torch.eye(n, dtype=x.dtype).expand(2, n, n)
        out, new_size, new_source = plan.apply(x, size, source)
        ref, ref_size, ref_groups, ref_attn = reference_mctf(x, attn, size, r, p, bidirection=bidirection, pool=pool)
        groups = [[row.nonzero().flatten().tolist() for row in image] for image in new_source]
        assert groups == ref_groups, pool  # the same tokens merged, in the same output order
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        assert torch.equal(new_size, ref_size)
        torch.testing.assert_close(plan.attend(attn), ref_attn, rtol=0, atol=1e-12)
        assert torch.equal(out[:, :p], x[:, :p])


def test_each_temperature_switches_its_criterion_and_changes_the_match():
    x, attn, size = layer(21, 1, 5, True)
    base = plan_mctf(x, attn, size, 6, 1)
    for tau in ("tau_sim", "tau_info", "tau_size"):
        plan = plan_mctf(x, attn, size, 6, 1, **{tau: 0.0})
        ref = reference_mctf(x, attn, size, 6, 1, **{tau: 0.0})
        out, _, source = plan.apply(x, size, torch.eye(21, dtype=x.dtype).expand(2, 21, 21))
        assert [[row.nonzero().flatten().tolist() for row in image] for image in source] == ref[2]
        torch.testing.assert_close(out, ref[0], rtol=0, atol=1e-12)
    assert not torch.equal(plan_mctf(x, attn, size, 6, 1, tau_info=1.0).src_idx, base.src_idx)


@pytest.fixture(scope="module")
def deit():
    model = build("deit_small_patch16_224", img_size=64, depth=4)
    return model, vit_images(model, 3)


def test_in_a_model_the_first_block_is_left_alone_and_the_attention_is_eager(deit):
    model, x = deit
    with torch.no_grad():
        try:
            patch(model, "mctf", 3)
            assert patch_info(model).r == (0, 3, 3, 3)  # --activate_layer 1..depth-1
            logits, state = forward_with_state(model, x)
            alone = forward_with_state(model, x[2:])[0]
            patch(model, "mctf", 3, first_block=0)
            assert forward_with_state(model, x)[1].tokens == (14, 11, 10, 10)  # the authors keep 10 tokens
        finally:
            unpatch(model)
    assert state.tokens == (17, 14, 11, 10) and state.eager  # the full attention matrix was built
    torch.testing.assert_close(alone, logits[2:], rtol=0, atol=1e-5)  # no image depends on its batch
    assert torch.isfinite(logits).all()


def test_one_step_ahead_fuses_before_the_attention(deit):
    """Block 1 by hand, as `Block_DEIT.forward` with one_step_ahead 1: the attention on the unfused tokens, the
    plan on it, tokens and attention fused, the fused attention times the values of the fused tokens."""
    model, x = deit
    with torch.no_grad():
        h = model.blocks[0](model.norm_pre(model._pos_embed(model.patch_embed(x))))  # block 0: not active
        block = model.blocks[1]
        attn = block.attn
        b, n, c = h.shape
        qkv = attn.qkv(block.norm1(h)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        probs = ((qkv[0] @ qkv[1].transpose(-2, -1)) * attn.scale).softmax(dim=-1)  # (B, H, N, N)
        plan = plan_mctf(h, probs, None, 3, 1)
        fused, _, _ = plan.apply(h, None, None)
        v = attn.qkv(block.norm1(fused))[..., 2 * c :].reshape(b, n - 3, attn.num_heads, -1).transpose(1, 2)
        out = (plan.attend(probs) @ v).transpose(1, 2).reshape(b, n - 3, c)
        h = fused + attn.proj(out)
        h = h + block.mlp(block.norm2(h))
        try:
            patch(model, "mctf", [0, 3, 0, 0], prop_attn=False)  # timm's blocks 2, 3 below have no size bias
            expected = model.forward_head(model.norm(model.blocks[3](model.blocks[2](h))))
            torch.testing.assert_close(forward_with_state(model, x)[0], expected, rtol=0, atol=1e-5)
        finally:
            unpatch(model)


@pytest.mark.parametrize("one_step_ahead", [2, 0])
def test_precise_and_no_one_step_ahead(deit, one_step_ahead):
    """2 ("precise"): fuse before the attention on the unfused tokens' attention, then the block runs as usual on
    the fused tokens; 0: the block runs as usual, then its output is fused on its own attention (Block_DEIT)."""
    model, x = deit
    with torch.no_grad():
        h = model.blocks[0](model.norm_pre(model._pos_embed(model.patch_embed(x))))
        block = model.blocks[1]
        attn = block.attn
        b, n, c = h.shape
        qkv = attn.qkv(block.norm1(h)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        probs = ((qkv[0] @ qkv[1].transpose(-2, -1)) * attn.scale).softmax(dim=-1)  # (B, H, N, N) of the input
        if one_step_ahead == 2:
            plan = plan_mctf(h, probs, None, 3, 1, one_step_ahead=2)
            assert plan.attend(probs) is None
            h = block(plan.apply(h, None, None)[0])
        else:
            out = block(h)
            h = plan_mctf(out, probs, None, 3, 1, one_step_ahead=0).apply(out, None, None)[0]
        try:
            patch(model, "mctf", [0, 3, 0, 0], prop_attn=False, one_step_ahead=one_step_ahead)
            assert patch_info(model).layers[1].acts == ("after-mlp" if one_step_ahead == 0 else "before-attention")
            expected = model.forward_head(model.norm(model.blocks[3](model.blocks[2](h))))
            logits, state = forward_with_state(model, x)
            torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
            assert state.tokens == (17, 14, 14, 14) and state.eager
        finally:
            unpatch(model)


@pytest.mark.parametrize("family", ["timm", *families.MODELS])
@torch.inference_mode()
def test_r0_is_the_unpatched_model(family):
    model = families.timm_vit() if family == "timm" else families.MODELS[family]()
    x = families.images()
    before = families.logits_of(model, x)
    patch(model, "mctf", 0)
    try:
        assert (families.logits_of(model, x) - before).abs().max() <= 1e-5
    finally:
        unpatch(model)


@torch.inference_mode()
def test_the_same_fusion_on_every_family():
    src, x = families.timm_vit(), families.images()
    tv, hf = families.tv_vit(), families.hf_vit()
    families.timm_to_tv(src, tv)
    families.timm_to_hf(src, hf)
    logits = []
    for model in (src, tv, hf):
        patch(model, "mctf", 8)
        try:
            logits.append(families.logits_of(model, x))
        finally:
            unpatch(model)
    assert (logits[0] - logits[1]).abs().max() <= 1e-4 and (logits[0] - logits[2]).abs().max() <= 1e-4
