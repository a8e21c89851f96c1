"""What the parity scripts share: importing a few files of the authors' checkout without running their package's
`__init__` (which imports every method and its dependencies), and the comparison they print.

A parity script builds one timm model with random weights (fixed seed; no weights can be downloaded), runs the
authors' code and tomebench's reducer on the same images, and prints: the tokens each block kept (the authors'
and tomebench's), top-1 agreement and the largest |logit difference|.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch


def authors_module(root: Path, dotted: str):
    """Import `dotted` (a.b.c) from the checkout `root`, its parent packages made empty namespaces, so only the
    files the chain really imports are run."""
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*parts[:i]))]
            sys.modules[name] = package
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(dotted)


def token_hook(blocks) -> tuple[list[int], list]:
    """Forward hooks on the blocks recording the tokens each one outputs (the first call of a forward)."""
    seen: list[int] = []
    handles = [
        block.register_forward_hook(
            lambda _m, _i, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[1])
        )
        for block in blocks
    ]
    return seen, handles


def images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """n random images (n, 3, size, size), standard normal like normalised inputs."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def report(title: str, rows: list[tuple[str, torch.Tensor, tuple[int, ...]]], reference: str) -> list[str]:
    """Lines comparing every row's logits (n, classes) and tokens per block with the row named `reference`."""
    ref_logits, ref_tokens = next((logits, tokens) for name, logits, tokens in rows if name == reference)
    lines = [
        title,
        "",
        f"| run | tokens per block | same tokens as {reference} | top-1 agreement | max abs logit diff | max abs logit"
        " |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, logits, tokens in rows:
        agree = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item() * 100
        diff = (logits.double() - ref_logits.double()).abs().max().item()
        lines.append(
            f"| {name} | {','.join(map(str, tokens))} | {'yes' if tuple(tokens) == tuple(ref_tokens) else 'NO'} "
            f"| {agree:.1f}% | {diff:.3g} | {logits.abs().max().item():.3g} |"
        )
    return lines
