"""DCT parity: PiToMe's released DCT port (`algo/dct`) against tomebench's `dct` reducer, same weights, same images.

    .venv/bin/python benchmarks/parity/dct.py --authors /path/to/PiToMe [--model deit_small_patch16_224]
        [--ratio 0.9] [--images 64] [--batch 16]

The model is timm's, random init with a fixed seed (no weights can be downloaded). The authors' side is their
`apply_patch` (algo/dct/patch/deit.py), which swaps every timm Block for their `DCTBlock` (algo/dct/patch/timm.py)
calling `dc_transform` (algo/dct/merge.py) after the MLP. Glue for today's timm, and nothing else:

- their `DCTVisionTransformer.forward_features` reads `self.dist_token` and `self.pre_logits`, which timm 1.x's
  VisionTransformer no longer has, so the model's class swap is undone (the blocks stay theirs) and timm's own
  forward runs; what their forward adds (the list of
  per-block ratios their blocks pop, and a FLOP count) is done here: `_info["ratio"]` is refilled before each call.
- `dc_transform` returns float16 whatever came in (`.type(torch.half)`); on a float32 CPU model the next block's
  Linear refuses a float16 input, so each DCTBlock's output is cast back to the block input's dtype. The values
  keep the port's float16 rounding: that row is "as released". A second row removes the cast (their module's
  `torch.half` pointed at float32) to show what is left when the dtype follows the input, as tomebench does.

Prints the tokens each block kept, top-1 agreement and the largest |logit difference| against the authors'.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import authors_module, images, report, token_hook  # noqa: E402

import tomebench  # noqa: E402
from tomebench.patch import forward_with_state, num_input_tokens  # noqa: E402


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def run_authors(root: Path, name: str, seed: int, ratio: float, x: torch.Tensor, batch: int, fp16_cast: bool):
    deit = authors_module(root, "algo.dct.patch.deit").apply_patch
    merge = sys.modules["algo.dct.merge"]
    merge.torch = torch if fp16_cast else types.SimpleNamespace(**{**vars(torch), "half": torch.float32})
    model = build(name, seed)
    original_class = type(model)
    deit(model)
    model.__class__ = original_class  # glue: timm's own forward over their DCTBlocks (see the docstring)
    model.ratio = ratio
    blocks = list(model.blocks)

    def cast_back(block, inputs, out):  # glue: the next block's Linear needs the model's dtype
        return out.to(inputs[0].dtype)

    handles = [block.register_forward_hook(cast_back) for block in blocks]
    seen, token_handles = token_hook(blocks)
    logits, tokens = [], None
    with torch.no_grad():
        for chunk in x.split(batch):
            model._info["ratio"] = [model.ratio] * len(blocks)  # what their forward does before the blocks
            seen.clear()
            logits.append(model(chunk))
            tokens = tuple(seen)
    for handle in handles + token_handles:
        handle.remove()
    return torch.cat(logits), tokens


def run_tomebench(name: str, seed: int, ratio: float | None, x: torch.Tensor, batch: int):
    model = build(name, seed)
    logits, tokens = [], None
    with torch.no_grad():
        if ratio is None:
            n0 = num_input_tokens(model)
            return torch.cat([model(chunk) for chunk in x.split(batch)]), (n0,) * len(model.blocks)
        tomebench.patch(model, "dct", ratio=ratio)
        for chunk in x.split(batch):
            out, state = forward_with_state(model, chunk)
            logits.append(out)
            tokens = state.tokens
    return torch.cat(logits), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of hchautran/PiToMe")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    x = images(args.images)
    authors, authors_tokens = run_authors(args.authors, args.model, args.seed, args.ratio, x, args.batch, True)
    no_cast, no_cast_tokens = run_authors(args.authors, args.model, args.seed, args.ratio, x, args.batch, False)
    ours, our_tokens = run_tomebench(args.model, args.seed, args.ratio, x, args.batch)
    plain, plain_tokens = run_tomebench(args.model, args.seed, None, x, args.batch)
    rows = [
        ("PiToMe algo/dct as released (fp16 cast)", authors, authors_tokens),
        ("PiToMe algo/dct, fp16 cast removed", no_cast, no_cast_tokens),
        ("tomebench dct", ours, our_tokens),
        ("unpatched (for scale)", plain, plain_tokens),
    ]
    title = (
        f"{args.model}, random init (seed {args.seed}), {args.images} random images, batch {args.batch}, fp32 CPU, "
        f"ratio {args.ratio}; torch {torch.__version__}, timm {timm.__version__}"
    )
    print("\n".join(report(title, rows, "PiToMe algo/dct as released (fp16 cast)")))
    print()
    print("\n".join(report("against the authors' code with the fp16 cast removed:", rows[1:3], rows[1][0])[2:]))


if __name__ == "__main__":
    main()
