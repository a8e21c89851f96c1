"""Shared test setup: no network (hub lookups fail fast), results in a temporary cache."""

from __future__ import annotations

import os

# Set before timm/huggingface_hub are imported anywhere: offline lookups then fail in seconds, not minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


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
