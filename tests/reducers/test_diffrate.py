"""diffrate against a plain-loop reference written from the authors' eval branch (OpenGVLab/DiffRate
`DiffRateBlock.forward`, `get_merge_func`), its released schedules and their GMACs, its refusals, and inside real
models (no reduction is the unpatched model; an image's output does not depend on its batch). The shared tests
(test_invariants, test_families, test_tome_parity) run it too, with an explicit schedule where no released one fits
their tiny models, traced by torch.compile without a graph break."""

from __future__ import annotations

import typing

import pytest
import timm
import torch

import tomebench
from tests.helpers import make_vit
from tests.reducers.layers import diffrate_schedule, tokens_for
from tomebench.errors import UsageError
from tomebench.measure.cost import count_gflops
from tomebench.patch import forward_with_state
from tomebench.reducers import REDUCERS, merge_tokens
from tomebench.reducers.diffrate import ARCHITECTURES, ModelKey, released

SPEC = REDUCERS.get("diffrate")


# ---------------------------------------------------------------- the plan against a plain loop


def reference(x, received, size, p, prune, merge):
    """One image at a time, token by token, as the authors' eval branch reads: sort the patches by the cls token's
    attention (descending), drop the last `prune`, merge the next-to-last `merge` each into its most similar (cosine)
    kept patch by a plain mean, their sizes scaled by that similarity; prefix tokens stay first, untouched."""
    outs, sizes = [], []
    for b in range(x.shape[0]):
        n = x.shape[1]
        order = sorted(range(p, n), key=lambda i: -float(received[b, i]))
        k = len(order) - prune - merge
        kept, merged = order[:k], order[k : k + merge]
        groups = {i: [] for i in kept}
        added = dict.fromkeys(kept, 0.0)
        for j in merged:
            if not kept:
                break
            sims = [float(torch.nn.functional.cosine_similarity(x[b, j], x[b, i], dim=0)) for i in kept]
            best = kept[max(range(len(kept)), key=lambda t: sims[t])]
            groups[best].append(j)
            added[best] += float(size[b, j, 0]) * max(sims)
        rows = [x[b, i] for i in range(p)]
        row_sizes = [float(size[b, i, 0]) for i in range(p)]
        for i in kept:
            members = [x[b, i]] + [x[b, j] for j in groups[i]]
            rows.append(sum(members) / len(members))
            row_sizes.append(float(size[b, i, 0]) + added[i])
        outs.append(torch.stack(rows))
        sizes.append(torch.tensor(row_sizes, dtype=x.dtype)[:, None])
    return torch.stack(outs), torch.stack(sizes)


CASES = [
    # (prefix tokens, pruned, merged): cls only (the authors'), cls + distillation (protected: an extension)
    (1, 3, 5),
    (1, 0, 7),
    (1, 6, 0),
    (1, 4, 20),
    (1, 10, 19),  # every patch removed: nothing left to merge into, the rest is dropped
    (2, 3, 5),
    (2, 0, 9),
]


@pytest.mark.parametrize("p, prune, merge", CASES)
@pytest.mark.parametrize("given_size", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_plan_is_the_plain_loop(p, prune, merge, given_size, seed):
    g = torch.Generator().manual_seed(seed)
    b, n, c = 3, 30 + p - 1, 6
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    received = torch.rand(b, n, generator=g, dtype=torch.float64).softmax(-1)
    size = torch.randint(1, 5, (b, n, 1), generator=g).to(torch.float64) if given_size else None
    tokens = tokens_for(torch.randn(b, n, 4, generator=g, dtype=torch.float64), size, p, received, x=x)
    plan = SPEC(tokens, prune + merge, prune=prune)
    out, out_size, _ = merge_tokens(plan, x, size, None)
    ones = torch.ones(b, n, 1, dtype=x.dtype)
    want, want_size = reference(x, received, ones if size is None else size, p, prune, merge)
    assert out.shape == want.shape == (b, n - prune - merge, c)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_size, want_size, rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, :p], x[:, :p])


def test_sources_follow_the_merges():
    g = torch.Generator().manual_seed(3)
    b, n = 2, 20
    x = torch.randn(b, n, 5, generator=g, dtype=torch.float64)
    tokens = tokens_for(x, None, 1, torch.rand(b, n, generator=g, dtype=torch.float64), x=x)
    source = torch.eye(n, dtype=torch.float64).expand(b, n, n)
    _, _, out = merge_tokens(SPEC(tokens, 9, prune=4), x, None, source)
    assert out.shape == (b, n - 9, n)
    assert torch.equal(out.sum(dim=(1, 2)), torch.full((b,), n - 4.0, dtype=out.dtype))  # the 4 pruned are gone
    assert out.sum(dim=1).max() == 1  # every surviving patch in exactly one token


