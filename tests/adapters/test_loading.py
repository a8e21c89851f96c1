"""Model families, loading: each family's names, preprocessing, published weights and --checkpoint, and names that
do not resolve."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tests.adapters.tiny_models import TV_NAME, _tiny_tv
from tests.helpers import (
    assert_one_line_error,
    invoke,
)
from tomebench.errors import UsageError
from tomebench.models import create

transformers = pytest.importorskip("transformers")

RUN = ["--repeats", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0"]


def test_loading_takes_each_familys_preprocessing(hf_folder):
    tv = create(f"tv:{TV_NAME}", pretrained=False)
    assert tv.name == f"tv:{TV_NAME}" and tv.img_size == 32 and tv.num_classes == 10
    hf = create(f"hf:{hf_folder}")
    assert hf.name == f"hf:{hf_folder}" and hf.img_size == 32 and hf.num_classes == 10
    assert hf.data_config["mean"] == (0.5, 0.5, 0.5) and hf.data_config["interpolation"] == "bicubic"
    assert create("tv:vit_b_16", pretrained=False).data_config["input_size"] == (3, 224, 224)
    swag = create("tv:vit_b_16.swag_e2e", pretrained=False)  # the architecture and preprocessing of SWAG E2E
    assert swag.img_size == 384 and swag.model.image_size == 384 and swag.name == "tv:vit_b_16"
    assert swag.data_config["interpolation"] == "bicubic" and "384" in repr(swag.transform)
    with pytest.raises(UsageError, match="no published weights"):
        create(f"tv:{TV_NAME}")  # pretrained by default, and there are none to load


def test_checkpoint_for_every_family(hf_folder, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    source = _tiny_tv()
    save_file(source.state_dict(), tmp_path / "tv.safetensors")
    loaded = create(f"tv:{TV_NAME}", checkpoint=tmp_path / "tv.safetensors")
    assert loaded.name == f"tv:{TV_NAME}" and loaded.pretrained
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.model.state_dict().items())

    torch.manual_seed(6)
    model = transformers.ViTForImageClassification(transformers.ViTConfig.from_pretrained(hf_folder))
    save_file(model.state_dict(), tmp_path / "hf.safetensors")
    loaded = create(f"hf:{hf_folder}", checkpoint=tmp_path / "hf.safetensors")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.model.state_dict().items())

    result = invoke(
        "sweep",
        "--model",
        f"tv:{TV_NAME}",
        "--checkpoint",
        tmp_path / "hf.safetensors",
        *RUN,
        "--out",
        tmp_path / "x.csv",
    )  # weights of another model: one line, exit 1
    assert_one_line_error(result, 1, "cannot load checkpoint")


def test_listed_torchvision_weights_are_torchvisions():
    """`tomebench models` lists torchvision's ViT weights from a table (so listing imports no torch): it must be
    exactly what torchvision publishes."""
    from tomebench.adapters.torchvision.family import PUBLISHED

    found = set()
    for architecture in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"):
        for weights in torchvision.models.get_model_weights(architecture):
            top1 = weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            found.add((architecture, weights.name, weights.meta["min_size"][0], top1))
    assert set(PUBLISHED) == found


def test_models_lists_each_family():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in (
        "deit_b_dist",
        "tv:vit_h_14.swag_e2e",
        "tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1",
        "hf:google/vit-base-patch16-224",
    ):
        assert name in result.output, name


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "tv:vit_b_61"], "unknown torchvision model 'tv:vit_b_61'; did you mean tv:vit_b_16"),
        (["--model", "tv:vit_b_16.swag"], "tv:vit_b_16 has no weights 'swag'; choose one of"),
        (["--model", "hf:./no/such/folder"], "no such folder with a config.json"),
        (["--model", "zz:vit_b"], "unknown model family 'zz'"),
    ],
)
def test_bad_family_names_are_one_line_exit_2(args, fragment, tmp_path):
    result = invoke("sweep", *args, "--no-pretrained", *RUN, "--out", tmp_path / "x.csv")
    assert_one_line_error(result, 2, fragment)


def test_missing_transformers_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` meets when not installed
    result = invoke("sweep", "--model", "hf:google/vit-base-patch16-224", *RUN, "--out", tmp_path / "x.csv")
    assert_one_line_error(result, 2, "pip install 'tomebench[hf]'")
