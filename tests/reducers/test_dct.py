"""DCT (PiToMe's port of the Fourier Transformer's spectral filter): a plain-loop reference of the port's rules
(the DCT-II as a sum of cosines, per image and per token), the port's budget ceil(T * ratio) per block, ratio 1
is the unpatched model on every family, batch independence, and a dtype that follows the input."""

from __future__ import annotations

import math

import pytest
import torch

from tests.patch import test_families as families
from tests.patch.vits import build
from tests.patch.vits import images as vit_images
from tomebench.patch import forward_with_state, patch, unpatch
from tomebench.patch import layout as plan_layout
from tomebench.reducers import REDUCERS, LayerTokens, merge_tokens


def reference_dct(x: torch.Tensor, ratio: float, num_prefix: int) -> torch.Tensor:
    """The port's `dc_transform`, written out: for each image, the orthonormal DCT-II of the non-prefix tokens
    along the token axis (one cosine sum per frequency), the lowest ceil(T * ratio) coefficients kept, their
    orthonormal inverse DCT (DCT-III) of that length; prefix tokens put back in front. x: (B, N, C) float64."""
    rows = []
    for image in x:
        prefix, tokens = image[:num_prefix], image[num_prefix:]
        t = tokens.shape[0]
        m = math.ceil(t * ratio)
        coeffs = []
        for k in range(m):  # X_k = s_k * sum_i x_i cos(pi (2i + 1) k / 2T)
            s = math.sqrt((1 if k == 0 else 2) / t)
            coeffs.append(s * sum(tokens[i] * math.cos(math.pi * (2 * i + 1) * k / (2 * t)) for i in range(t)))
        out = []
        for i in range(m):  # y_i = sum_k s_k X_k cos(pi (2i + 1) k / 2M), the inverse of a length-M DCT-II
            out.append(
                sum(
                    math.sqrt((1 if k == 0 else 2) / m) * coeffs[k] * math.cos(math.pi * (2 * i + 1) * k / (2 * m))
                    for k in range(m)
                )
            )
        rows.append(torch.cat([prefix, torch.stack(out)]) if out else prefix)
    return torch.stack(rows)


def plan_dct(x: torch.Tensor, p: int, ratio: float, size=None, source=None):
    """The registered reducer on x (B, N, C), with the r its budget gives one block of N tokens."""
    t = x.shape[1] - p
    r = t - math.ceil(t * ratio)
    tokens = LayerTokens(metric=x, size=size, num_prefix_tokens=p, x=x)
    return merge_tokens(REDUCERS.get("dct")(tokens, r, ratio=ratio), x, size, source)


