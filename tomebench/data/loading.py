"""Decoding for accuracy: samples become uint8 images through the model's eval transform without normalisation.

Decoding and resizing happen in DataLoader workers through the model's eval transform (uint8 tensors): timm's in
its prefetcher form, or the family's own (torchvision weights' resize and crop, a transformers image processor's);
the mean/std normalisation runs on the device, as timm's validate.py does with its prefetcher. A sample that cannot
be decoded does not stop the run: it comes back flagged, and is counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tomebench.data.images import ImageList

# What a decoder may raise for a file that is not a usable image; a decompression bomb (an image claiming
# billions of pixels) is refused by PIL before decoding and counts as unreadable too.
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image. 16-bit and 32-bit integer greyscale (mode I;16 / I, from 16-bit PNG and TIFF) is scaled
    from 0..65535 to 0..255: PIL's convert("RGB") clips it instead, turning almost every pixel white. Float
    images (mode F) have no defined range and are refused (ValueError: counted as unreadable)."""
    if img.mode == "F":
        raise ValueError("floating-point image: no defined pixel range")
    if img.mode == "I" or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.int64)  # (H, W)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(f"{img.mode} image with values outside 0..65535")
        img = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))  # (H, W) -> mode L
    return img.convert("RGB")


class ImageFiles(Dataset):
    """(uint8 image (3, H, W), label, readable[, ReaL set]) per sample; unreadable: zeros, readable=False."""

    def __init__(self, images: ImageList, data_config: dict, transform: Callable | None = None):
        self.images = images
        self.transform = transform or eval_transform(data_config)
        self.shape = tuple(data_config["input_size"])
        self.real_width = real_width(images)

    def __len__(self) -> int:
        return len(self.images.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int, bool]:
        label = self.images.labels[index]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's truncated-file/EXIF warnings are not ours to print
                with self.images.open(index) as img:
                    pixels = torch.as_tensor(np.ascontiguousarray(self.transform(to_rgb(img))))
            readable = True
        except Exception:  # noqa: BLE001 - any file a decoder chokes on (a malformed TIFF raises TypeError) is unreadable
            pixels, readable = torch.zeros(self.shape, dtype=torch.uint8), False
        if self.real_width:
            return pixels, label, readable, self._real(index)
        return pixels, label, readable

    def _real(self, index: int) -> Tensor:
        """Image index's ReaL label set as a (real_width,) bool row: batches stack it to (B, real_width)."""
        row = torch.zeros(self.real_width, dtype=torch.bool)
        row[list(self.images.real[index])] = True
        return row


def eval_transform(data_config: dict) -> Callable:
    """timm's eval transform from a data config, PIL image -> uint8 (3, H, W) array: use_prefetcher=True leaves
    out ToTensor/Normalize, since normalising happens on the device. Families with their own preprocessing
    (torchvision weights, transformers image processors) supply a transform of the same contract instead."""
    return create_transform(**_transform_args(data_config), is_training=False, use_prefetcher=True)


def _transform_args(cfg: dict) -> dict:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return {k: cfg[k] for k in keys if k in cfg}


def make_loader(
    images: ImageList,
    data_config: dict,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    transform: Callable | None = None,
) -> DataLoader:
    """Batches of uint8 images; `transform` (PIL -> uint8 (3, H, W)) defaults to timm's from data_config."""
    return DataLoader(
        ImageFiles(images, data_config, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


class DeviceNormalize:
    """uint8 (B, 3, H, W) on the host -> normalised float (B, 3, H, W) on the device, with the model's mean/std."""

    def __init__(self, data_config: dict, device: torch.device):
        self.device = device
        self.mean = torch.tensor(data_config["mean"], device=device).mul(255).view(1, 3, 1, 1)
        self.std = torch.tensor(data_config["std"], device=device).mul(255).view(1, 3, 1, 1)

    def __call__(self, batch: Tensor) -> Tensor:
        x = batch.to(self.device, non_blocking=True).float()
        return x.sub_(self.mean).div_(self.std)


def real_width(images: ImageList) -> int:
    """Width of the ReaL label rows: 0 without ReaL labels, else one past the largest ReaL class."""
    if images.real is None:
        return 0
    return 1 + max((max(s) for s in images.real if s), default=0)
