"""tofu against plain-loop references, one per rule (ToMe's matching written out pair by pair; the prune, the
paper's MLERP and the PiToMe port's arithmetic written out token by token), MLERP's norm property, the block split
and the port's ratio budget, and inside real models (r = 0 is the unpatched model). The shared tests
(test_invariants, test_families, test_tome_parity) run it too: batch independence, every family, torch.compile
without a graph break."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import tomebench
from tests.helpers import make_vit
from tests.reducers.layers import tokens_for
from tomebench.reducers import REDUCERS, BipartitePrune, Mlerp, merge_tokens
from tomebench.reducers.tofu import merges, ratio_schedule

SPEC = REDUCERS.get("tofu")
DEPTH = 4  # blocks 0..2 prune, block 3 merges (3 > 0.5 * 4)
PRUNE_BLOCK, MERGE_BLOCK = 0, 3


def cos(u, v) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def matches(metric, p: int, r: int) -> list[tuple[list[int], dict[int, int], list[int]]]:
    """Per image, ToMe's bipartite soft matching written out: A = even, B = odd positions of the whole sequence;
    prefix A tokens never merge, nothing merges into a prefix B token; each A token's best B partner by cosine;
    the r A tokens with the best partner merge. Returns (unmerged A in output order, {merged A: its B}, B)."""
    out = []
    n = metric.shape[1]
    for m in metric:
        a = [i for i in range(0, n, 2) if i >= p]
        b = [j for j in range(1, n, 2) if j >= p]
        best = {i: max(b, key=lambda j: cos(m[i], m[j])) for i in a}
        ranked = sorted(a, key=lambda i: -cos(m[i], m[best[i]]))
        merged = {i: best[i] for i in ranked[:r]}
        unmerged = sorted(ranked[r:]) if p else ranked[r:]  # with a prefix token the authors restore token order
        out.append((unmerged, merged, b))
    return out


def reference(metric, x, size, p: int, r: int, rule: str):
    """One image at a time, token by token: [prefix, unmerged A, B], each B token with the A tokens matched to it
    pruned (its own row), MLERP-merged (size-weighted mean over its own norm times the largest member norm) or as the
    port does it (plain mean over the B token's original norm times the largest member norm, for every B token)."""
    outs, sizes = [], []
    for k, (unmerged, merged, b) in enumerate(matches(metric, p, r)):
        rows = [x[k, i] for i in range(p)] + [x[k, i] for i in unmerged]
        row_sizes = [size[k, i, 0] for i in range(p)] + [size[k, i, 0] for i in unmerged]
        for j in b:
            members = [j] + [i for i, dst in merged.items() if dst == j]
            top = max(x[k, i].norm() for i in members)
            if rule == "prune" or (rule == "mlerp" and len(members) == 1):
                rows.append(x[k, j])
                row_sizes.append(size[k, j, 0])
            elif rule == "mlerp":
                total = sum(size[k, i, 0] for i in members)
                mean = sum(x[k, i] * size[k, i, 0] for i in members) / total
                rows.append(mean / mean.norm() * top)
                row_sizes.append(total)
            else:  # port
                mean = sum(x[k, i] for i in members) / len(members)
                rows.append(mean / x[k, j].norm() * top)
                row_sizes.append(size[k, j, 0])
        outs.append(torch.stack(rows))
        sizes.append(torch.stack(row_sizes)[:, None])
    return torch.stack(outs), torch.stack(sizes)


def layer(p: int, seed: int, given_size: bool, n: int = 15, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    metric = torch.randn(2, n + p, 4, generator=g, dtype=torch.float64)
    x = torch.randn(2, n + p, 5, generator=g, dtype=torch.float64).to(dtype)
    size = torch.randint(1, 5, (2, n + p, 1), generator=g).to(dtype) if given_size else None
    return metric, x, size


def plan(metric, x, size, p: int, r: int, block: int, **options):
    tokens = dataclasses.replace(tokens_for(metric, size, p, layer=block, x=x), depth=DEPTH)
    return SPEC(tokens, r, **options)


RULES = {"prune": (PRUNE_BLOCK, {}), "mlerp": (MERGE_BLOCK, {}), "port": (MERGE_BLOCK, {"port": True})}


@pytest.mark.parametrize("p", [0, 1, 2], ids=["no-cls", "cls", "cls+dist"])
@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("r", [1, 4, 7])
@pytest.mark.parametrize("given_size", [False, True])
def test_plan_is_the_plain_loop(p, rule, r, given_size):
    metric, x, size = layer(p, p * 100 + r * 10 + given_size, given_size)
    block, options = RULES[rule]
    out, out_size, _ = merge_tokens(plan(metric, x, size, p, r, block, **options), x, size, None)
    ones = torch.ones_like(x[..., :1])
    want, want_size = reference(metric, x, ones if size is None else size, p, r, rule)
    assert out.shape == want.shape == (2, x.shape[1] - r, 5)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_size, want_size, rtol=0, atol=0)
    assert torch.equal(out[:, :p], x[:, :p])


def test_prune_keeps_exact_copies_and_no_sizes():
    metric, x, _ = layer(1, 3, False)
    merge = plan(metric, x, None, 1, 5, PRUNE_BLOCK)
    assert isinstance(merge, BipartitePrune)
    out, size, _ = merge.apply(x, None, None)
    assert size is None  # a prune creates no sizes, so attention stays unbiased
    assert all(bool((x[0] == row).all(dim=-1).any()) for row in out[0])


def test_mlerp_keeps_the_largest_norm_of_each_group():
    metric, x, size = layer(1, 4, True, n=30)
    n = x.shape[1]
    source = torch.eye(n, dtype=x.dtype).expand(2, n, n).clone()  # (B, N, N0): each token is itself
    merge = plan(metric, x, size, 1, 12, MERGE_BLOCK)
    assert isinstance(merge, Mlerp)
    out, out_size, source = merge_tokens(merge, x, size, source)
    norms = x.norm(dim=-1)  # (B, N)
    top = (source * norms[:, None, :]).amax(dim=-1)  # (B, N') the largest norm among each token's members
    torch.testing.assert_close(out.norm(dim=-1), top, rtol=1e-12, atol=1e-12)
    # A plain (size-weighted) average would have shrunk every real merge.
    average = (source * size.transpose(1, 2)) @ x / out_size
    grouped = source.sum(dim=-1) > 1
    assert grouped.any() and bool((average.norm(dim=-1)[grouped] < top[grouped]).all())
    torch.testing.assert_close(out_size.sum(dim=1), size.sum(dim=1), rtol=0, atol=0)  # sizes add up


def test_the_port_divides_by_the_destination_norm():
    """The port's norm is not MLERP's: its output norm is ||mean|| * max ||x_i|| / ||x_dst||, which is below the
    largest norm whenever the mean is shorter than the B token (the norm the paper sets out to keep)."""
    metric, x, _ = layer(1, 5, False, n=30)
    n = x.shape[1]
    source = torch.eye(n, dtype=x.dtype).expand(2, n, n).clone()
    out, _, source = plan(metric, x, None, 1, 12, MERGE_BLOCK, port=True).apply(x, None, source)
    paper, _, _ = plan(metric, x, None, 1, 12, MERGE_BLOCK).apply(x, None, None)
    grouped = source.sum(dim=-1) > 1
    top = (source * x.norm(dim=-1)[:, None, :]).amax(dim=-1)
    assert bool((out.norm(dim=-1)[grouped] < top[grouped] - 1e-9).any())
    assert not torch.allclose(out, paper)
    # The same directions: only the norms differ.
    torch.testing.assert_close(out / out.norm(dim=-1, keepdim=True), paper / paper.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rule", list(RULES))
def test_dtype_follows_the_input(dtype, rule):
    metric, x, size = layer(1, 6, True, dtype=dtype)
    block, options = RULES[rule]
    out, out_size, _ = merge_tokens(plan(metric, x, size, 1, 5, block, **options), x, size, None)
    assert out.dtype == dtype and out_size.dtype == dtype
    want, _ = reference(metric, x.double(), size.double(), 1, 5, rule)
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2)


def test_blocks_after_half_the_depth_merge():
    assert [merges(i, 12, 0.5) for i in range(12)] == [False] * 7 + [True] * 5  # the port's i > 12 // 2
    assert [merges(i, 11, 0.5) for i in range(11)] == [i > 11 // 2 for i in range(11)]
    assert not any(merges(i, 12, 1.0) for i in range(12)) and all(merges(i, 12, -1.0) for i in range(12))


def test_ratio_schedule_is_the_ports_budget():
    """floor(T - T * ratio) of the T tokens each block receives, the cls token counted (the port's T)."""
    counts = ratio_schedule(0.9125, 197, 12)
    assert counts[:3] == (math.floor(197 - 197 * 0.9125), 15, 14)  # 17, then of 180 and of 165
    assert ratio_schedule(1.0, 197, 12) == (0,) * 12


def test_the_ports_tokens_per_block_on_deit_s():
    """The tokens after each block the port leaves on DeiT-S at its default ratio (benchmarks/parity/tofu.py)."""
    import timm

    from tomebench.patch import forward_with_state

    with torch.device("meta"):
        model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    tomebench.patch(model, reducer="tofu", r=ratio_schedule(0.9125, 197, 12), port=True)
    with torch.inference_mode():
        _, state = forward_with_state(model, torch.empty(1, 3, 224, 224, device="meta"))
    assert state.tokens == (180, 165, 151, 138, 126, 115, 105, 96, 88, 81, 74, 68)


@torch.inference_mode()
@pytest.mark.parametrize("port", [False, True])
def test_r0_is_the_unpatched_model(port):
    model = make_vit("test_vit")
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    before = model(x)
    tomebench.patch(model, reducer="tofu", r=0, port=port)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_a_patched_vit_prunes_then_merges():
    """test_vit (6 blocks): blocks 0..3 prune (no sizes yet), 4 and 5 merge; the port never creates sizes."""
    from tomebench.patch import forward_with_state

    model = make_vit("test_vit")
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    tomebench.patch(model, reducer="tofu", r=4, trace_source=True)
    _, state = forward_with_state(model, x)
    assert state.tokens == tuple(101 - 4 * (i + 1) for i in range(6))
    assert state.size is not None and state.size.max() >= 2
    tomebench.unpatch(model)
    tomebench.patch(model, reducer="tofu", r=4, port=True)
    _, state = forward_with_state(model, x)
    assert state.size is None