@pytest.mark.parametrize("p", [1, 2, 0], ids=["cls", "cls+dist", "no-prefix"])
@pytest.mark.parametrize("n, ratio", [(17, 0.9), (12, 0.5), (9, 0.7), (5, 0.34)])
def test_matches_the_plain_loop_reference(p, n, ratio):
    x = torch.randn(2, n + p, 3, generator=torch.Generator().manual_seed(n * 10 + p), dtype=torch.float64)
    out, _, _ = plan_dct(x, p, ratio)
    expected = reference_dct(x, ratio, p)
    assert out.shape == expected.shape == (2, p + math.ceil(n * ratio), 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert torch.equal(out[:, :p], x[:, :p])  # prefix tokens untouched, in front


def test_keeping_every_coefficient_is_the_identity_and_the_lowest_one_is_the_scaled_mean():
    x = torch.randn(2, 11, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tokens = LayerTokens(metric=x, size=None, num_prefix_tokens=1, x=x)
    from tomebench.reducers.dct import lowpass

    torch.testing.assert_close(lowpass(10, 10, torch.float64), torch.eye(10, dtype=torch.float64))
    # One token left: the DC coefficient, sqrt(T) * mean, back through a length-1 inverse (the port's scale).
    out, _, _ = merge_tokens(REDUCERS.get("dct")(tokens, 9), x, None, None)
    torch.testing.assert_close(out[:, 1], x[:, 1:].mean(dim=1) * math.sqrt(10))


def test_sizes_and_sources():
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    size = torch.randint(1, 4, (2, 9, 1)).double()
    source = torch.eye(9, dtype=torch.float64).expand(2, 9, 9)
    out, new_size, new_source = plan_dct(x, 1, 0.5, size, source)
    assert out.shape[1] == new_size.shape[1] == new_source.shape[1] == 5
    assert torch.equal(new_size[:, :1], size[:, :1])
    torch.testing.assert_close(new_size.sum(dim=1), size.sum(dim=1))  # total kept, spread evenly
    assert torch.equal(new_source[:, 0], source[:, 0])  # the cls token stands for itself
    assert torch.all(new_source[:, 1:, 1:] == 1)  # every resampled token mixes every patch
    _, none_size, _ = plan_dct(x, 1, 0.5)
    assert none_size is None or torch.equal(none_size, torch.ones_like(none_size))  # no sizes made up


def test_the_budget_is_the_ports_ceil_per_block():
    model = build("deit_small_patch16_224", depth=12)
    layout = plan_layout(model)
    spec = REDUCERS.get("dct")
    t, expected = 196, []
    for _ in range(12):  # the port: after every block, ceil(T * ratio) of the T non-cls tokens stay
        expected.append(t - math.ceil(t * 0.9))
        t = math.ceil(t * 0.9)
    assert spec.requested(0, None, spec.defaults(), layout) == tuple(expected)
    assert spec.requested(0, None, {"ratio": 1.0}, layout) == (0,) * 12
    assert expected[:3] == [19, 17, 16] and t == 59


def test_in_a_model_the_tokens_follow_the_budget_and_the_block_reference():
    model = build("test_vit", img_size=64)
    x = vit_images(model, 3)
    with torch.no_grad():
        try:
            patch(model, "dct", ratio=0.8)
            logits, state = forward_with_state(model, x)
            alone = forward_with_state(model, x[1:2])[0]
        finally:
            unpatch(model)
        # The reference: timm's own blocks, the plain-loop DCT after each one (as the port's DCTBlock).
        h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        for block in model.blocks:
            h = reference_dct(block(h).double(), 0.8, 1).float()
        expected = model.forward_head(model.norm(h))
    assert state.tokens == (14, 12, 10, 9, 8, 7)  # 16 patches + cls: ceil(0.8 T) each block
    assert state.size is None  # no sizes, so attention stays unbiased, as in the port
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, logits[1:2], rtol=0, atol=1e-5)  # no image depends on its batch


@pytest.mark.parametrize("family", ["timm", *families.MODELS])
@torch.inference_mode()
def test_ratio_one_is_the_unpatched_model(family):
    model = families.timm_vit() if family == "timm" else families.MODELS[family]()
    x = families.images()
    before = families.logits_of(model, x)
    patch(model, "dct", ratio=1.0)
    try:
        assert (families.logits_of(model, x) - before).abs().max() <= 1e-5
    finally:
        unpatch(model)


@torch.inference_mode()
def test_the_same_dct_on_every_family():
    """The tiny timm ViT's weights in a torchvision and a transformers ViT: the same resampling, the same logits."""
    src, x = families.timm_vit(), families.images()
    tv, hf = families.tv_vit(), families.hf_vit()
    families.timm_to_tv(src, tv)
    families.timm_to_hf(src, hf)
    logits = []
    for model in (src, tv, hf):
        patch(model, "dct", ratio=0.7)
        try:
            logits.append(families.logits_of(model, x))
        finally:
            unpatch(model)
    assert (logits[0] - logits[1]).abs().max() <= 1e-4 and (logits[0] - logits[2]).abs().max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_dtype_follows_the_input(dtype):
    """The port casts its output to float16 whatever came in; here the tokens keep their dtype, the product runs
    in float32 as the authors' DCT does."""
    x = torch.randn(2, 17, 8, generator=torch.Generator().manual_seed(3))
    out, _, _ = plan_dct(x.to(dtype), 1, 0.9)
    assert out.dtype == dtype
    full, _, _ = plan_dct(x.to(dtype).float(), 1, 0.9)
    assert torch.equal(out, full.to(dtype))  # float32 inside, one rounding at the end
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, _, _ = plan_dct(x, 1, 0.9)
    assert inside.dtype == torch.float32  # autocast does not take the product to bfloat16
    torch.testing.assert_close(inside, plan_dct(x, 1, 0.9)[0], rtol=0, atol=0)


def test_a_bfloat16_model_runs_in_bfloat16():
    model = build("test_vit", img_size=64).to(torch.bfloat16)
    with torch.no_grad():
        try:
            patch(model, "dct")
            logits, state = forward_with_state(model, vit_images(model).to(torch.bfloat16))
        finally:
            unpatch(model)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert state.tokens == (16, 15, 14, 13, 12, 11)  # cls + 15, 14, 13, 12, 11, 10: ceil(0.9 T)
