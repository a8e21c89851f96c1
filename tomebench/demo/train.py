"""Train the demo ViT on the 8x8 digits, from scratch, on CPU, in about three minutes (2 cores).

The model sees exactly what evaluation will feed it: each 8x8 image goes through
`timm.data.create_transform(**DEMO_DATA_CFG, is_training=False)` once, and
augmentation is applied afterwards, on the resulting (3, 32, 32) tensors.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.data import create_transform
from timm.models.vision_transformer import VisionTransformer

from tomebench.demo.digits import Sample, load_split, to_pil
from tomebench.demo.model import DEMO_DATA_CFG, DEMO_VIT_KWARGS, WEIGHTS


def build_model() -> VisionTransformer:
    """Return a freshly initialised demo ViT."""
    return VisionTransformer(**DEMO_VIT_KWARGS)


def to_tensors(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(x, y)`: x is (N, 3, 32, 32) float32 through the eval transform, y is (N,) int64."""
    transform = create_transform(**DEMO_DATA_CFG, is_training=False)
    # The transform itself does not convert to RGB; timm's image datasets do, so we do too.
    x = torch.stack([transform(to_pil(s.image).convert("RGB")) for s in samples])
    y = torch.tensor([s.label for s in samples], dtype=torch.int64)
    return x, y


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Return the top-1 accuracy in percent of `model` on `(x, y)`, in eval mode."""
    model.eval()
    correct = sum(
        (model(xb).argmax(dim=1) == yb).sum().item() for xb, yb in zip(x.split(batch_size), y.split(batch_size))
    )
    return 100.0 * correct / len(y)


def augment(
    x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.125, max_rot: float = 0.2, max_scale: float = 0.1
) -> torch.Tensor:
    """Randomly shift, rotate and scale each image of an (N, 3, H, W) batch.

    Shifts are a fraction of the half-width (0.125 = 2 px at 32x32, half an original
    pixel), rotations are in radians. Uncovered pixels get the background value.
    """
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * max_rot
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * max_scale
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Black (0) normalises to -1; shift so that zero padding means black, not mid-grey.
    background = -1.0
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to zero at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_demo(
    out: Path,
    *,
    epochs: int = 60,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_epochs: int = 5,
    label_smoothing: float = 0.1,
) -> dict:
    """Train the demo ViT from scratch, save its fp32 weights as safetensors to `out`.

    Deterministic given `seed` (weight init, shuffling and augmentation all derive
    from it). Returns `{"test_top1": %, "train_time_s": s, "epochs": n, "seed": seed}`.
    """
    train, test = load_split()
    x_train, y_train = to_tensors(train)
    x_test, y_test = to_tensors(test)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    start, step = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y_train), generator=gen).split(batch_size):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, lr)
            loss = F.cross_entropy(model(augment(x_train[idx], gen)), y_train[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    train_time = time.perf_counter() - start
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return {"test_top1": evaluate(model, x_test, y_test), "train_time_s": train_time, "epochs": epochs, "seed": seed}


if __name__ == "__main__":  # re-make the bundled weights in place
    print(train_demo(WEIGHTS))
