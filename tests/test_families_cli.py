"""Every command on a tiny model of each new family: torchvision (a `vit_*` builder registered with torchvision's
model registry, as a user's own architecture would be) and transformers (a folder written by save_pretrained).
Both predict the digits' 10 classes, so the accuracy paths run too."""

from __future__ import annotations

import csv

import pytest
import torch
import torchvision
from torchvision.models._api import (
    register_model,  # the decorator torchvision registers its own builders with
)
from torchvision.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from tomebench import cli
from tomebench.demo.digits import write_image_folder
from tomebench.errors import UsageError
from tomebench.models import create

transformers = pytest.importorskip("transformers")

runner = CliRunner()
TV_NAME = "vit_tomebench_test"
RUN = ["--repeats", "1", "--batch-size", "4", "--device", "cpu", "--workers", "0"]


def _tiny_tv(weights=None, progress=True, **kwargs) -> VisionTransformer:
    """32 px in 4 px patches (64 patches + cls), depth 4, width 32: full r = 16."""
    args = dict(image_size=32, patch_size=4, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    return VisionTransformer(**{**args, **kwargs})


if TV_NAME not in torchvision.models.list_models():
    register_model(TV_NAME)(_tiny_tv)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = transformers.ViTConfig(image_size=32, patch_size=4, num_hidden_layers=4, hidden_size=32,
                                    num_attention_heads=2, intermediate_size=64, num_labels=10)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("digits") / "d", "test")


@pytest.fixture(params=["tv", "hf"])
def model_args(request, hf_folder) -> list[str]:
    return ["--model", f"tv:{TV_NAME}" if request.param == "tv" else f"hf:{hf_folder}"]


def invoke(*args) -> object:
    return runner.invoke(cli.app, [str(a) for a in args])


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


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


def test_sweep_with_accuracy(model_args, digits, tmp_path):
    out = tmp_path / "s.csv"
    result = invoke("sweep", *model_args, "--no-pretrained", *RUN, "--r", "0,4,16", "--data", digits,
                    "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(r["reducer"], r["r"], r["tokens_final"]) for r in rows] == [
        ("none", "0", "65"), ("tome", "0", "65"), ("tome", "4", "49"), ("tome", "16", "9")]  # 65-16-16-16-8
    assert all(r["n_images"] == "360" and not r["error"] for r in rows)
    assert rows[0]["top1"] == rows[1]["top1"]  # r = 0 patched predicts what the unpatched model does


def test_compare_every_reducer(model_args, tmp_path):
    out = tmp_path / "c.csv"
    result = invoke("compare", *model_args, "--no-pretrained", *RUN, "--r", "4", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert {r["reducer"] for r in rows} == {"none", "tome", "prune", "attn-prune", "kmeans"}
    assert all(not r["error"] for r in rows) and {r["tokens_final"] for r in rows if r["reducer"] != "none"} == {"49"}


def test_ablate(model_args, tmp_path):
    out = tmp_path / "a.csv"
    result = invoke("ablate", *model_args, "--no-pretrained", *RUN, "--r", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 15 and (tmp_path / "a.md").is_file()


def test_schedules(model_args, digits, tmp_path):
    out = tmp_path / "sc.csv"
    result = invoke("schedules", *model_args, "--no-pretrained", *RUN, "--samples", "3", "--limit", "40",
                    "--data", digits, "--out", out)
    assert result.exit_code == 0, result.output
    assert sum("," in row["schedule"] for row in read_rows(out)) == 3 and (tmp_path / "sc.png").is_file()


def test_visualize(model_args, digits, tmp_path):
    out = tmp_path / "v.png"
    result = invoke("visualize", digits / "0" / "0024.png", *model_args, "--no-pretrained", "--layers", "1,4",
                    "--r", "4", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".svg").is_file()


@pytest.mark.parametrize("args, fragment", [
    (["--model", "tv:vit_b_61"], "unknown torchvision model 'tv:vit_b_61'; did you mean tv:vit_b_16"),
    (["--model", "tv:vit_b_16.swag"], "tv:vit_b_16 has no weights 'swag'; choose one of"),
    (["--model", "hf:./no/such/folder"], "no such folder with a config.json"),
    (["--model", "zz:vit_b"], "unknown model family 'zz'"),
])
def test_bad_family_names_are_one_line_exit_2(args, fragment, tmp_path):
    result = invoke("sweep", *args, "--no-pretrained", *RUN, "--out", tmp_path / "x.csv")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and fragment in " ".join(result.output.split())


def test_missing_transformers_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` meets when not installed
    result = invoke("sweep", "--model", "hf:google/vit-base-patch16-224", *RUN, "--out", tmp_path / "x.csv")
    assert result.exit_code == 2, result.output
    assert "pip install 'tomebench[hf]'" in " ".join(result.output.split())


def test_models_lists_each_family():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in ("deit_b_dist", "tv:vit_h_14.swag_e2e", "tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1",
                 "hf:google/vit-base-patch16-224"):
        assert name in result.output, name


def test_swag_paper_rows_name_what_a_run_writes():
    from pathlib import Path

    from tomebench.studies.paper import paper_rows

    configs = Path(__file__).resolve().parent.parent / "configs"
    expected = {"swag_vit_b16_384_r45": ("tv:vit_b_16.IMAGENET1K_SWAG_E2E_V1", 384, 45, 85.30, 84.59, 167.7),
                "swag_vit_l16_512_r40": ("tv:vit_l_16.IMAGENET1K_SWAG_E2E_V1", 512, 40, 88.06, 87.80, 26.3),
                "swag_vit_h14_518_r40": ("tv:vit_h_14.IMAGENET1K_SWAG_E2E_V1", 518, 40, 88.55, 88.25, 9.8)}
    for stem, (model, size, r, before, after, images_per_sec) in expected.items():
        base, tome = paper_rows(configs / f"{stem}.toml")
        assert (base.model, tome.model, tome.infer_img_size, tome.r) == (model, model, size, r)
        assert (base.top1, tome.top1) == (before, after) and f"-> {images_per_sec} images/s" in tome.note


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

    result = invoke("sweep", "--model", f"tv:{TV_NAME}", "--checkpoint", tmp_path / "hf.safetensors", *RUN,
                    "--out", tmp_path / "x.csv")  # weights of another model: one line, exit 1
    assert result.exit_code == 1 and "cannot load checkpoint" in result.output and "Traceback" not in result.output


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
