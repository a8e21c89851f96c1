"""`ppt` against a slow, obviously correct reference of the authors' rules (xjwu1024/PPT `ppt_deit.py`), its two
limits (always pool is ToMe, always prune is pruning by significance), the no-reduction settings against the
unpatched models of every family, batch independence with a batch that mixes both branches, refusals, and the
GMACs of the authors' DeiT-S command.

The reference is written from the rules, image by image and token by token in plain Python:
1. Significance of token j (j > 0): the cls token's attention to j summed over heads, times the norm of j's value
   vector (all heads), normalised to sum 1 over j > 0 (`PPTAttention.score_assignment_step`).
2. The variance (unbiased) of those scores under the threshold: pool r tokens by ToMe's bipartite matching with
   the cls (and distillation) token protected, size-weighted (`tome.py`); else keep the cls token and the
   N - 1 - r most significant tokens, most significant first (`pp_block_adaptive.forward`).
3. Proportional attention (log size added to the keys' logits) in every block, sizes kept through pruning.
The pooling reference is the ToMe reference of test_tome_reference.py.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch

from tests.patch import test_families as families
from tests.reducers.test_tome_reference import reference_merge
from tomebench.errors import UsageError
from tomebench.measure.cost import count_gflops
from tomebench.patch import forward_with_state, patch, token_counts, unpatch
from tomebench.reducers import REDUCERS, LayerTokens

PPT = REDUCERS.get("ppt")


def variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def significance(attention: list[float], values: list[list[float]], guarded: int) -> list[float]:
    raw = [a * math.sqrt(sum(c * c for c in v)) for a, v in zip(attention, values)][guarded:]
    return [s / sum(raw) for s in raw]


def reference_block(tokens, attention, values, r, threshold, p, guarded):
    """One image: tokens (dicts: metric, x, size, source) -> (tokens after, pooled?)."""
    scores = significance(attention, values, guarded)
    if variance(scores) < threshold:
        return reference_merge(tokens, r, p), True
    order = sorted(range(len(scores)), key=lambda j: -scores[j])[: len(scores) - r]
    return [tokens[i] for i in range(guarded)] + [tokens[guarded + j] for j in order], False


LAYOUTS = [  # (prefix tokens, protect_prefix, tokens): cls only, cls + distillation (ranked when pruning), all kept
    (1, False, 17),
    (1, False, 24),
    (2, False, 18),
    (2, True, 19),
    (5, True, 21),  # cls + 4 registers (extension)
]


@pytest.mark.parametrize("p, protect_prefix, n", LAYOUTS)
@pytest.mark.parametrize("which", ["mixed", "pool", "prune"])
def test_ppt_equals_the_reference_over_two_blocks(p, protect_prefix, n, which):
    g = torch.Generator().manual_seed(10 * p + n)
    batch, channels, r = 6, 5, 3
    x = torch.randn(batch, n, channels, generator=g, dtype=torch.float64)
    metric = torch.randn(batch, n, 4, generator=g, dtype=torch.float64)
    source = torch.eye(n, dtype=torch.float64).expand(batch, n, n)
    reference = [
        [dict(metric=metric[b, i].tolist(), x=x[b, i].tolist(), size=1.0, source=frozenset([i])) for i in range(n)]
        for b in range(batch)
    ]
    guarded = p if protect_prefix else 1
    size = None
    decisions = []
    for layer in range(2):  # the second block sees the first one's sizes and (per image) its order
        attention = torch.rand(batch, x.shape[1], generator=g, dtype=torch.float64).softmax(dim=-1)
        values = torch.randn(batch, x.shape[1], 6, generator=g, dtype=torch.float64)
        variances = [variance(significance(attention[b].tolist(), values[b].tolist(), guarded)) for b in range(batch)]
        middle = sum(sorted(variances)[batch // 2 - 1 : batch // 2 + 1]) / 2  # between two images' variances
        threshold = {"mixed": middle, "pool": 1.0, "prune": 0.0}[which]
        tokens = LayerTokens(
            metric=metric,
            size=size,
            num_prefix_tokens=p,
            layer=layer,
            cls_attention=lambda a=attention: a,
            features=lambda kind, heads, v=values: v,
        )
        plan = PPT(tokens, r, threshold=threshold, protect_prefix=protect_prefix)
        metric, _, _ = plan.apply(metric, size, None)
        x, size, source = plan.apply(x, size, source)
        done = [
            reference_block(t, attention[b].tolist(), values[b].tolist(), r, threshold, p, guarded)
            for b, t in enumerate(reference)
        ]
        reference = [tokens for tokens, _ in done]
        decisions.append([pooled for _, pooled in done])

    if which == "mixed":
        assert all(any(d) and not all(d) for d in decisions)  # both branches ran in each block
    for b, tokens in enumerate(reference):
        assert x.shape[1] == len(tokens) == n - 2 * r
        assert [frozenset(source[b, t].nonzero().flatten().tolist()) for t in range(len(tokens))] == [
            t["source"] for t in tokens
        ]
        assert size[b, :, 0].tolist() == [t["size"] for t in tokens]
        torch.testing.assert_close(x[b], torch.tensor([t["x"] for t in tokens], dtype=x.dtype), rtol=1e-12, atol=0)


# ---------------------------------------------------------------- whole models: a plain-loop PPT forward


def reference_forward(model, images, r: int, threshold: float, locations=(3, 6, 9)) -> torch.Tensor:
    """The authors' PPT forward on a timm ViT with a cls token, one image at a time, the attention written out."""
    logits = []
    for image in images:
        x = model._pos_embed(model.patch_embed(image[None]))[0]  # (N, C)
        sizes = [1.0] * x.shape[0]
        for index, block in enumerate(model.blocks):
            attn = block.attn
            h = block.norm1(x)
            n, c = h.shape
            qkv = attn.qkv(h).reshape(n, 3, attn.num_heads, c // attn.num_heads).permute(1, 2, 0, 3)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (H, N, D)
            bias = torch.tensor(sizes, dtype=h.dtype).log()  # proportional attention
            probs = ((q @ k.transpose(-2, -1)) * attn.scale + bias).softmax(dim=-1)  # (H, N, N)
            x = x + attn.proj((probs @ v).transpose(0, 1).reshape(n, c))
            if index in locations:
                tokens = [
                    dict(metric=k.mean(dim=0)[i].tolist(), x=x[i].tolist(), size=sizes[i], source=frozenset([i]))
                    for i in range(n)
                ]
                values = v.transpose(0, 1).reshape(n, c).tolist()
                out, _ = reference_block(
                    tokens, probs[:, 0].sum(dim=0).tolist(), values, min(r, (n - 1) // 2), threshold, 1, 1
                )
                x = torch.tensor([t["x"] for t in out], dtype=x.dtype)
                sizes = [t["size"] for t in out]
            x = x + block.mlp(block.norm2(x))
        logits.append(model.forward_head(model.norm(x)[None])[0])
    return torch.stack(logits)


def deep_vit() -> torch.nn.Module:
    """A small random-weight timm ViT with blocks 3, 6 and 9 (10 blocks, 4 x 4 patches); attention made peaked."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, img_size=64, depth=10).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("threshold", [1.0, 0.0, 0.002])
@torch.inference_mode()
def test_patched_model_equals_the_plain_loop_forward(threshold):
    """Always pool, always prune, and a threshold between these images' variances (both branches in a batch)."""
    model = deep_vit()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = reference_forward(model, images, 3, threshold)
    patch(model, "ppt", r=3, threshold=threshold)
    torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-5)


@torch.inference_mode()
def test_the_limits_are_tome_and_significance_pruning():
    """threshold 1 pools every image: ToMe (prop. attention) at blocks 3, 6, 9; threshold 0 prunes every image."""
    model = deep_vit()
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    patch(model, "tome", r=[0, 0, 0, 3, 0, 0, 3, 0, 0, 3])
    tome = model(images)
    patch(model, "ppt", r=3, threshold=1.0)
    torch.testing.assert_close(model(images), tome, rtol=0, atol=1e-6)
    patch(model, "ppt", r=3, threshold=0.0)
    _, state = forward_with_state(model, images)
    assert state.size is not None and torch.equal(state.size, torch.ones_like(state.size))  # nothing pooled


# ---------------------------------------------------------------- no reduction, every family; batch independence


@pytest.mark.parametrize("family", ["timm", "tv-tiny", "hf-vit"])
@pytest.mark.parametrize("setting", [dict(r=0, locations=(0, 1, 2)), dict(r=8, locations=())])
@torch.inference_mode()
def test_no_reduction_equals_the_unpatched_model(family, setting):
    model = families.timm_vit() if family == "timm" else families.MODELS[family]()
    x = families.images()
    before = families.logits_of(model, x)
    patch(model, "ppt", **setting)
    assert (families.logits_of(model, x) - before).abs().max() <= 1e-5
    unpatch(model)


@torch.inference_mode()
def test_the_same_tokens_in_torchvision_as_in_timm():
    source, target = families.timm_vit(), families.tv_vit()
    families.timm_to_tv(source, target)
    x = families.images()
    for model in (source, target):
        patch(model, "ppt", r=8, threshold=7e-5, locations=(0, 1))
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=1e-5)


