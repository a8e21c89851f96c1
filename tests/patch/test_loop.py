"""The one loop over blocks against real (tiny, random-weight) timm models: parity at r=0, the token flow each
schedule gives, LayerScale, drop path, proportional attention, size-weighted pooling, traced sources."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import tomebench
from tests.patch.vits import IMG, MODELS, build, images, max_diff
from tomebench.patch import forward_with_state, token_counts
from tomebench.schedule import effective_schedule, layer_schedule


@pytest.fixture(params=sorted(MODELS), scope="module")
def model_case(request):
    name, kwargs = MODELS[request.param]
    return request.param, name, kwargs


def test_r0_parity_and_r_positive_changes_output(model_case):
    case, name, kwargs = model_case
    model = build(name, **kwargs)
    x = images(model)
    with torch.no_grad():
        ref = model(x)
        ref_feats = model.forward_features(x)
        tomebench.patch(model, r=0)
        out = model(x)
        assert max_diff(out, ref) <= 1e-5, case
        feats = model.forward_features(x)
        assert feats.shape == ref_feats.shape and max_diff(feats, ref_feats) <= 1e-5, case

        tomebench.patch(model, r=4)
        merged, state = forward_with_state(model, x)
    assert merged.shape == ref.shape
    assert torch.isfinite(merged).all()
    assert max_diff(merged, ref) > 1e-4, case  # merging before the last MLP changes every pooled output
    counts = token_counts(model)[1]
    assert state.size is not None and state.size.shape[:2] == (2, counts[-1])
    p = model.num_prefix_tokens
    assert torch.equal(state.size.sum(dim=(1, 2)), torch.full((2,), float(16 + p)))


def mlp_token_counts(model: VisionTransformer, x: torch.Tensor) -> list[int]:
    """Tokens each block's MLP sees, i.e. tokens left after that block's merge (hooks, no patch internals)."""
    seen: list[int] = []
    hooks = [b.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(r=3),  # constant
        dict(r=6),  # constant, clamped in the later layers
        dict(r=2, schedule="decreasing"),
        dict(r=[5, 0, 2, 7, 0, 0]),  # explicit list, one r per block
        dict(schedule=[1, 2, 3, 4, 5, 6]),  # explicit list through `schedule`, r ignored
    ],
    ids=["constant3", "constant6", "decreasing2", "list_r", "list_schedule"],
)
def test_per_layer_token_counts_follow_effective_schedule(kwargs):
    model = build("test_vit", img_size=96)  # 36 patches + cls = 37 tokens, 6 blocks
    depth = len(model.blocks)
    tomebench.patch(model, **kwargs)
    info = model._tome
    if "schedule" in kwargs and not isinstance(kwargs["schedule"], str):
        requested = tuple(kwargs["schedule"])
    elif isinstance(kwargs["r"], list):
        requested = tuple(kwargs["r"])
    else:
        requested = layer_schedule(kwargs["r"], depth, kwargs.get("schedule", "constant"))
    assert info.r == requested
    effective, tokens = effective_schedule(requested, 37, 1)
    assert token_counts(model) == (effective, tokens)

    x = images(model)
    assert mlp_token_counts(model, x) == list(tokens)
    logits, state = forward_with_state(model, x)
    assert state.size.shape[1] == tokens[-1]
    assert logits.shape == (2, model.num_classes)


def test_known_schedule_token_counts():
    # Hand-computed: 37 tokens, prefix 1, r=6: 31, 25, 19, 13; then 13 -> 7 (6 = 12 // 2); then 7 -> 4 (3 = 6 // 2).
    model = tomebench.patch(build("test_vit", img_size=96), r=6)
    assert token_counts(model) == ((6, 6, 6, 6, 6, 3), (31, 25, 19, 13, 7, 4))
    assert mlp_token_counts(model, images(model)) == [31, 25, 19, 13, 7, 4]


def test_layerscale_gamma_is_applied():
    model = build("test_vit2", img_size=IMG)
    x = images(model)
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.zero_()  # attention branch off entirely
        ref_zero = model(x)
        tomebench.patch(model, r=0)
        assert max_diff(model(x), ref_zero) <= 1e-5
        tomebench.unpatch(model)
        for i, block in enumerate(model.blocks):
            block.ls1.gamma.fill_(0.3 + 0.1 * i)  # non-trivial, non-1 values
            block.ls2.gamma.fill_(-0.7 + 0.05 * i)
        ref = model(x)
        assert max_diff(ref, ref_zero) > 1e-3  # gamma matters for this model
        tomebench.patch(model, r=0)
        assert max_diff(model(x), ref) <= 1e-5


def test_drop_path_train_mode_matches_unpatched_and_eval_is_deterministic():
    model = build("test_vit", img_size=IMG, drop_path_rate=0.5)
    assert any(type(b.drop_path1).__name__ == "DropPath" for b in model.blocks)
    x = images(model)
    model.train()
    torch.manual_seed(123)
    ref_train = model(x)
    tomebench.patch(model, r=0)
    torch.manual_seed(123)
    assert max_diff(model(x), ref_train) <= 1e-5  # same drop-path draws, same order
    torch.manual_seed(124)
    assert max_diff(model(x), ref_train) > 1e-4  # drop-path is really active in the patched forward

    tomebench.patch(model, r=4)
    out = model(x)
    out.sum().backward()
    grad = model.patch_embed.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_prop_attn_default_off_for_mae_and_on_otherwise():
    mae = timm.create_model("vit_base_patch16_224.mae", pretrained=False, img_size=32, depth=1)
    assert tomebench.patch(mae, r=1)._tome.prop_attn is False
    assert tomebench.patch(mae, r=1, prop_attn=True)._tome.prop_attn is True
    assert tomebench.patch(build("test_vit", img_size=IMG), r=1)._tome.prop_attn is True


def test_prop_attn_changes_the_output_once_tokens_are_merged():
    model = build("test_vit", img_size=IMG)
    x = images(model)
    with torch.no_grad():
        with_prop = tomebench.patch(model, r=3, prop_attn=True)(x)
        without = tomebench.patch(model, r=3, prop_attn=False)(x)
        assert max_diff(with_prop, without) > 1e-5
        at_zero_on = tomebench.patch(model, r=0, prop_attn=True)(x)
        at_zero_off = tomebench.patch(model, r=0, prop_attn=False)(x)
        assert torch.equal(at_zero_on, at_zero_off)  # sizes are all one: log(1) = 0 bias


@pytest.mark.parametrize("case", ["vit2_registers_avg", "vit_avg_no_prefix", "vit_avgmax_regs"])
def test_pooling_weighs_tokens_by_size_like_unmerged_patches(case):
    name, kwargs = MODELS[case]
    model = build(name, **kwargs)
    # Merge in the first block only, so several patch tokens of different sizes reach the pool.
    tomebench.patch(model, schedule=[6] + [0] * (len(model.blocks) - 1), trace_source=True)
    x = images(model)
    p = model.num_prefix_tokens
    with torch.no_grad():
        logits, state = forward_with_state(model, x)
        feats = model.forward_features(x)  # (B, N', C)
        # Every input patch takes the features of the token it ended up in: (B, N0, C).
        unmerged = state.source.transpose(1, 2) @ feats
        patches = unmerged[:, p:]
        pooled = patches.mean(dim=1)
        if model.global_pool == "avgmax":
            pooled = 0.5 * (patches.amax(dim=1) + pooled)
        expected = model.head(model.fc_norm(pooled))
        plain = model.forward_head(feats)  # timm's unweighted mean over merged tokens
    assert state.size.shape[1] == 16 + p - 6
    assert len(set(state.size[:, p:].flatten().tolist())) > 1  # unequal sizes, so weighting matters
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert max_diff(logits, plain) > 1e-5  # the size weighting is not a no-op here


def test_trace_source_partitions_input_tokens():
    model = tomebench.patch(build("deit_tiny_distilled_patch16_224", img_size=IMG, depth=2), r=5, trace_source=True)
    with torch.no_grad():
        _, state = forward_with_state(model, images(model, batch=3))
    n0 = 16 + 2
    assert state.source.shape == (3, token_counts(model)[1][-1], n0)
    assert torch.all((state.source == 0) | (state.source == 1))
    assert torch.equal(state.source.sum(dim=1), torch.ones(3, n0))
    assert torch.equal(state.source.sum(dim=-1, keepdim=True), state.size)
    assert torch.equal(state.source[:, :2, :2], torch.eye(2).expand(3, 2, 2))  # cls and dist stay themselves


def test_patch_without_trace_source_keeps_no_source():
    model = tomebench.patch(build("test_vit", img_size=IMG), r=2)
    with torch.no_grad():
        _, state = forward_with_state(model, images(model))
    assert state.source is None
