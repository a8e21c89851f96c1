"""Image folders the data tests build, and the data config they decode with."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import write_image

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
