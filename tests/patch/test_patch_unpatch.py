"""tomebench.patch and tomebench.unpatch, the Python API: re-patching, an exact undo, refusals that leave the model
untouched, values checked as the CLI checks them, patched models that pickle, copy and save."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import ResPostBlock

import tomebench
from tests.helpers import (
    assert_one_line_error,
    invoke,
    make_vit,
    run_python,
)
from tests.patch.vits import IMG, build, images, max_diff
from tomebench.errors import UsageError
from tomebench.patch import check_reducer_options, patch_info

SYNTHETIC = ["--model", "test_vit", "--no-pretrained", "--repeats", "1", "--device", "cpu", "--data", "synthetic"]


def test_repatch_replaces_settings_and_unpatch_restores_exactly():
    model = build("test_vit2", img_size=IMG)
    original_class = type(model)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs_before = set(vars(model))
    x = images(model)
    with torch.no_grad():
        ref = model(x)

        tomebench.patch(model, r=4)
        assert model._tome.reducer == "tome" and model._tome.r == (4,) * 8
        assert isinstance(model, original_class) and type(model) is not original_class
        merged = model(x)

        tomebench.patch(model, reducer="none", r=4)  # "none" ignores r: the unpatched token flow
        assert model._tome.reducer == "none" and model._tome.r == (0,) * 8
        assert model._tome.original_class is original_class
        assert type(model).__mro__.count(original_class) == 1  # not a subclass of a subclass
        assert max_diff(model(x), ref) <= 1e-5

        tomebench.patch(model, reducer="bipartite", r=2)  # alias of "tome"
        assert model._tome.reducer == "tome" and model._tome.r == (2,) * 8
        assert max_diff(model(x), merged) > 1e-6  # r=2 is not r=4

        tomebench.unpatch(model)
        assert type(model) is original_class
        assert not hasattr(model, "_tome")
        assert set(vars(model)) == attrs_before
        after = model.state_dict()
        assert after.keys() == state_before.keys()
        assert all(torch.equal(after[k], state_before[k]) for k in after)
        assert torch.equal(model(x), ref)
    assert tomebench.unpatch(model) is model  # no-op when not patched
    assert type(model) is original_class


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.Linear(4, 4),
        lambda: timm.create_model("test_resnet", pretrained=False),
        lambda: timm.create_model("test_vit", pretrained=False, img_size=IMG, block_fn=ResPostBlock),
    ],
    ids=["linear", "resnet", "vit_res_post_block"],
)
def test_patch_refuses_unsupported_models(make):
    model = make()
    original_class = type(model)
    with pytest.raises(UsageError):
        tomebench.patch(model, r=4)
    assert type(model) is original_class and not hasattr(model, "_tome")


def test_unknown_reducer_suggests_a_close_name():
    model = build("test_vit", img_size=IMG)
    original_class = type(model)
    with pytest.raises(UsageError, match=r"(?i)did you mean\W+tome\b"):
        tomebench.patch(model, reducer="tomee", r=4)
    assert type(model) is original_class and not hasattr(model, "_tome")


def test_forward_with_state_on_an_unpatched_model_says_to_patch_first():
    import tomebench
    from tomebench.errors import UsageError

    model = make_vit()
    with pytest.raises(UsageError, match=r"call tomebench.patch\(model"):
        tomebench.forward_with_state(model, torch.zeros(1, 3, 160, 160))


def test_patch_stays_the_function_when_the_submodule_is_imported():
    code = (
        "import tomebench, tomebench.patch, tomebench.engine.run\n"
        "print(tomebench.patch.__module__, callable(tomebench.patch), type(tomebench.patch).__name__)"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tomebench.patch True function"


# ---------------------------------------------------------------- pickles, copies, torch.save


def test_a_patched_model_pickles_and_copies(tiny_vit):
    x = torch.randn(2, 3, 160, 160)
    plain = tiny_vit(x)
    tomebench.patch(tiny_vit, "kmeans", r=4, iters=2)
    patched = tiny_vit(x)
    for clone in (pickle.loads(pickle.dumps(tiny_vit)), copy.deepcopy(tiny_vit)):
        assert patch_info(clone).r == patch_info(tiny_vit).r and patch_info(clone).options == {"iters": 2}
        assert torch.equal(clone(x), patched)
        tomebench.unpatch(clone)
        assert type(clone) is timm.models.vision_transformer.VisionTransformer and not hasattr(clone, "_tome")
        assert torch.equal(clone(x), plain)


def test_a_patched_model_saved_with_torch_save_loads_in_a_fresh_process(tiny_vit, tmp_path):
    x = torch.randn(2, 3, 160, 160)
    plain = tiny_vit(x)
    tomebench.patch(tiny_vit, r=8, schedule="decreasing")
    torch.save({"model": tiny_vit, "x": x}, tmp_path / "m.pt")
    code = f"""
        import torch, tomebench
        saved = torch.load({str(tmp_path / "m.pt")!r}, weights_only=False)
        model, x = saved["model"], saved["x"]
        patched = model(x)
        from tomebench.patch import patch_info
        info = patch_info(model)
        tomebench.unpatch(model)
        torch.save({{"patched": patched, "plain": model(x), "r": info.r, "cls": type(model).__name__,
                    "state": model.state_dict()}}, {str(tmp_path / "out.pt")!r})
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    back = torch.load(tmp_path / "out.pt")
    assert back["r"] == patch_info(tiny_vit).r and back["cls"] == "VisionTransformer"
    assert torch.equal(back["patched"], tiny_vit(x)) and torch.equal(back["plain"], plain)
    tomebench.unpatch(tiny_vit)
    assert all(torch.equal(back["state"][k], v) for k, v in tiny_vit.state_dict().items())


# ---------------------------------------------------------------- values checked before anything changes


@pytest.mark.parametrize("r", [np.int64(4), torch.tensor(4), np.array(4), 4])
def test_patch_takes_any_whole_number(tiny_vit, r):
    assert patch_info(tomebench.patch(tiny_vit, r=r)).r == (4,) * len(tiny_vit.blocks)


@pytest.mark.parametrize("r", ["8", 4.5, True, torch.tensor(4.0), [4, "4"], None])
def test_patch_refuses_r_that_is_not_a_whole_number(tiny_vit, r):
    with pytest.raises(UsageError, match="r must"):
        tomebench.patch(tiny_vit, r=r)
    assert patch_info(tiny_vit) is None  # refused before anything was changed


@pytest.mark.parametrize(
    ("options", "cli_opt"),
    [({"bogus": 1}, "tome.bogus=1"), ({"features": "zz"}, "tome.features=zz"), ({"iters": "x"}, None)],
)
def test_patch_checks_reducer_options_as_the_cli_does(tiny_vit, tmp_path, options, cli_opt):
    reducer = "kmeans" if "iters" in options else "tome"
    with pytest.raises(UsageError) as refused:
        tomebench.patch(tiny_vit, reducer, r=4, **options)
    assert patch_info(tiny_vit) is None
    with pytest.raises(UsageError) as checked:
        check_reducer_options({reducer: options})
    assert str(refused.value) == str(checked.value)
    if cli_opt:
        result = invoke("sweep", *SYNTHETIC, "--opt", cli_opt, "--out", tmp_path / "s.csv")
        assert assert_one_line_error(result, 2) == f"error: {refused.value}"
