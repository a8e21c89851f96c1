"""pitome against a plain-loop reference written from the authors' rules (hchautran/PiToMe `pitome_vision`,
`pitome`, `pitome_bsm`, `merge_wavg`; margins and the first-half variant from `patch/deit.py`), its budget on DeiT-S
(the token counts the authors' code leaves, from benchmarks/parity/pitome.py), and inside real models (ratio 1 is
the unpatched model; an image's output does not depend on its batch). The shared tests (test_invariants,
test_families, test_tome_parity) run it too, torch.compile without a graph break included."""

from __future__ import annotations

import dataclasses
import math

import pytest
import timm
import torch

import tomebench
from tests.helpers import make_vit
from tests.reducers.layers import tokens_for
from tomebench.patch import forward_with_state
from tomebench.reducers import REDUCERS, merge_tokens

SPEC = REDUCERS.get("pitome")


def cos(u, v) -> float:
    return float(u @ v / (u.norm().clamp_min(1e-12) * v.norm().clamp_min(1e-12)))


def reference(metric, x, size, p, r, layer, depth):
    """One image at a time, token by token: energies of the non-prefix tokens (mean ELU(cos - margin)), ranked
    highest first; the first ceil(depth / 2) blocks match alternate ranked tokens A -> B and merge the r best
    matched A tokens, later blocks merge each A of the 2r highest-energy tokens into its best B and protect the
    rest; size-weighted merges; output [prefix, unmerged A or protected, B]."""
    margin = 0.75 - 0.75 * layer / depth
    bsm = layer < math.ceil(depth / 2)
    outs, sizes = [], []
    for b in range(x.shape[0]):
        tokens = list(range(p, x.shape[1]))
        sims = {(i, j): cos(metric[b, i], metric[b, j]) for i in tokens for j in tokens}
        elu = torch.nn.functional.elu
        energy = {i: sum(elu(torch.tensor(sims[i, j] - margin)).item() for j in tokens) / len(tokens) for i in tokens}
        ranked = sorted(tokens, key=lambda i: -energy[i])
        if bsm:
            a, bb = ranked[::2], ranked[1::2]
            best = {i: max(bb, key=lambda j: sims[i, j]) for i in a}
            by_match = sorted(a, key=lambda i: -sims[i, best[i]])
            merged, stay = by_match[:r], by_match[r:]
        else:
            a, bb = ranked[: 2 * r][::2], ranked[: 2 * r][1::2]
            best = {i: max(bb, key=lambda j: sims[i, j]) for i in a}
            merged, stay = a, ranked[2 * r :]
        rows = [x[b, i] for i in range(p)] + [x[b, i] for i in stay]
        row_sizes = [size[b, i, 0] for i in range(p)] + [size[b, i, 0] for i in stay]
        for j in bb:
            members = [j] + [i for i in merged if best[i] == j]
            total = sum(size[b, i, 0] for i in members)
            rows.append(sum(x[b, i] * size[b, i, 0] for i in members) / total)
            row_sizes.append(total)
        outs.append(torch.stack(rows))
        sizes.append(torch.stack(row_sizes)[:, None])
    return torch.stack(outs), torch.stack(sizes)


@pytest.mark.parametrize("p", [0, 1, 2], ids=["no-cls", "cls", "cls+dist"])
@pytest.mark.parametrize("layer", [0, 3], ids=["bipartite-block", "protecting-block"])
@pytest.mark.parametrize("r", [1, 4, 7])
@pytest.mark.parametrize("given_size", [False, True])
def test_plan_is_the_plain_loop(p, layer, r, given_size):
    g = torch.Generator().manual_seed(p * 100 + layer * 10 + r)
    b, n, c = 2, 15 + p, 5
    metric = torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    size = torch.randint(1, 5, (b, n, 1), generator=g).to(torch.float64) if given_size else None
    tokens = tokens_for(metric, size, p, layer=layer, x=x)
    tokens = dataclasses.replace(tokens, depth=4)  # 4 blocks: 0, 1 bipartite; 2, 3 protecting
    out, out_size, _ = merge_tokens(SPEC(tokens, r), x, size, None)
    ones = torch.ones(b, n, 1, dtype=x.dtype)
    want, want_size = reference(metric, x, ones if size is None else size, p, r, layer, 4)
    assert out.shape == want.shape == (b, n - r, c)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_size, want_size, rtol=0, atol=0)


def test_budget_is_the_authors_on_deit_s():
    """The tokens after each block the authors' code leaves on DeiT-S (benchmarks/parity/pitome.py), and floor(T -
    T * ratio) of the non-cls tokens T."""
    with torch.device("meta"):
        model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    info = tomebench.patch(model, reducer="pitome")._tome
    assert not info.prop_attn and info.schedule == "native"  # the authors' attention never sees the sizes
    with torch.inference_mode():
        _, state = forward_with_state(model, torch.empty(1, 3, 224, 224, device="meta"))
    assert state.tokens == (180, 165, 151, 138, 127, 116, 106, 97, 89, 82, 75, 69)  # ratio 0.9125, the default
    tomebench.unpatch(model)
    info = tomebench.patch(model, reducer="pitome", ratio=0.925)._tome
    assert info.r[:3] == (math.floor(196 - 196 * 0.925), 13, 12)  # 14, then of 182 and 169
    assert [o.name for o in SPEC.options] == ["ratio"]


def family_models():
    from tests.patch import test_families as families

    return {"timm": lambda: make_vit("test_vit"), "tv": families.tv_vit, "hf": families.hf_vit}


@pytest.mark.parametrize("family", ["timm", "tv", "hf"])
@torch.inference_mode()
def test_ratio_one_is_the_unpatched_model(family):
    pytest.importorskip("transformers")
    model = family_models()[family]()
    size = 32 if family != "timm" else 160
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = model(x)
    before = out if isinstance(out, torch.Tensor) else out.logits
    tomebench.patch(model, reducer="pitome", ratio=1.0)
    out = model(x)
    torch.testing.assert_close(out if isinstance(out, torch.Tensor) else out.logits, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["test_vit", "test_vit2"], ids=["cls", "register-no-cls"])
@torch.inference_mode()
def test_an_image_does_not_depend_on_its_batch(name):
    model = make_vit(name)
    tomebench.patch(model, reducer="pitome", ratio=0.9)
    x = torch.randn(5, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    together = model(x)
    for i in range(5):
        torch.testing.assert_close(model(x[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-5)


def test_match_gmacs_picks_the_ratio_nearest_tomes_gmacs(demo):
    from tomebench.engine.matching import matched_configs
    from tomebench.engine.spec import RunSpec

    notes: list[str] = []
    planned = matched_configs(RunSpec(model="demo", reducers=("tome", "pitome")), demo, [2, 6], notes)
    chosen = [dict(cfg.options)["ratio"] for cfg in planned if cfg.reducer == "pitome"]
    assert len(chosen) == 2 and chosen[0] > chosen[1]  # more removed by ToMe, a lower keep ratio
    for cfg in planned:
        if cfg.reducer == "pitome":
            gap = float(cfg.note.split("(")[-1].rstrip("%)"))
            assert f"ratio={dict(cfg.options)['ratio']}" in cfg.note and abs(gap) < 5, cfg.note
