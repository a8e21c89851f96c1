"""MCTF parity: the authors' released model (mlvlab/MCTF `models/deit.py`, `models/modules/blocks.py`,
`utils/mctf.py`) against tomebench's `mctf` reducer on timm's DeiT, same weights, same images.

    .venv/bin/python benchmarks/parity/mctf.py --authors /path/to/MCTF [--model deit_small_patch16_224]
        [--r 16] [--images 32] [--batch 16] [--mctf-type 16,0,0,1,1,1,20,40,1,1,0] [--activate 1..11]

The model is timm's, random init with a fixed seed (no weights can be downloaded); its state dict is loaded into
the authors' own `VisionTransformer` (`models/deit.py`: the same parameter names; strict, nothing missing), built
with their evaluation script's arguments (`run/eval_deit_s_mctf.sh`: `--mctf_type [16,0,0,1,1,1,20,40,1,1,0]
--task_type [1,0,0,0] --activate_layer [1,...,11]`) and called as their `main.py` does, `model(x, r_eval)`.
tomebench runs `patch(model, "mctf", r)` on the timm model with the options that `--mctf-type` means.
Glue: none for their code (it imports `timm.models.layers` / `timm.models.helpers`, which today's timm still
provides, with a deprecation warning); the authors' package is imported without its `__init__`.

Prints the tokens each block kept, top-1 agreement and the largest |logit difference| against the authors'.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import authors_module, images, report, token_hook  # noqa: E402

import tomebench  # noqa: E402
from tomebench.measure.cost import count_gflops  # noqa: E402
from tomebench.patch import forward_with_state  # noqa: E402

POOLING = {0: "size", 1: "attention", 2: "max", 3: "mean"}  # the authors' pooling_type -> tomebench's pooling


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def authors_model(root: Path, reference: torch.nn.Module, mctf_type: list, activate: list[int]):
    warnings.filterwarnings("ignore", category=FutureWarning)
    deit = authors_module(root, "models.deit")
    width = reference.embed_dim
    factory = {192: deit.deit_tiny, 384: deit.deit_small, 768: deit.deit_base}[width]
    model = factory(
        pretrained=False,
        num_classes=reference.num_classes,
        use_mctf=True,
        mctf_type=mctf_type,
        task_type=[1, 0, 0, 0],
        activate_layer=activate,
    )
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


def options(mctf_type: list) -> dict:
    """--mctf_type [r, r_teacher, trace_source, prop_attn, one_step_ahead, tau_sim, tau_info, tau_size,
    bidirection, pooling_type, ...] -> tomebench's options (prop_attn is patch's own argument)."""
    return {
        "one_step_ahead": int(mctf_type[4]),
        "tau_sim": float(mctf_type[5]),
        "tau_info": float(mctf_type[6]),
        "tau_size": float(mctf_type[7]),
        "bidirection": bool(mctf_type[8]),
        "pooling": POOLING[int(mctf_type[9])],
    }


def _gmacs(forward, image: torch.Tensor) -> float:
    """Multiply-adds of one forward, counted as tomebench counts them (its FLOP counter, its extra formulas)."""
    from torch.utils.flop_counter import FlopCounterMode

    from tomebench.measure.cost import _EXTRA_FORMULAS

    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        forward(image)
    return counter.get_total_flops() / 2e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of mlvlab/MCTF")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mctf-type", default="16,0,0,1,1,1,20,40,1,1,0")
    parser.add_argument("--first-block", type=int, default=1, help="activate_layer = first-block .. depth - 1")
    args = parser.parse_args()
    mctf_type = [float(v) if "." in v else int(v) for v in args.mctf_type.split(",")]
    mctf_type[0] = args.r
    mctf_type[2] = 1  # trace_source: the authors' merge groups, to compare with tomebench's
    x = images(args.images)

    timm_model = build(args.model, args.seed)
    depth = len(timm_model.blocks)
    theirs = authors_model(args.authors, timm_model, mctf_type, list(range(args.first_block, depth)))
    seen, handles = token_hook(list(theirs.blocks))
    authors_logits, authors_tokens, authors_sources = [], None, []
    with torch.no_grad():
        for chunk in x.split(args.batch):
            seen.clear()
            authors_logits.append(theirs(chunk, r_eval=args.r))
            authors_tokens = tuple(seen)
            authors_sources.append(theirs.info["student_source"])
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        authors_gmacs = _gmacs(lambda image: theirs(image, r_eval=args.r), x[:1])

    opts = options(mctf_type) | {"first_block": args.first_block}
    tomebench.patch(timm_model, "mctf", args.r, prop_attn=bool(mctf_type[3]), trace_source=True, **opts)
    ours, our_tokens, our_sources = [], None, []
    with torch.no_grad():
        for chunk in x.split(args.batch):
            out, state = forward_with_state(timm_model, chunk)
            ours.append(out)
            our_tokens = state.tokens
            our_sources.append(state.source)
        our_gmacs = count_gflops(timm_model, x[:1]) / 2
    tomebench.unpatch(timm_model)
    with torch.no_grad():
        plain = torch.cat([timm_model(chunk) for chunk in x.split(args.batch)])
    rows = [
        ("authors (mlvlab/MCTF models/deit.py)", torch.cat(authors_logits), authors_tokens),
        (f"tomebench mctf r={args.r} {opts}", torch.cat(ours), our_tokens),
        ("unpatched timm (for scale)", plain, (timm_model.patch_embed.num_patches + 1,) * depth),
    ]
    title = (
        f"{args.model}, random init (seed {args.seed}), {args.images} random images, batch {args.batch}, fp32 CPU, "
        f"r={args.r}, --mctf_type {args.mctf_type}, --activate_layer {args.first_block}..{depth - 1}; "
        f"torch {torch.__version__}, timm {timm.__version__}"
    )
    print("\n".join(report(title, rows, rows[0][0])))
    print(f"\nGMACs per image (torch's FLOP counter on both): authors {authors_gmacs:.4f}, tomebench {our_gmacs:.4f}")
    same = torch.equal(torch.cat(authors_sources).bool(), torch.cat(our_sources).bool())
    print(
        f"\nthe same input patches in every final token, in the same order, on every image: {'yes' if same else 'NO'}"
    )


if __name__ == "__main__":
    main()
