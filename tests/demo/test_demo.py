"""The embedded default: the bundled demo ViT on the digits test split, and the default `tomebench sweep`."""

from __future__ import annotations

from collections import Counter

import torch
from safetensors.torch import load_file

from tests.helpers import (
    invoke,
    read_rows,
)
from tomebench.data import DeviceNormalize, make_loader
from tomebench.demo import digits
from tomebench.demo.model import NAME, WEIGHTS
from tomebench.demo.train import train_demo
from tomebench.engine.images import resolve_images
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.evaluate import evaluate_in_one_pass
from tomebench.measure.device import autocast_for
from tomebench.models import create
from tomebench.patch import patch


def test_split_is_fixed_and_stratified():
    train, test = digits.load_split()
    assert (len(train), len(test)) == (1437, 360)
    # Stratified: each class is represented in the test split as in the whole set (to within one image).
    test_counts = Counter(s.label for s in test)
    all_counts = Counter(s.label for s in train + test)
    assert sorted(test_counts) == list(range(10))
    assert all(abs(test_counts[c] - 360 * all_counts[c] / 1797) <= 1 for c in range(10))
    again = digits.load_samples("test")
    assert all((a.image == b.image).all() and a.label == b.label for a, b in zip(test, again))


def test_demo_folder_holds_real_pngs(tmp_path):
    root = digits.write_image_folder(tmp_path / "d", "test")
    files = sorted(root.rglob("*.png"))
    assert len(files) == 360 and sorted(p.name for p in root.iterdir()) == [str(i) for i in range(10)]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert digits.write_image_folder(root, "test") == root  # already there: left as is


def test_demo_model_loads_through_timm_with_its_data_config():
    loaded = create("demo")
    assert loaded.name == NAME and loaded.pretrained
    assert loaded.data_config["input_size"] == (3, 32, 32) and loaded.data_config["crop_pct"] == 1.0
    bundled = load_file(str(WEIGHTS))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, bundled[key]), key
    assert len(loaded.model.blocks) >= 8 and loaded.model.num_prefix_tokens == 1


def test_demo_reaches_its_accuracy_on_the_test_split():
    rows = run_sweep(RunSpec(model="demo", r=(0, 4), repeats=1, workers=0))
    base, r0, r4 = rows
    assert (base.reducer, r0.r, r4.r) == ("none", 0, 4)
    assert base.dataset == "digits-test" and base.n_images == 360
    assert base.top1 >= 97.0
    assert r0.top1 == base.top1 and r0.top5 == base.top5  # patched at r=0 is the unpatched model
    assert r4.tokens_final == 65 - 8 * 4 and r4.top1 >= 90.0


def test_default_sweep_is_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Only re-timing is switched off (a noisy machine would time the group up to three times): what is checked is
    # what the defaults choose (model, data, r range, outputs), not how tight the timing gets.
    result = invoke("sweep", "--max-retime", "0")
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "results" / "sweep-demo.csv")
    assert [int(r["r"]) for r in rows] == [0] + list(range(9))  # baseline, then the full r range 0..8
    assert all(r["model"] == NAME and r["dataset"] == "digits-test" and r["error"] == "" for r in rows)
    assert float(rows[0]["top1"]) >= 97.0
    assert (tmp_path / "results" / "sweep-demo.png").stat().st_size > 10_000


def test_train_demo_writes_loadable_weights(tmp_path):
    out = tmp_path / "w.safetensors"
    result = train_demo(out, epochs=1, seed=1)
    assert out.is_file() and 0.0 <= result["test_top1"] <= 100.0 and result["epochs"] == 1
    assert set(load_file(str(out))) == set(load_file(str(WEIGHTS)))


def test_tome_is_at_least_as_accurate_as_random_pruning_at_every_r():
    """The paper's Table 2 claim, on the bundled model and real held-out digits, over the demo's full r range."""
    loaded = create("demo")
    model = loaded.model
    images = resolve_images(RunSpec(), loaded)
    r_values = range(1, 9)
    prepares = [lambda r=r, name=name: patch(model, name, r) for name in ("tome", "prune") for r in r_values]
    loader = make_loader(images, loaded.data_config, batch_size=120, workers=0, pin_memory=False)
    result = evaluate_in_one_pass(
        model,
        prepares,
        loader,
        DeviceNormalize(loaded.data_config, torch.device("cpu")),
        autocast_for(torch.device("cpu"), "fp32"),
    )
    correct = [acc.correct1 for acc in result.per_config]  # of 360: exact counts, no float comparisons
    tome, prune = correct[: len(r_values)], correct[len(r_values) :]
    # At r = 1 both keep nearly every token and either may get one image luckier; beyond that ToMe is never
    # behind, and over the whole range it is ahead.
    assert all(t >= p - 1 for t, p in zip(tome, prune)), list(zip(r_values, tome, prune))
    assert all(t >= p for t, p in list(zip(tome, prune))[1:]), list(zip(r_values, tome, prune))
    assert sum(tome) > sum(prune)
    assert prune[-1] < tome[-1] - 10  # at r=8 (a tenth of the tokens left) pruning clearly loses
