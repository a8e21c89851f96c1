"""Parity of tomebench's `pitome` with the authors' code (hchautran/PiToMe, the DeiT/timm patch), run side by side
on the same randomly initialised timm models and images.

    .venv/bin/python benchmarks/parity/pitome.py --authors /path/to/PiToMe [--batch-size 8]

Prints, per (model, ratio): the tokens after each block of both and whether they agree, top-1 agreement and the
largest |logit difference|.

Glue for today's timm (1.0), all here, none in their files:
- their package __init__ files import every patch (BERT, BLIP, CLIP: transformers, LAVIS); only
  algo/pitome/merge.py, patch/timm.py and patch/deit.py are loaded, through stub parent packages;
- their PiToMeVisionTransformer.forward_features reads `self.dist_token` and `self.pre_logits`, which timm 1.0's
  VisionTransformer no longer has, and returns pooled features that timm 1.0's forward_head would pool again. So the
  model-level forward is restated here exactly as theirs does it (the per-forward ratio and use_bsm_pitome lists
  of PiToMeVisionTransformer.forward, cls token, position embedding, their blocks, norm, the head on the cls token);
  every block is their PiToMeBlock with their PiToMeAttention. LayerScale and q/k norms, which their copied forward
  leaves out, are identities in DeiT (checked).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import sys
import types
from pathlib import Path

import timm
import torch
from torch import nn

import tomebench
from tomebench.patch import forward_with_state

CASES = (
    ("deit_small_patch16_224", (0.9125, 0.925, 0.95)),
    ("deit_tiny_patch16_224", (0.9,)),
    ("deit_base_patch16_224", (0.925,)),
)


def load_authors(root: Path) -> types.ModuleType:
    """algo/pitome/patch/deit.py (and the timm patch and merge.py it imports), without the package __init__ files."""
    sys.path.insert(0, str(root))
    for name, folder in (
        ("algo", root / "algo"),
        ("algo.pitome", root / "algo" / "pitome"),
        ("algo.pitome.patch", root / "algo" / "pitome" / "patch"),
    ):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]
        sys.modules[name] = stub
    return importlib.import_module("algo.pitome.patch.deit")


def authors_model(deit: types.ModuleType, base: nn.Module, ratio: float) -> nn.Module:
    model = copy.deepcopy(base)
    for block in model.blocks:
        for part in (block.ls1, block.ls2, block.attn.q_norm, block.attn.k_norm, getattr(block.attn, "norm", None)):
            assert part is None or isinstance(part, nn.Identity), "a part their forward leaves out is not identity"
    deit.apply_patch(model)  # their defaults: no trace_source, prop_attn False
    model.ratio = ratio  # as main_ic.py sets it
    return model.eval()


def authors_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """PiToMeVisionTransformer.forward + forward_features, restated for timm 1.0 (see the glue above)."""
    depth = len(model.blocks)
    model._info["ratio"] = [model.ratio] * depth
    bsm_layers = math.ceil(depth * 0.5)
    model._info["use_bsm_pitome"] = [True] * bsm_layers + [False] * (depth - bsm_layers)
    model._info["size"] = None
    model._info["source"] = None
    x = model.patch_embed(images)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    x = model.pos_drop(x + model.pos_embed)
    counts = []
    for block in model.blocks:
        x = block(x)
        counts.append(x.shape[1])
    x = model.norm(x)
    return model.head(x[:, 0]), counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of hchautran/PiToMe")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    deit = load_authors(args.authors.resolve())
    print("| model | ratio | tokens per block (tomebench = authors) | top-1 agree | max abs logit diff |")
    print("| --- | --- | --- | --- | --- |")
    for name, ratios in CASES:
        torch.manual_seed(args.seed)
        base = timm.create_model(name, pretrained=False).eval()
        images = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed))
        for ratio in ratios:
            theirs = authors_model(deit, base, ratio)
            ours = tomebench.patch(copy.deepcopy(base), reducer="pitome", ratio=ratio)
            with torch.inference_mode():
                their_logits, their_counts = authors_forward(theirs, images)
                our_logits, state = forward_with_state(ours, images)
            agree = (their_logits.argmax(-1) == our_logits.argmax(-1)).float().mean().item() * 100
            diff = (their_logits - our_logits).abs().max().item()
            same = list(state.tokens) == their_counts
            counts = ",".join(map(str, state.tokens))
            verdict = "agree" if same else f"DIFFER: {their_counts}"
            print(f"| {name} | {ratio} | {counts} ({verdict}) | {agree:.1f}% | {diff:.2e} |")


if __name__ == "__main__":
    main()
