"""Parity of tomebench's `diffrate` with the authors' code (OpenGVLab/DiffRate), run side by side on the same
randomly initialised timm models and images, each released schedule loaded from the authors' own
compression_rate.json as their main.py --load_compression_rate does.

    .venv/bin/python benchmarks/parity/diffrate.py --authors /path/to/DiffRate [--batch-size 8]

Prints, per (model, target): the kept tokens per block of both and whether they agree, the authors' FLOP count
(calculate_flop_inference) beside tomebench's GMACs, top-1 agreement and the largest |logit difference|.

Glue for today's timm (the authors tested timm 0.4.5), all here, none in their files:
- their package's __init__ imports its visualisation and CAFormer patches (scipy, a top-level caformer.py); only
  DiffRate/patch/deit.py and what it imports are loaded, through stub parent packages;
- timm's Block now names its residual drop paths drop_path1 / drop_path2; their DiffRateBlock calls
  self.drop_path, so each block gets an identity drop_path (eval: what both are). LayerScale, q/k norms and the
  attention's output norm are identities in DeiT, which their forward (copied from an old timm) leaves out; this
  is checked.
- their forward returns (logits, flops); it is called with return_flop=False, and the flops asked for apart.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import json
import sys
import types
from pathlib import Path

import timm
import torch
from torch import nn

import tomebench
from tomebench.measure.cost import count_gflops
from tomebench.patch import forward_with_state

CASES = (
    ("deit_small_patch16_224", "ViT-S-DeiT", ("2.3", "2.5", "2.7", "2.9", "3.1")),
    ("deit_tiny_patch16_224", "ViT-T-DeiT", ("0.8",)),
    ("deit_base_patch16_224", "ViT-B-DeiT", ("11.5",)),
)


def load_authors(root: Path) -> types.ModuleType:
    """DiffRate/patch/deit.py as a module, without running the package __init__ files (see the glue above)."""
    sys.path.insert(0, str(root))
    for name, folder in (("DiffRate", root / "DiffRate"), ("DiffRate.patch", root / "DiffRate" / "patch")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]
        sys.modules[name] = stub
    return importlib.import_module("DiffRate.patch.deit")


def authors_model(deit: types.ModuleType, base: nn.Module, schedule: dict) -> nn.Module:
    model = copy.deepcopy(base)
    for block in model.blocks:
        for part in (block.ls1, block.ls2, block.attn.q_norm, block.attn.k_norm, getattr(block.attn, "norm", None)):
            assert part is None or isinstance(part, nn.Identity), "a part their forward leaves out is not identity"
        block.drop_path = nn.Identity()
    deit.apply_patch(model)
    prune = ast.literal_eval(schedule["prune_kept_num"])
    merge = ast.literal_eval(schedule["merge_kept_num"])
    model.set_kept_num(prune, merge)
    return model.eval()


def authors_tokens(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    counts: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o: counts.append(o.shape[1])) for b in model.blocks]
    try:
        logits = model(images, return_flop=False)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of OpenGVLab/DiffRate")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    deit = load_authors(args.authors.resolve())
    released = json.loads((args.authors / "compression_rate.json").read_text())
    torch.manual_seed(args.seed)
    print("| model | target | tokens per block (tomebench = authors) | authors' GMACs | tomebench GMACs ", end="")
    print("| top-1 agree | max abs logit diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, key, targets in CASES:
        torch.manual_seed(args.seed)
        base = timm.create_model(name, pretrained=False).eval()
        images = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed))
        for target in targets:
            theirs = authors_model(deit, base, released[key][target])
            ours = tomebench.patch(copy.deepcopy(base), reducer="diffrate", target=float(target))
            with torch.inference_mode():
                their_logits, their_counts = authors_tokens(theirs, images)
                their_gmacs = float(theirs.calculate_flop_inference()) / 1e9
                our_logits, state = forward_with_state(ours, images)
            our_gmacs = count_gflops(ours, images[:1]) / 2
            agree = (their_logits.argmax(-1) == our_logits.argmax(-1)).float().mean().item() * 100
            diff = (their_logits - our_logits).abs().max().item()
            same = list(state.tokens) == their_counts
            counts = ",".join(map(str, state.tokens))
            print(
                f"| {name} | {target} | {counts} ({'agree' if same else 'DIFFER: ' + str(their_counts)}) | "
                f"{their_gmacs:.4f} | {our_gmacs:.4f} | {agree:.1f}% | {diff:.2e} |"
            )


if __name__ == "__main__":
    main()
