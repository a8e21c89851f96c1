"""ToFu parity: PiToMe's port (hchautran/PiToMe `algo/tofu`) against tomebench's `tofu` with `port=True`, same
weights, same images; and, on the same model, how far the paper's rules (tomebench's default) are from the port.

    .venv/bin/python benchmarks/parity/tofu.py --authors /path/to/PiToMe [--model deit_small_patch16_224]
        [--ratio 0.9125] [--images 32] [--batch 16]

No code by ToFu's authors was found, so the port is the only released code to compare with. The model is timm's,
random init with a fixed seed (no weights can be downloaded). The port's side is its `apply_patch`
(algo/tofu/patch/deit.py: every timm Block becomes their `ToFuBlock`, every Attention their `ToFuAttention`,
blocks i <= depth // 2 'prune', the later ones 'tofu'), which calls `bipartite_soft_matching` (algo/tofu/merge.py)
with the ratio main_ic.py sets (`--ratio 0.9125`). tomebench runs `patch(model, "tofu", r, port=True)` with r the
port's ratio budget written per block (`ratio_schedule`: floor(T - T * ratio) of the T tokens each block receives,
cls included). Glue for today's timm, all here, none in their files:

- their package __init__ files import every patch (BERT, BLIP, CLIP: transformers, LAVIS); only algo/tofu/merge.py,
  patch/timm.py and patch/deit.py are loaded, through empty parent packages (common.authors_module);
- their ToFuVisionTransformer.forward_features reads `self.dist_token` and `self.pre_logits`, which timm 1.0's
  VisionTransformer no longer has, and returns pooled features that timm 1.0's forward_head would pool again. So the
  model-level forward is restated here as theirs does it (the per-forward ratio list their blocks pop, sizes and
  sources reset, cls token, position embedding, their blocks, norm, the head on the cls token); every block is
  their ToFuBlock with their ToFuAttention. LayerScale and q/k norms, which their copied forward leaves out, are
  identities in DeiT (checked).

Prints the tokens each block kept, top-1 agreement, the largest |logit difference| and GMACs per image.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import authors_module, images, report  # noqa: E402

import tomebench  # noqa: E402
from tomebench.measure.cost import count_gflops  # noqa: E402
from tomebench.patch import forward_with_state, num_input_tokens, tokens_after_blocks  # noqa: E402
from tomebench.reducers.tofu import ratio_schedule  # noqa: E402


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def authors_model(root: Path, base: nn.Module, ratio: float) -> nn.Module:
    deit = authors_module(root, "algo.tofu.patch.deit")
    model = copy.deepcopy(base)
    for block in model.blocks:
        for part in (block.ls1, block.ls2, block.attn.q_norm, block.attn.k_norm, getattr(block.attn, "norm", None)):
            assert part is None or isinstance(part, nn.Identity), "a part their forward leaves out is not identity"
    deit.apply_patch(model)  # their defaults: no trace_source, prop_attn True (their sizes are never set)
    model.ratio = ratio  # as main_ic.py sets it
    return model.eval()


def authors_forward(model: nn.Module, x: torch.Tensor, tokens: bool = False):
    """ToFuVisionTransformer.forward + forward_features, restated for timm 1.0 (see the glue above): logits (B,
    classes) and the tokens after each block; with `tokens`, the final normed tokens (B, N', C) instead."""
    model._info["ratio"] = [model.ratio] * len(model.blocks)
    model._info["size"] = None
    model._info["source"] = None
    x = model.patch_embed(x)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    x = model.pos_drop(x + model.pos_embed)
    counts = []
    for block in model.blocks:
        x = block(x)
        counts.append(x.shape[1])
    if tokens:
        return model.norm(x)
    return model.head(model.norm(x)[:, 0]), tuple(counts)


def gmacs(forward, image: torch.Tensor) -> float:
    """Multiply-adds of one forward, counted as tomebench counts them (its FLOP counter, its extra formulas)."""
    from torch.utils.flop_counter import FlopCounterMode

    from tomebench.measure.cost import _EXTRA_FORMULAS

    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        forward(image)
    return counter.get_total_flops() / 2e9


def run_tomebench(base: nn.Module, x: torch.Tensor, batch: int, r: tuple[int, ...] | None, **options):
    """Logits (B, classes), tokens after each block and GMACs per image of tomebench's tofu at r (None:
    unpatched); options go to `patch`."""
    model = copy.deepcopy(base)
    if r is None:
        n0 = num_input_tokens(model)
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in x.split(batch)])
            return logits, (n0,) * len(model.blocks), count_gflops(model, x[:1]) / 2
    tomebench.patch(model, "tofu", r, **options)
    logits, tokens = [], None
    with torch.no_grad():
        for chunk in x.split(batch):
            out, state = forward_with_state(model, chunk)
            logits.append(out)
            tokens = state.tokens
        cost = count_gflops(model, x[:1]) / 2
    return torch.cat(logits), tokens, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of hchautran/PiToMe")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--ratio", type=float, default=0.9125, help="the port's main_ic.py --ratio default")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = images(args.images)
    base = build(args.model, args.seed)
    r = ratio_schedule(args.ratio, num_input_tokens(base), len(base.blocks))

    theirs = authors_model(args.authors.resolve(), base, args.ratio)
    logits, tokens = [], None
    with torch.no_grad():
        for chunk in x.split(args.batch):
            out, tokens = authors_forward(theirs, chunk)
            logits.append(out)
        authors_gmacs = gmacs(lambda image: authors_forward(theirs, image), x[:1])
    authors = ("PiToMe port (algo/tofu)", torch.cat(logits), tokens)

    port, port_tokens, port_gmacs = run_tomebench(base, x, args.batch, r, port=True)
    paper, paper_tokens, paper_gmacs = run_tomebench(base, x, args.batch, r)
    paper_np, paper_np_tokens, _ = run_tomebench(base, x, args.batch, r, prop_attn=False)
    plain, plain_tokens, plain_gmacs = run_tomebench(base, x, args.batch, None)
    rows = [
        authors,
        ("tomebench tofu port=True", port, port_tokens),
        ("tomebench tofu (the paper's rules)", paper, paper_tokens),
        ("tomebench tofu (the paper's rules, proportional attention off)", paper_np, paper_np_tokens),
        ("unpatched timm (for scale)", plain, plain_tokens),
    ]
    title = (
        f"{args.model}, random init (seed {args.seed}), {args.images} random images, batch {args.batch}, fp32 CPU, "
        f"ratio {args.ratio} (r per block {','.join(map(str, r))}); torch {torch.__version__}, timm {timm.__version__}"
    )
    print("\n".join(report(title, rows, authors[0])))
    print(
        f"\nGMACs per image (torch's FLOP counter on all): port {authors_gmacs:.4f}, tomebench port=True "
        f"{port_gmacs:.4f}, tomebench paper rules {paper_gmacs:.4f}, unpatched {plain_gmacs:.4f}"
    )
    # Token for token: the final normed tokens of the port and of port=True, every token in the same order.
    ours = copy.deepcopy(base)
    tomebench.patch(ours, "tofu", r, port=True)
    with torch.no_grad():
        chunk = x[: args.batch]
        theirs_final, ours_final = authors_forward(theirs, chunk, tokens=True), tokens_after_blocks(ours, chunk)
    same_shape = theirs_final.shape == ours_final.shape
    diff = (theirs_final - ours_final).abs().max().item() if same_shape else float("nan")
    print(f"\nfinal tokens (B, N', C) {tuple(theirs_final.shape)}: max abs diff port vs port=True {diff:.3g}")
    print()
    title = "the paper's rules against tomebench's port option, same model, same r:"
    print("\n".join(report(title, rows[1:], rows[1][0])[2:]))


if __name__ == "__main__":
    main()
