"""Decoding images: like torchvision, corrupt files flagged (a decompression bomb among them), 16-bit PNGs, batches in
file order, normalisation on the device."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from tests.data.images import CONFIG, class_folder
from tests.helpers import (
    write_image,
)
from tomebench import data as datasets
from tomebench.data import DeviceNormalize, ImageFiles, ImageList, discover, make_loader
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec

SPEC = RunSpec(model="test_vit", pretrained=False, r=(0, 4), repeats=1, device="cpu", data="synthetic")


def reference_pixels(path: Path) -> torch.Tensor:
    """uint8 (3, 160, 160) by torchvision alone: shortest side to floor(160 / 0.95), centre crop."""
    pipeline = transforms.Compose(
        [transforms.Resize(168, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(160)]
    )
    with Image.open(path) as img:
        return torch.from_numpy(np.array(pipeline(img.convert("RGB")))).permute(2, 0, 1)


def test_image_files_decode_like_torchvision_and_flag_corrupt_files(tmp_path):
    good = [
        write_image(tmp_path / "0.jpg", 0, (200, 120)),
        write_image(tmp_path / "1.png", 1, (90, 170)),
        write_image(tmp_path / "2.png", 2, (60, 60), mode="RGBA"),
        write_image(tmp_path / "3.png", 3, (64, 80), mode="L"),
    ]
    garbage = tmp_path / "4.jpg"
    garbage.write_bytes(b"this is not a JPEG " * 20)
    truncated = tmp_path / "5.png"
    whole = write_image(tmp_path / "whole.png", 5, (120, 120)).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    empty = tmp_path / "6.jpeg"
    empty.write_bytes(b"")
    files = (*good, garbage, truncated, empty)
    dataset = ImageFiles(ImageList(files, (0, 1, 2, 3, 4, 5, 6), None, "mixed"), CONFIG)

    assert len(dataset) == 7
    for i, path in enumerate(good):
        pixels, label, readable = dataset[i]
        assert readable is True and label == i
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, 160, 160)
        assert torch.equal(pixels, reference_pixels(path))
    for i in (4, 5, 6):
        pixels, label, readable = dataset[i]
        assert readable is False and label == i
        assert pixels.shape == (3, 160, 160) and pixels.dtype == torch.uint8 and not pixels.any()


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels (8-bit grey) and holds none: PIL refuses it as a bomb on open."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_a_decompression_bomb_counts_as_an_unreadable_image(tmp_path):
    root = tmp_path / "data"
    _png_header_only(root / "a" / "0-bomb.png", 40000, 40000)  # first in file order: the readability probe too
    for i, name in enumerate(("a/1.png", "a/2.png", "b/1.png", "b/2.png")):
        write_image(root / name, i, (24, 20))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(root / "a" / "0-bomb.png")
    spec = replace(SPEC, r=(4,), data=str(root), model_kwargs={"num_classes": 2}, workers=0)
    rows = run_sweep(spec)
    assert all(row.error is None and row.n_images == 4 for row in rows)
    assert all("1 unreadable image(s) skipped" in row.note for row in rows)


def test_16_bit_png_decodes_like_its_8_bit_twin_and_float_images_are_unreadable(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint16)
    Image.fromarray((values * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "plain.png")
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "float.tiff")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really 16-bit on disk
    files = tuple(tmp_path / n for n in ("deep.png", "plain.png", "float.tiff"))
    images = datasets.ImageList(files, (0, 0, 0), None, "t")
    config = dict(input_size=(3, 40, 40), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    dataset = datasets.ImageFiles(images, config)
    (deep, _, ok_deep), (plain, _, ok_plain), (_, _, ok_float) = dataset[0], dataset[1], dataset[2]
    assert ok_deep and ok_plain and not ok_float
    assert torch.equal(deep, plain)
    assert deep.float().mean() < 200  # PIL's own convert("RGB") makes it almost all 255


def test_make_loader_batches_in_file_order(tmp_path):
    root = class_folder(tmp_path / "data", {"a": 3, "b": 2})
    (root / "b" / "img9.jpg").write_bytes(b"\x00" * 50)  # corrupt
    images = discover(root)
    batches = list(make_loader(images, CONFIG, batch_size=4, workers=0, pin_memory=False))

    assert [len(b[1]) for b in batches] == [4, 2]
    pixels = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    readable = torch.cat([b[2] for b in batches])
    assert pixels.dtype == torch.uint8 and pixels.shape == (6, 3, 160, 160)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert readable.dtype == torch.bool and readable.tolist() == [True] * 5 + [False]
    for i, path in enumerate(images.files[:5]):
        assert torch.equal(pixels[i], reference_pixels(path))


# ---------------------------------------------------------------- normalisation


def test_device_normalize_matches_torchvision(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", i, (160, 160)) for i in range(3)]
    images = [Image.open(p).convert("RGB") for p in paths]
    uint8 = torch.stack([torch.from_numpy(np.array(img)).permute(2, 0, 1) for img in images])  # (B, 3, H, W)
    expected = torch.stack(
        [transforms.Normalize(CONFIG["mean"], CONFIG["std"])(transforms.functional.to_tensor(img)) for img in images]
    )

    normalize = DeviceNormalize(CONFIG, torch.device("cpu"))
    before = uint8.clone()
    out = normalize(uint8)

    assert out.dtype == torch.float32 and out.shape == (3, 3, 160, 160)
    assert out.device == normalize.device
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(uint8, before)  # the host batch is left alone