@torch.inference_mode()
def test_an_image_does_not_depend_on_its_batch():
    model = deep_vit()
    patch(model, "ppt", r=3, threshold=0.002)  # some of these images pool, some prune (as above)
    images = torch.randn(7, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    together = model(images)
    alone = torch.cat([model(images[i : i + 1]) for i in range(7)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_options_budget_and_refusals():
    model = timm.create_model("test_vit", pretrained=False, img_size=224, patch_size=16, depth=12)
    patch(model, "ppt")  # r = 16, tomebench's default, at each location
    assert model._tome.r == (0, 0, 0, 16, 0, 0, 16, 0, 0, 16, 0, 0) and model._tome.schedule == "native"
    patch(model, "ppt", r=50)
    assert token_counts(model)[1] == (197, 197, 197, 147, 147, 147, 97, 97, 97, 49, 49, 49)  # 48 = 96 // 2 at 9
    with pytest.raises(UsageError, match="schedule"):
        patch(model, "ppt", r=50, schedule="decreasing")
    with pytest.raises(UsageError, match="one r"):
        patch(model, "ppt", r=[50] * 12)
    with pytest.raises(UsageError):
        patch(model, "ppt", threshold=-1.0)
    model = timm.create_model("test_vit", pretrained=False, img_size=64, class_token=False, global_pool="avg")
    with pytest.raises(UsageError, match="no cls token"):
        patch(model, "ppt")


def test_gmacs_on_deit_s_are_the_authors():
    """The README: `--r_tokens 50 --pp_loc_list 3 6 9 --threshold 7e-5` on DeiT-S gives macs: 2.944411999."""
    with torch.device("meta"):
        model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    patch(model, "ppt", r=50, threshold=7e-5)
    gmacs = count_gflops(model, torch.zeros(1, 3, 224, 224, device="meta")) / 2
    assert abs(gmacs - 2.944411999) <= 0.01, gmacs


def test_match_gmacs_picks_a_keep_rate_for_evit_and_an_r_for_ppt(demo):
    """`compare --match gmacs` on the demo (8 blocks: PPT and EViT reduce at 3 and 6): choices as the command line
    makes them; EViT's keep rate is bisected, PPT's r searched over every token count, each named in its note."""
    from tomebench.engine.matching import matched_configs
    from tomebench.engine.spec import ReducerChoice, RunSpec

    spec = RunSpec(reducers=tuple(ReducerChoice.of(name) for name in ("tome", "evit", "ppt")))
    configs = {cfg.reducer: cfg for cfg in matched_configs(spec, demo, [2], [])}
    assert dict(configs["evit"].options)["keep_rate"] < 1 and "keep_rate=" in configs["evit"].note
    assert configs["ppt"].r > 2 and "r=" in configs["ppt"].note and configs["ppt"].schedule.label == "constant"
    for name in ("evit", "ppt"):
        gap = float(configs[name].note.split("(")[-1].rstrip("%)"))
        assert abs(gap) < 2, configs[name].note