def test_no_cls_token_layer_is_refused():
    x = torch.randn(1, 9, 4)
    with pytest.raises(ValueError, match="cls token"):
        SPEC(tokens_for(x, None, 0, has_cls=False, x=x), 2)


# ---------------------------------------------------------------- the released schedules


def test_the_released_schedules_are_bundled_with_their_source():
    from importlib import resources

    text = resources.files("tomebench.reducers").joinpath("data/diffrate_schedules.json").read_text()
    assert "OpenGVLab/DiffRate@91ae3e376e9c3f9f1e69f580fd902b61de5dfe0e compression_rate.json" in text
    models = released()
    assert set(models) == set(typing.get_args(ModelKey)) - {"auto"} == set(ARCHITECTURES.values())
    depths = {"ViT-T-DeiT": 12, "ViT-S-DeiT": 12, "ViT-B-DeiT": 12, "ViT-B-MAE": 12, "ViT-L-MAE": 24, "ViT-H-MAE": 32}
    for model, targets in models.items():
        for schedule in targets.values():
            assert len(schedule["prune_kept"]) == len(schedule["merge_kept"]) == depths[model]
    # Spot checks against the authors' file.
    assert models["ViT-S-DeiT"]["2.9"]["prune_kept"] == (197, 196, 190, 168, 150, 139, 129, 117, 99, 78, 58, 3)
    assert models["ViT-S-DeiT"]["2.9"]["merge_kept"] == (197, 194, 176, 156, 141, 133, 121, 107, 88, 64, 56, 3)
    assert list(models["ViT-B-DeiT"]) == ["8.7", "10.0", "10.4", "11.5", "12.5"]


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    """A timm model on the meta device: shapes without weights, so counting FLOPs costs nothing."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def authors_gmacs(prune_kept, merge_kept, c: int, patches: int, patch: int, classes: int = 1000) -> float:
    """The authors' `calculate_flop_inference` (DiffRate/patch/deit.py), restated: MACs of each block's attention
    on the tokens it receives and of its MLP on the tokens it keeps, plus the patch embedding and the head."""
    n, macs = patches + 1, 0
    for p_kept, m_kept in zip(prune_kept, merge_kept):
        macs += 4 * n * c * c + 2 * n * n * c
        n = min(n, p_kept, m_kept)
        macs += 8 * n * c * c
    return (macs + (patches + 1) * c * patch * patch * 3 + c * classes) / 1e9


@pytest.mark.parametrize("target", ["2.3", "2.5", "2.7", "2.9", "3.1"])
def test_deit_s_gmacs_are_the_authors(target):
    schedule = released()["ViT-S-DeiT"][target]
    model = tomebench.patch(meta_model("deit_small_patch16_224"), reducer="diffrate", target=float(target))
    image = torch.empty(1, 3, 224, 224, device="meta")
    ours = count_gflops(model, image) / 2  # MACs, as timm's infer_gmacs and the authors count
    assert abs(ours - authors_gmacs(schedule["prune_kept"], schedule["merge_kept"], 384, 196, 16)) < 0.01
    with torch.inference_mode():
        _, state = forward_with_state(model, image)
    assert state.tokens == schedule["merge_kept"]  # every block keeps what the schedule says


@pytest.mark.parametrize(
    "name, target, published",
    [("deit_small_patch16_224", 2.9, 2.905), ("deit_base_patch16_224", 11.5, 11.517)],  # the authors' README
)
def test_gmacs_equal_the_published_ones(name, target, published):
    model = tomebench.patch(meta_model(name), reducer="diffrate", target=target)
    assert abs(count_gflops(model, torch.empty(1, 3, 224, 224, device="meta")) / 2 - published) < 0.01


def test_budget_and_split_follow_the_eval_branch():
    model = meta_model("deit_small_patch16_224")
    info = tomebench.patch(model, reducer="diffrate")._tome
    assert info.prop_attn and info.schedule == "native"  # the authors use proportional attention
    prune = [layer.options["prune"] for layer in info.layers]
    # 197 -> prune to 196 -> merge to 194; 194 -> prune to 190 -> merge to 176; ...; 56 -> prune to 3 (no merge).
    assert list(info.r[:3]) == [0, 3, 18] and prune[:3] == [0, 1, 4]
    assert info.r[-1] == 53 and prune[-1] == 53
    assert [o.name for o in SPEC.options] == ["target", "model_key", "prune_kept", "merge_kept"]  # prune is per block


def test_unknown_target_or_model_is_one_line_listing_those_available():
    with pytest.raises(UsageError) as excinfo:
        tomebench.patch(meta_model("deit_small_patch16_224"), reducer="diffrate", target=3.0)
    message = str(excinfo.value)
    assert "\n" not in message and "ViT-S-DeiT" in message and "2.3, 2.5, 2.7, 2.9, 3.1" in message
    with pytest.raises(UsageError) as excinfo:
        tomebench.patch(meta_model("vit_small_patch16_224"), reducer="diffrate")
    message = str(excinfo.value)
    assert "\n" not in message and "vit_small_patch16_224" in message
    assert all(key in message for key in released()) and "11.5" in message
    with pytest.raises(UsageError, match="12 blocks of 197"):  # a named schedule of another shape
        tomebench.patch(make_vit("test_vit"), reducer="diffrate", model_key="ViT-S-DeiT")
    with pytest.raises(UsageError, match="no cls token"):
        tomebench.patch(make_vit("test_vit2"), reducer="diffrate", **diffrate_schedule(101, 1, 3, 1, 1))
    with pytest.raises(UsageError, match="one per block"):
        tomebench.patch(make_vit("test_vit"), reducer="diffrate", prune_kept="100,90", merge_kept="90,80")


def test_a_named_schedule_runs_on_a_model_of_its_shape():
    """model_key= names a schedule for an architecture auto cannot map (the distilled DeiT keeps its second prefix
    token on top of every count: an extension)."""
    model = tomebench.patch(meta_model("deit_small_distilled_patch16_224"), reducer="diffrate", model_key="ViT-S-DeiT")
    with torch.inference_mode():
        _, state = forward_with_state(model, torch.empty(1, 3, 224, 224, device="meta"))
    assert state.tokens == tuple(v + 1 for v in released()["ViT-S-DeiT"]["2.9"]["merge_kept"])


# ---------------------------------------------------------------- inside real models


def schedule_for(model, prune: int, merge: int) -> dict:
    """An explicit schedule pruning `prune`, then merging `merge` tokens in every block of `model`."""
    from tomebench.patch.plan import layout

    shape = layout(model)
    return diffrate_schedule(shape.num_tokens, shape.num_prefix_tokens, shape.depth, prune, merge)


def family_models():
    from tests.patch import test_families as families

    return {"timm": lambda: make_vit("test_vit"), "tv": families.tv_vit, "hf": families.hf_vit}


@pytest.mark.parametrize("family", ["timm", "tv", "hf"])
@torch.inference_mode()
def test_the_full_token_schedule_is_the_unpatched_model(family):
    pytest.importorskip("transformers")
    model = family_models()[family]()
    size = 32 if family != "timm" else 160
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = model(x)
    before = out if isinstance(out, torch.Tensor) else out.logits
    tomebench.patch(model, reducer="diffrate", **schedule_for(model, 0, 0))
    out = model(x)
    torch.testing.assert_close(out if isinstance(out, torch.Tensor) else out.logits, before, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_an_image_does_not_depend_on_its_batch():
    model = make_vit("test_vit")
    tomebench.patch(model, reducer="diffrate", **schedule_for(model, 4, 8))
    x = torch.randn(5, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    together = model(x)
    for i in range(5):
        torch.testing.assert_close(model(x[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-5)


def test_match_gmacs_runs_an_explicit_schedule_as_given_and_a_missing_one_as_an_error_row(demo):
    from tomebench.engine.matching import matched_configs
    from tomebench.engine.plan import decide
    from tomebench.engine.spec import ReducerChoice, RunSpec

    schedule = schedule_for(demo.model, 1, 2)
    reducers = ("tome", ReducerChoice.of("diffrate", schedule))
    planned = matched_configs(RunSpec(model="demo", reducers=reducers), demo, [2, 6], [])
    (given,) = [cfg for cfg in planned if cfg.reducer == "diffrate"]
    assert "not matched" in given.note and dict(given.options)["prune_kept"] == schedule["prune_kept"]
    assert decide(demo.model, given).error is None
    planned = matched_configs(RunSpec(model="demo", reducers=("tome", "diffrate")), demo, [2], [])
    (missing,) = [cfg for cfg in planned if cfg.reducer == "diffrate"]
    assert "no released schedule" in decide(demo.model, missing).error  # a row with its error; the sweep goes on
