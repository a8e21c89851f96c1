"""Resolving a model name: an offline hub miss fails at once and says what to set."""

from __future__ import annotations

import pytest


def test_offline_hub_miss_fails_at_once_and_names_hf_hub_offline(monkeypatch):
    from tomebench import models
    from tomebench.errors import TomebenchError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in models.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(models.socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    with pytest.raises(TomebenchError, match="HF_HUB_OFFLINE=1"):
        models._fail_fast_offline("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TomebenchError, match="HF_HUB_OFFLINE is set"):
        models.create("vit_t")
