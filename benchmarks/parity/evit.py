"""tomebench's `evit` beside the authors' EViT (youweiliang/evit `evit.py`) on the same weights and images.

    .venv/bin/python benchmarks/parity/evit.py --authors /path/to/evit [--model deit_small_patch16_224]
        [--keep-rate 0.7] [--no-fuse] [--batch 32] [--seed 0]

Builds the timm model with random weights (fixed seed; no weights can be downloaded here), loads the same state
dict into the authors' `EViT` class (the DeiT-S/B prototype of `deit_*_patch16_shrink_base`: keep_rate at blocks
3, 6, 9), runs both on the same random images and prints the tokens each block left, top-1 agreement and the
largest logit difference; with torchprofile importable also the MACs the authors' own counter gives their model
beside tomebench's count (torch's flop counter / 2).

Glue for today's timm (nothing of the authors' code is changed): their `helpers.py` imports torchprofile at the
top for a MACs helper the comparison does not use, so a stand-in module is put in its place when it is missing;
the model is built from the `EViT` class directly, since their `_create_evit` passes `default_cfg` to a timm 0.4.12
`build_model_with_cfg` that no longer takes it; their module is imported after timm's model is made, because it
registers `deit_*` names over timm's. For a distilled model their `forward` unpacks `forward_features`' three outputs
as if they were two (the cls and distillation features end up indexed by image), so the glue averages the two
heads on `forward_features`' outputs itself, as their `forward` means to. The timm deprecation warnings of their
imports are silenced.
"""

from __future__ import annotations

import argparse
import sys
import types
import warnings

import timm
import torch

import tomebench
from tomebench.measure.cost import count_gflops
from tomebench.patch import forward_with_state

SHAPES = {  # timm name -> the authors' EViT arguments
    "deit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "deit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "deit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "deit_small_distilled_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, distilled=True),
}
LOCATIONS = (3, 6, 9)


def authors_module(path: str):
    sys.path.insert(0, path)
    try:
        import torchprofile  # noqa: F401
    except ImportError:  # only their MACs helper uses it
        sys.modules["torchprofile"] = types.SimpleNamespace(profile_macs=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evit
    return evit


def block_tokens(model, blocks) -> tuple[list[int], list]:
    """Hooks recording the tokens each block outputs (the authors' blocks return (x, n_tokens, idx))."""
    seen: list[int] = []

    def hook(_module, _inputs, output):
        seen.append((output[0] if isinstance(output, tuple) else output).shape[1])

    return seen, [block.register_forward_hook(hook) for block in blocks]


class Authors(torch.nn.Module):
    """The authors' model; for a distilled one, the mean of the two heads on their forward_features' outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.model.dist_token is None:
            return self.model(x)
        cls, dist, _ = self.model.forward_features(x)
        return (self.model.head(cls) + self.model.head_dist(dist)) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", required=True, help="a checkout of youweiliang/evit")
    parser.add_argument("--model", default="deit_small_patch16_224", choices=sorted(SHAPES))
    parser.add_argument("--keep-rate", type=float, default=0.7)
    parser.add_argument("--no-fuse", action="store_true", help="drop the inattentive tokens instead of fusing them")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fuse = not args.no_fuse
    torch.manual_seed(args.seed)
    ours = timm.create_model(args.model, pretrained=False).eval()
    evit = authors_module(args.authors)  # after timm's model: their module registers DeiT names of its own
    keep = [args.keep_rate if i in LOCATIONS else 1 for i in range(12)]
    theirs = evit.EViT(patch_size=16, keep_rate=keep, fuse_token=fuse, **SHAPES[args.model]).eval()
    theirs.load_state_dict(ours.state_dict())
    blocks = theirs.blocks
    theirs = Authors(theirs)
    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed + 1))

    with torch.inference_mode():
        their_tokens, hooks = block_tokens(theirs, blocks)
        their_logits = theirs(images)
        for hook in hooks:
            hook.remove()
        tomebench.patch(ours, "evit", keep_rate=args.keep_rate, fuse=fuse)
        our_logits, state = forward_with_state(ours, images)

    agree = (our_logits.argmax(-1) == their_logits.argmax(-1)).float().mean().item() * 100
    diff = (our_logits - their_logits).abs().max().item()
    print(
        f"model {args.model} (random init, seed {args.seed}), keep_rate {args.keep_rate}, fuse {fuse}, "
        f"batch {args.batch}, fp32, CPU"
    )
    print(f"tokens per block, authors:   {','.join(map(str, their_tokens[: len(blocks)]))}")
    print(f"tokens per block, tomebench: {','.join(map(str, state.tokens))}")
    print(f"kept token counts agree: {list(their_tokens[: len(blocks)]) == list(state.tokens)}")
    print(f"top-1 agreement: {agree:.2f}%   max |logit difference|: {diff:.3g} (logits' std {their_logits.std():.3g})")
    try:
        from torchprofile import profile_macs
    except ImportError:
        return
    image = torch.zeros(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_macs = profile_macs(theirs, image) / 1e9
    print(
        f"GMACs, the authors' counter (torchprofile) on their model: {their_macs:.4f}; "
        f"tomebench (torch's flop counter / 2): {count_gflops(ours, image) / 2:.4f}"
    )


if __name__ == "__main__":
    main()
