"""Shared test setup: no network (hub lookups fail fast), results in a temporary cache, one intra-op thread, the
`gpu` marker; and the fixtures several folders use. Plain helpers are in tests/helpers.py."""

from __future__ import annotations

import os

# Set before timm/huggingface_hub are imported anywhere: offline lookups then fail in seconds, not minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import make_vit  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tiny test models gain nothing from intra-op threads, and on a busy 2-core machine their barriers make each
    forward several times slower. Restored at the end of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The demo data folder is written under a per-session cache, never the user's home."""
    monkeypatch.setenv("TOMEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    """timm's test_vit (100 patches + cls at 160 px, 6 blocks), random weights seeded 0, eval mode; one per test."""
    return make_vit("test_vit")


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """The demo's 360 test digits as an image folder of PNGs (one subfolder per class), written once; read only."""
    from tomebench.demo.digits import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("digits") / "d", "test")


@pytest.fixture(scope="module")
def demo():
    """The bundled demo ViT (LoadedModel), one per test module; tests that patch it unpatch it."""
    from tomebench.models import create

    return create("demo")
