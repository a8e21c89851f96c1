"""Out-of-memory backoff: a configuration that does not fit is measured at a batch that does, or becomes an error
row while the sweep goes on.

Out-of-memory is injected on CPU by a small ViT whose patch embedding refuses batches above a limit (the
limit depends on the configuration, as real memory does); host memory is really limited with RLIMIT_AS."""

from __future__ import annotations

import sys
from functools import partial

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from tests.helpers import (
    run_python,
)
from tomebench.demo.model import DEMO_DATA_CFG
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.patch import patch_info

# Largest batch each configuration "fits", by the r of its first block (None: unpatched). Set per test.
LIMITS: dict[int | None, int] = {}


def _refuse_big_batches(model, module, args):
    info = patch_info(model)
    limit = LIMITS.get(None if info is None else info.r[0], 10**6)
    if args[0].shape[0] > limit:
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate a batch of {args[0].shape[0]}")


# register_model reads the pretrained cfg (input size, normalisation) from this module-level name.
default_cfgs = generate_default_cfgs({"tomebench_test_oom_vit": dict(num_classes=10, **DEMO_DATA_CFG)})


@register_model
def tomebench_test_oom_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    kwargs = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10, **kwargs}
    model = build_model_with_cfg(VisionTransformer, "tomebench_test_oom_vit", pretrained, **kwargs)
    model.patch_embed.register_forward_pre_hook(partial(_refuse_big_batches, model))
    return model


OOM = RunSpec(
    model="tomebench_test_oom_vit",
    pretrained=False,
    r=(0, 4),
    batch_sizes=8,
    repeats=1,
    workers=0,
    data="demo",
    limit=40,
)


def test_a_configuration_out_of_memory_backs_off_to_a_batch_that_fits(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {})
    free = run_sweep(OOM)
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {None: 3, 0: 2})  # unpatched fits 3 -> 2; tome r=0 fits 2
    rows = run_sweep(OOM)
    assert [row.infer_batch_size for row in rows] == [2, 2, 8]
    assert rows[0].note == "out of memory at batch 8; measured at batch 2"
    assert rows[2].note is None and all(row.error is None for row in rows)
    # Accuracy does not depend on how a batch is split; throughput is per image, so speedups still compare.
    assert [(r.top1, r.top5, r.n_images) for r in rows] == [(r.top1, r.top5, r.n_images) for r in free]
    assert all(row.speedup > 0 for row in rows)


def test_out_of_memory_even_at_batch_one_is_an_error_row_and_the_sweep_goes_on(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "LIMITS", {4: 0})
    rows = run_sweep(OOM)
    assert [row.error for row in rows[:2]] == [None, None]
    assert rows[2].error.startswith("out of memory even at batch 1: OutOfMemoryError: CUDA out of memory")
    assert rows[2].infer_batch_size == 8 and rows[2].top1 is None and rows[2].infer_samples_per_sec is None
    assert rows[1].top1 is not None


def test_a_synthetic_batch_the_host_cannot_hold_backs_off(tmp_path):
    code = """
        import resource
        from tomebench.engine.setup import Setup
        from tomebench.engine.spec import RunSpec
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
        limit = size + (1 << 30)  # room for 1 GiB more: the 12 GiB batch asked for cannot be had, 1/16 of it can
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        setup = Setup.build(RunSpec(model="demo", batch_sizes=1 << 20, device="cpu", data="synthetic"))
        print(len(setup.batch), setup.base.infer_batch_size)
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    fitted, requested = map(int, proc.stdout.split())
    assert requested == 1 << 20 and 1 <= fitted < 1 << 20


def test_a_configuration_checked_on_a_smaller_synthetic_batch_notes_the_batch_asked_for():
    from tomebench.engine.probe import probe as _check

    model = timm.create_model("test_vit", pretrained=False).eval()
    batch = torch.randn(4, 3, 160, 160)
    check = _check(model, lambda: None, batch, lambda: torch.autocast("cpu", enabled=False), torch.device("cpu"), 8)
    assert (check.batch_size, check.backoff_note) == (4, "out of memory at batch 8; measured at batch 4")
