"""tomebench's `ppt` beside the authors' PPT (xjwu1024/PPT `ppt_deit.py`) on the same weights and images.

    .venv/bin/python benchmarks/parity/ppt.py --authors /path/to/PPT [--model deit_small_patch16_224] [--r 50]
        [--threshold 7e-5 | --threshold median] [--batch 32] [--seed 0]

Builds the timm model with random weights (fixed seed; no weights can be downloaded here), patches a copy with the
authors' `apply_patch(model, pp_loc_list=[3, 6, 9], threshold=...)` and `model.r = r` (their main.py's evaluation
path, proportional attention on) and another with tomebench's `ppt`, runs both on the same random images and
prints the tokens each block left, how many images pooled at each reducing block, top-1 agreement and the largest
logit difference; with torchprofile importable also the MACs their counter gives (main.py's `profile_macs` on one
random image) beside tomebench's count.

Random weights give nearly uniform attention, so every image's significance scores vary little and, at the
authors' 7e-5, every image pools. `--threshold median` sets the threshold to the median variance of the scores at
the first reducing block (computed here from the block's attention), so half the batch pools and half prunes there.

Glue: none for the model (their patch runs on timm 1.0.31 as it is); `tome.py` and `ppt_deit.py` are imported from
their checkout. Their module is imported after timm's model is made.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings

import timm
import torch

import tomebench
from tomebench.measure.cost import count_gflops
from tomebench.patch import forward_with_state

LOCATIONS = [3, 6, 9]


def score_variance(model, images: torch.Tensor, block: int) -> torch.Tensor:
    """(B,) the variance of the authors' significance scores at `block` of the unpatched model: cls attention
    summed over heads times value norms, cls left out, normalised (written here from their rule)."""
    x = model._pos_embed(model.patch_embed(images))
    for blk in model.blocks[:block]:
        x = blk(x)
    attn = model.blocks[block].attn
    h = model.blocks[block].norm1(x)
    b, n, c = h.shape
    q, k, v = attn.qkv(h).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    probs = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)  # (B, H, N, N)
    scores = probs[:, :, 0].sum(dim=1) * v.transpose(1, 2).reshape(b, n, c).norm(dim=-1)
    scores = scores[:, 1:] / scores[:, 1:].sum(dim=1, keepdim=True)
    return scores.var(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", required=True, help="a checkout of xjwu1024/PPT")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--r", type=int, default=50)
    parser.add_argument("--threshold", default="7e-5", help="a number, or median (half the batch pools)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    ours = timm.create_model(args.model, pretrained=False).eval()
    theirs = copy.deepcopy(ours)
    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.inference_mode():
        threshold = (
            score_variance(ours, images, LOCATIONS[0]).median().item()
            if args.threshold == "median"
            else float(args.threshold)
        )
    sys.path.insert(0, args.authors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ppt_deit

    ppt_deit.apply_patch(theirs, pp_loc_list=LOCATIONS, threshold=threshold)
    theirs.r = args.r
    tokens: list[int] = []
    pooled: list[int] = []
    hooks = [blk.register_forward_hook(lambda _m, _i, out: tokens.append(out.shape[1])) for blk in theirs.blocks]
    for index in LOCATIONS:  # their attention returns (x, k mean, scores with the cls token's 2 first)
        hooks.append(
            theirs.blocks[index].attn.register_forward_hook(
                lambda _m, _i, out: pooled.append(int((out[2][:, 1:].var(dim=1) < threshold).sum()))
            )
        )
    with torch.inference_mode():
        their_logits = theirs(images)
        for hook in hooks:
            hook.remove()
        tomebench.patch(ours, "ppt", r=args.r, threshold=threshold)
        our_logits, state = forward_with_state(ours, images)

    agree = (our_logits.argmax(-1) == their_logits.argmax(-1)).float().mean().item() * 100
    diff = (our_logits - their_logits).abs().max().item()
    print(
        f"model {args.model} (random init, seed {args.seed}), r {args.r} at blocks {LOCATIONS}, threshold "
        f"{threshold:.4g}, proportional attention, batch {args.batch}, fp32, CPU"
    )
    print(f"images pooled at blocks {LOCATIONS} (authors): {pooled} of {args.batch}")
    print(f"tokens per block, authors:   {','.join(map(str, tokens))}")
    print(f"tokens per block, tomebench: {','.join(map(str, state.tokens))}")
    print(f"kept token counts agree: {tokens == list(state.tokens)}")
    print(f"top-1 agreement: {agree:.2f}%   max |logit difference|: {diff:.3g} (logits' std {their_logits.std():.3g})")
    try:
        from torchprofile import profile_macs
    except ImportError:
        return
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed + 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_macs = profile_macs(theirs, image) / 1e9
    ours_macs = count_gflops(ours, image) / 2
    print(f"GMACs, the authors' counter (torchprofile) on their model: {their_macs:.4f}; tomebench: {ours_macs:.4f}")


if __name__ == "__main__":
    main()
