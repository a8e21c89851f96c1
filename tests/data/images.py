"""Image folders the data tests build, and the data config they decode with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from tests.helpers import write_image

RED, GREEN, BLUE = 0, 1, 2

# test_vit's data config (as timm resolves it), with ImageNet mean/std so that mean and std differ per channel.
CONFIG = {
    "input_size": (3, 160, 160),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.95,
    "crop_mode": "center",
}


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    """ImageNet-style folder: one subfolder per class, alternating JPEG and PNG files."""
    seed = 0
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / cls / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}", seed)
            seed += 1
    return root


def colour_vit(num_classes: int = 1000) -> torch.nn.Module:
    """test_vit whose class 0/1/2 logit is the red/green/blue share of the image; classes >= 3 lose by far,
    in index order. Patch embedding averages each colour channel into feature 0..2; q and k are zero, so
    attention is uniform and the class token gathers the patches' (layer-normed) colour features; the MLPs
    add nothing. Every step keeps the order of features 0..2, so argmax = the dominant channel."""
    model = timm.create_model("test_vit", num_classes=num_classes).eval()
    dim = model.embed_dim
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for c in range(3):
            model.patch_embed.proj.weight[c, c] = 1.0 / 256  # mean of channel c over the 16x16 patch
        for block in model.blocks:
            block.norm1.weight.fill_(1.0)
            block.norm2.weight.fill_(1.0)
            for c in range(3):
                block.attn.qkv.weight[2 * dim + c, c] = 1.0  # v carries features 0..2
                block.attn.proj.weight[c, c] = 1.0
        model.norm.weight.fill_(1.0)
        for c in range(3):
            model.head.weight[c, c] = 1.0
        model.head.bias[3:] = -20.0 - torch.arange(3, num_classes, dtype=torch.float)
    return model


def colour_image(path: Path, colour: int, seed: int, size: tuple[int, int] = (70, 50)) -> Path:
    """An image of `size` (W, H) whose `colour` channel dominates every pixel, saved as the suffix says."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 70, (size[1], size[0], 3), dtype=np.uint8)
    pixels[..., colour] = rng.integers(170, 256, (size[1], size[0]), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def corrupt(path: Path, kind: str) -> Path:
    """A garbage .jpg or a PNG cut in half: both have image suffixes, neither decodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"definitely not a jpeg " * 30)
    else:
        whole = write_image(path, 1234, (96, 96)).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    return path
