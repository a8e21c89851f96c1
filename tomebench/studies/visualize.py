"""See what a reducer does: which input patches ended up in the same token, drawn over the image.

The model runs with source tracking; the source map (B, N', N0) says which input tokens each output token holds.
To show the state after block L, the schedule is cut after L blocks (r in the first L blocks, 0 after), so the
tokens leaving the last block are exactly those that left block L.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from tomebench.data import eval_transform
from tomebench.errors import UsageError, one_line
from tomebench.models import create
from tomebench.patch import depth as model_depth
from tomebench.patch import forward_with_state, grid_size, num_input_tokens, num_prefix_tokens, patch, unpatch
from tomebench.schedule import full_r

DROPPED = -1


@dataclass(frozen=True)
class Groups:
    """Patch grid (gh, gw) of group ids after `layer` blocks; DROPPED (-1) for pruned patches."""

    layer: int
    ids: np.ndarray
    tokens_left: int  # tokens after that block, prefix tokens included

    @property
    def count(self) -> int:
        return int(len(np.unique(self.ids[self.ids != DROPPED])))


def load_image(path: Path, data_config: dict, transform: Callable | None = None) -> np.ndarray:
    """The image as the model sees it, before normalisation: uint8 (3, H, W) through the model's eval transform
    (its family's own, or timm's from data_config)."""
    transform = transform or eval_transform(data_config)
    try:
        with Image.open(path) as img:
            return np.ascontiguousarray(transform(img.convert("RGB")))
    except FileNotFoundError:
        raise UsageError(f"no such image: {path}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises (a decompression bomb, a broken file)
        raise UsageError(f"cannot read image {path}: {one_line(exc)}") from None


def to_input(pixels: np.ndarray, data_config: dict) -> Tensor:
    """uint8 (3, H, W) -> normalised float (1, 3, H, W)."""
    mean = torch.tensor(data_config["mean"]).view(3, 1, 1) * 255
    std = torch.tensor(data_config["std"]).view(3, 1, 1) * 255
    return ((torch.from_numpy(pixels).float() - mean) / std)[None]


def groups_from_source(source: Tensor, num_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """source (N', N0) 0/1 for one image -> (gh, gw) group ids, numbered by first appearance; -1 if dropped."""
    patches = source[num_prefix:, num_prefix:].float()  # (N' - P, gh * gw): non-prefix tokens x input patches
    held = patches.sum(dim=0) > 0
    owner = patches.argmax(dim=0)  # the one token holding each patch
    ids = np.full(patches.shape[1], DROPPED, dtype=np.int64)
    owners = owner[held].numpy()
    tokens, first_seen, inverse = np.unique(owners, return_index=True, return_inverse=True)
    rank = np.empty(len(tokens), dtype=np.int64)
    rank[np.argsort(first_seen)] = np.arange(len(tokens))  # group 0 is the token of the first patch, and so on
    ids[held.numpy()] = rank[inverse]
    return ids.reshape(grid)


@torch.inference_mode()
def merge_groups(
    model, pixels: np.ndarray, data_config: dict, reducer: str, r: int, layers: Sequence[int], **options
) -> list[Groups]:
    """Run the model on one image with the schedule cut after each of `layers` (1-based block counts)."""
    depth = model_depth(model)
    if isinstance(layers, range) and len(layers) > depth:  # a long range is never listed, only its ends checked
        raise UsageError(f"--layers {layers[0]}..{layers[-1]} is outside 1..{depth}, the model's blocks")
    bad = [layer for layer in layers if not 1 <= layer <= depth]
    if bad:
        raise UsageError(f"--layers {bad[0]} is outside 1..{depth}, the model's blocks")
    grid = grid_size(model)
    x = to_input(pixels, data_config)
    p = num_prefix_tokens(model)
    result = []
    try:
        for layer in layers:
            patch(model, reducer, [r] * layer + [0] * (depth - layer), trace_source=True, **options)
            _, state = forward_with_state(model, x)
            ids = groups_from_source(state.source[0].float(), p, grid)
            result.append(Groups(layer=layer, ids=ids, tokens_left=int(state.source.shape[1])))
    finally:
        unpatch(model)
    return result


# Opacity of the group colours: low enough that the image shows through, as in the paper's figures, and high enough
# that neighbouring groups stay apart (the borders separate them too).
ALPHA = 0.4


def _palette(count: int) -> np.ndarray:
    """count distinct-looking RGB colours in [0, 1], the same every call (golden-ratio hues)."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    sat, val = 0.65 + 0.35 * (np.arange(count) % 2), 0.95 - 0.25 * (np.arange(count) % 3 == 2)
    return mcolors.hsv_to_rgb(np.stack([hues, sat, val], axis=1))


def overlay(pixels: np.ndarray, ids: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Colour each group translucently (opacity alpha) over the image, draw group borders, grey out dropped
    patches. -> (H, W, 3) in [0, 1]."""
    image = pixels.transpose(1, 2, 0).astype(np.float64) / 255.0  # (H, W, 3)
    # Small inputs (the demo's 32 px) are enlarged first, so one-pixel borders stay thin next to a patch.
    scale = max(1, -(-256 // image.shape[0]))
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w = image.shape[:2]
    gh, gw = ids.shape
    cell = np.repeat(np.repeat(ids, h // gh, axis=0), w // gw, axis=1)  # (H, W) group id per pixel
    colours = _palette(max(int(ids.max()) + 1, 1))
    tint = colours[np.clip(cell, 0, None)]
    out = (1 - alpha) * image + alpha * tint
    grey = image.mean(axis=2, keepdims=True) * 0.35 + 0.5
    out = np.where((cell == DROPPED)[..., None], np.broadcast_to(grey, out.shape), out)
    border = np.zeros((h, w), dtype=bool)
    border[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    border[1:, :] |= cell[1:, :] != cell[:-1, :]
    out[border] = 1.0
    return out


def figure(images: Sequence[tuple[str, np.ndarray, list[Groups]]], title: str, alpha: float = ALPHA) -> Figure:
    """One row per image: the input, then the groups after each requested block."""
    columns = 1 + max(len(groups) for _, _, groups in images)
    fig = Figure(figsize=(2.6 * columns, 2.8 * len(images) + 0.4), layout="constrained")
    axes = fig.subplots(len(images), columns, squeeze=False)
    for row, (name, pixels, groups) in enumerate(images):
        axes[row, 0].imshow(pixels.transpose(1, 2, 0))
        axes[row, 0].set_title(name, fontsize=8)
        for col, group in enumerate(groups, start=1):
            axes[row, col].imshow(overlay(pixels, group.ids, alpha), interpolation="nearest")
            axes[row, col].set_title(f"after block {group.layer}: {group.count} groups", fontsize=8)
        for ax in axes[row]:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig


def draw(
    paths: Sequence[Path],
    model_name: str,
    r: int | None,
    reducer: str,
    layers: Sequence[int] | None,
    pretrained: bool,
    checkpoint: Path | None,
    options: dict,
    alpha: float = ALPHA,
) -> Figure:
    """Load the model, run each image, and draw them. r None: the model's full r; layers None: the last block;
    alpha: the opacity of the group colours over the image."""
    loaded = create(model_name, pretrained=pretrained, checkpoint=checkpoint)
    model = loaded.model
    depth = model_depth(model)
    r = full_r(num_input_tokens(model), num_prefix_tokens(model), depth) if r is None else r
    shown = []
    for path in paths:
        pixels = load_image(Path(path), loaded.data_config, loaded.transform)
        groups = merge_groups(model, pixels, loaded.data_config, reducer, r, layers or [depth], **options)
        shown.append((Path(path).name, pixels, groups))
    return figure(shown, f"{loaded.name} · {reducer} r={r}", alpha)
