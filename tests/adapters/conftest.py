"""Fixtures of the model-family tests: a transformers folder and the model names of each family."""

from __future__ import annotations

import pytest
import torch

from tests.adapters.tiny_models import TV_NAME


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny transformers ViT (32 px, 4 px patches, depth 4, 10 classes) written by save_pretrained."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=4,
        num_hidden_layers=4,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(folder)
    return folder


@pytest.fixture(params=["tv", "hf"])
def model_args(request, hf_folder) -> list[str]:
    return ["--model", f"tv:{TV_NAME}" if request.param == "tv" else f"hf:{hf_folder}"]
