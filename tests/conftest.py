"""Shared test setup: no network (hub lookups fail fast), results in a temporary cache."""

from __future__ import annotations

import os

# Set before timm/huggingface_hub are imported anywhere: offline lookups then fail in seconds, not minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


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
