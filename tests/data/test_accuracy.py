"""Accuracy: top-1/top-5 over real image files, in one data pass for every configuration, through run_sweep too.

The models are real timm `test_vit` VisionTransformers. Two kinds of weights make the expected numbers known:
- random weights, checked against logits computed here by an independent torchvision + PIL pipeline;
- "colour" weights set by hand so that the predicted class is the image's dominant colour channel
  (0 red, 1 green, 2 blue), whatever tokens ToMe merges; then every expected accuracy follows from the labels.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import resolve_data_config
from torchvision import transforms

from tests.data.images import BLUE, GREEN, RED, colour_image, colour_vit, corrupt
from tests.helpers import (
    assert_one_line_message,
    write_image,
)
from tomebench.data import DeviceNormalize, ImageFiles, discover, make_loader
from tomebench.engine.images import resolve_images
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import TomebenchError, UsageError
from tomebench.evaluate import count_correct, evaluate_in_one_pass
from tomebench.models import LoadedModel, create
from tomebench.patch import patch, unpatch

CPU = torch.device("cpu")


def reference_logits(model: torch.nn.Module, paths: list[Path], config: dict) -> torch.Tensor:
    """(N, C) logits from images decoded with PIL and preprocessed by torchvision alone (no tomebench, no
    timm transform): shortest side to floor(160 / crop_pct), centre crop, to_tensor, Normalize."""
    size = config["input_size"][-1]
    pipeline = transforms.Compose(
        [
            transforms.Resize(int(size / config["crop_pct"]), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(config["mean"], config["std"]),
        ]
    )
    batch = []
    for path in paths:
        with Image.open(path) as img:
            batch.append(pipeline(img.convert("RGB")))
    with torch.inference_mode():
        return model(torch.stack(batch))


def evaluate(model, prepares, images, config, batch_size=4, on_batch=None, dataset_class=ImageFiles):
    if dataset_class is ImageFiles:
        loader = make_loader(images, config, batch_size, workers=0, pin_memory=False)
    else:  # the same loader as make_loader's, around a Dataset subclass
        loader = torch.utils.data.DataLoader(dataset_class(images, config), batch_size=batch_size, shuffle=False)
    return evaluate_in_one_pass(model, prepares, loader, DeviceNormalize(config, CPU), nullcontext, on_batch)


# ---------------------------------------------------------------- counting


def test_count_correct_counts_labels_among_the_k_highest_logits():
    logits = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.4], [1.0, 0.3, 0.2, 0.1]])
    labels = torch.tensor([1, 0, 3])  # ranks 1, 2 and 4
    assert count_correct(logits, labels, 1) == 1
    assert count_correct(logits, labels, 2) == 2
    assert count_correct(logits, labels, 3) == 2
    assert count_correct(logits, labels, 4) == 3
    assert count_correct(logits, labels, 5) == 3  # k larger than the number of classes: every label counts


# ---------------------------------------------------------------- accuracy values


@pytest.fixture(scope="module")
def random_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=10).eval()
    with torch.no_grad():
        model.head.weight.normal_(0.0, 1.0)  # spread the logits so no two classes nearly tie
    return model


def test_accuracy_on_a_jpeg_png_folder_equals_the_hand_computed_value(tmp_path, random_vit):
    config = resolve_data_config({}, model=random_vit)
    sizes = [(200, 150), (90, 170), (160, 160), (64, 48)]
    staged = [
        write_image(tmp_path / "stage" / f"img{i:02d}.{'jpg' if i % 2 else 'png'}", i, sizes[i % 4]) for i in range(12)
    ]
    # Rank every class per image by the independent reference, then label images so that the answer is known:
    # 6 images by their top class, 3 by their third (top-5 only), 3 by their eighth (wrong in both).
    logits = reference_logits(random_vit, staged, config)
    ranked = logits.sort(dim=-1, descending=True)
    assert (ranked.values[:, 0] - ranked.values[:, 1]).min() > 1e-2  # the top class is unambiguous
    rank = [0] * 6 + [2] * 3 + [7] * 3
    labels = [int(ranked.indices[i, rank[i]]) for i in range(12)]
    root = tmp_path / "val"
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
    for path, label in zip(staged, labels):
        path.rename(root / f"class{label}" / path.name)

    images = discover(root)
    assert images.classes == tuple(f"class{c}" for c in range(10))
    result = evaluate(random_vit, [lambda: unpatch(random_vit)], images, config, batch_size=5)

    assert result.skipped == 0
    (acc,) = result.per_config
    assert acc.error is None
    assert acc.n_images == 12
    assert acc.top1 == pytest.approx(50.0)
    assert acc.top5 == pytest.approx(75.0)


def test_colour_model_accuracy_is_known_by_construction_and_corrupt_files_are_skipped(tmp_path):
    model = colour_vit(num_classes=3)
    config = resolve_data_config({}, model=model)
    root = tmp_path / "colours"
    for i in range(3):
        colour_image(root / "0_red" / f"r{i}.jpg", RED, i)
        colour_image(root / "1_green" / f"g{i}.png", GREEN, 10 + i, (50, 90))
    colour_image(root / "1_green" / "g9.jpg", BLUE, 20)  # mislabelled: the model says blue
    colour_image(root / "2_blue" / "b0.png", BLUE, 30, (200, 40))
    corrupt(root / "2_blue" / "a_bad.jpg", "garbage")
    corrupt(root / "2_blue" / "a_bad2.png", "truncated")
    images = discover(root)
    assert len(images.files) == 10

    # batches of 2: [r0 r1] [r2 g0] [g1 g2] [g9 bad] [bad2 b0]
    result = evaluate(model, [lambda: unpatch(model)], images, config, batch_size=2)

    assert result.skipped == 2
    (acc,) = result.per_config
    assert acc.n_images == 8
    assert acc.top1 == pytest.approx(100.0 * 7 / 8)
    assert acc.top5 == pytest.approx(100.0)  # 3 classes: every label is in the top 5


def test_unreadable_batches_still_report_progress(tmp_path):
    model = colour_vit(num_classes=3)
    config = resolve_data_config({}, model=model)
    root = tmp_path / "colours"
    colour_image(root / "a" / "x.png", RED, 0)
    colour_image(root / "b" / "y.png", GREEN, 1)
    corrupt(root / "c" / "0.jpg", "garbage")
    corrupt(root / "c" / "1.png", "truncated")
    colour_image(root / "c" / "z.png", BLUE, 2)
    images = discover(root)
    seen: list[int] = []

    # batches of 2: [x y] [bad bad] [z]; the middle one has nothing readable
    result = evaluate(model, [lambda: unpatch(model)], images, config, batch_size=2, on_batch=seen.append)

    assert result.skipped == 2 and result.per_config[0].n_images == 3
    assert result.per_config[0].top1 == pytest.approx(100.0)
    # run_sweep sizes its progress bar to len(images.files) and advances by what on_batch reports
    assert sum(seen) == len(images.files) == 5


# ---------------------------------------------------------------- one data pass


class CountingImageFiles(ImageFiles):
    """tomebench's Dataset, counting how often each image is decoded."""

    def __init__(self, images, config):
        super().__init__(images, config)
        self.calls: list[int] = []
        CountingImageFiles.last = self

    def __getitem__(self, index):
        self.calls.append(index)
        return super().__getitem__(index)


def test_one_data_pass_decodes_each_image_once_and_matches_separate_passes(tmp_path):
    model = colour_vit(num_classes=3)
    config = resolve_data_config({}, model=model)
    root = tmp_path / "colours"
    for i, colour in enumerate([RED] * 4 + [GREEN] * 2 + [BLUE]):
        colour_image(root / ["0_red", "1_green", "2_blue"][colour] / f"{i}.{'jpg' if i % 2 else 'png'}", colour, i)
    images = discover(root)

    def configuration(reducer_r: int | None, favourite: int | None):
        """Unpatched or ToMe with r, and a head bias that makes `favourite` win every image (None: no bias)."""

        def prepare() -> None:
            if reducer_r is None:
                unpatch(model)
            else:
                patch(model, "tome", reducer_r)
            with torch.no_grad():
                model.head.bias.zero_()
                if favourite is not None:
                    model.head.bias[favourite] = 100.0

        return prepare

    prepares = [configuration(None, None), configuration(8, GREEN), configuration(16, BLUE)]
    forwards: list[int] = []
    hook = model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
    try:
        together = evaluate(model, prepares, images, config, batch_size=3, dataset_class=CountingImageFiles)
        decoded = sorted(CountingImageFiles.last.calls)
        alone = []
        for prepare in prepares:
            alone.append(evaluate(model, [prepare], images, config, batch_size=3).per_config[0])
    finally:
        hook.remove()
        unpatch(model)

    assert decoded == list(range(7))  # every image decoded exactly once for three configurations
    assert forwards[:9] == [3, 3, 3, 3, 3, 3, 1, 1, 1]  # 3 batches, each run under all 3 configurations
    assert [a.top1 for a in together.per_config] == pytest.approx([100.0, 100.0 * 2 / 7, 100.0 / 7])
    assert list(together.per_config) == alone
    assert together.skipped == 0


def test_one_pass_over_tome_configurations_equals_each_evaluated_alone(tmp_path, random_vit):
    config = resolve_data_config({}, model=random_vit)
    root = tmp_path / "val"
    for i in range(9):
        write_image(root / f"c{i % 3}" / f"{i}.{'jpg' if i % 2 else 'png'}", 100 + i, (80 + 10 * i, 120))
    images = discover(root)
    settings = [None, (8, "constant"), (12, "decreasing")]

    def prepare_for(setting):
        if setting is None:
            return lambda: unpatch(random_vit)
        return lambda: patch(random_vit, "tome", setting[0], setting[1])

    prepares = [prepare_for(s) for s in settings]
    labels = torch.tensor(images.labels)
    try:
        together = evaluate(random_vit, prepares, images, config, batch_size=4)
        alone = [evaluate(random_vit, [p], images, config, batch_size=4).per_config[0] for p in prepares]
        references = []
        for prepare in prepares:
            prepare()
            references.append(reference_logits(random_vit, list(images.files), config))
    finally:
        unpatch(random_vit)

    assert list(together.per_config) == alone
    assert all(a.n_images == 9 and a.error is None for a in together.per_config)
    # the configurations really differ, and each one's top-1 is what its own reference logits give
    assert not torch.allclose(references[0], references[1]) and not torch.allclose(references[1], references[2])
    for acc, logits in zip(together.per_config, references):
        assert acc.top1 == pytest.approx(100.0 * count_correct(logits, labels, 1) / 9)
        assert acc.top5 == pytest.approx(100.0 * count_correct(logits, labels, 5) / 9)


# ---------------------------------------------------------------- through run_sweep


@pytest.fixture(scope="module")
def colour_checkpoint(tmp_path_factory) -> Path:
    """The 1000-class colour ViT as a safetensors file that `--checkpoint` loads into test_vit."""
    path = tmp_path_factory.mktemp("weights") / "colour_test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in colour_vit().state_dict().items()}, str(path))
    return path


def test_run_sweep_reports_accuracy_of_a_labelled_flat_folder(tmp_path, colour_checkpoint):
    flat = tmp_path / "flat"
    # (file, dominant colour or None for a corrupt file, label); expected: top-1 5/8, top-5 7/8
    plan = [
        ("a0.jpg", RED, 0),
        ("a1.png", GREEN, 1),
        ("a2.jpg", BLUE, 2),
        ("a3.png", RED, 0),
        ("a4.jpg", GREEN, 1),
        ("a5.png", BLUE, 0),  # wrong; class 0 is still among the top 5 (0, 1, 2, 3, 4)
        ("a6.jpg", RED, 3),  # wrong; class 3 is the model's fourth choice for every image
        ("a7.png", GREEN, 7),  # wrong in both
        ("a8.jpg", None, 0),  # unreadable
    ]
    for i, (name, colour, _) in enumerate(plan):
        if colour is None:
            corrupt(flat / name, "garbage")
        else:
            colour_image(flat / name, colour, i, (60 + 20 * i, 100))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\n" + "".join(f"{name},{label}\n" for name, _, label in reversed(plan)))

    spec = RunSpec(
        model="test_vit",
        checkpoint=colour_checkpoint,
        data=str(flat),
        labels=labels,
        reducers=("tome",),
        r=(4,),
        repeats=2,
        batch_sizes=4,
        workers=0,
        device="cpu",
    )
    rows = run_sweep(spec)

    assert [(row.reducer, row.r) for row in rows] == [("none", 0), ("tome", 4)]
    assert [row.tokens_final for row in rows] == [101, 101 - 6 * 4]
    for row in rows:
        assert row.error is None
        assert row.top1 == pytest.approx(62.5)
        assert row.top5 == pytest.approx(87.5)
        assert row.n_images == 8
        assert row.dataset == "flat"
        assert "1 unreadable image(s) skipped" in row.note


def test_run_sweep_with_no_readable_image_is_an_error(tmp_path):
    flat = tmp_path / "flat"
    corrupt(flat / "a.jpg", "garbage")
    corrupt(flat / "b.png", "truncated")
    (tmp_path / "labels.txt").write_text("1\n2\n")
    spec = RunSpec(
        model="test_vit",
        pretrained=False,
        data=str(flat),
        labels=tmp_path / "labels.txt",
        reducers=("none",),
        repeats=1,
        batch_sizes=2,
        workers=0,
        device="cpu",
    )
    with pytest.raises(TomebenchError) as excinfo:
        run_sweep(spec)
    assert_one_line_message(excinfo, "none of the 2 images", "could be read")


def test_class_count_mismatch_stops_run_sweep_before_measuring(tmp_path):
    root = tmp_path / "three"
    for c in range(3):
        colour_image(root / f"c{c}" / "x.png", c, c)
    spec = RunSpec(model="test_vit", pretrained=False, data=str(root), repeats=1, workers=0, device="cpu")
    with pytest.raises(UsageError) as excinfo:
        run_sweep(spec)
    assert_one_line_message(excinfo, "has 3 class folders", "test_vit predicts 1000 classes")


@pytest.fixture(scope="module")
def tiny_loaded() -> LoadedModel:
    return create("test_vit", pretrained=False)


def test_resolve_images_checks_labels_against_the_classifier(tmp_path, tiny_loaded):
    flat = tmp_path / "flat"
    for i in range(3):
        colour_image(flat / f"{i}.png", i, i)
    (tmp_path / "ok.txt").write_text("0\n999\n5\n")
    (tmp_path / "big.txt").write_text("0\n1000\n5\n")

    ok = resolve_images(RunSpec(data=str(flat), labels=tmp_path / "ok.txt"), tiny_loaded)
    assert ok.labels == (0, 999, 5)
    with pytest.raises(UsageError) as excinfo:
        resolve_images(RunSpec(data=str(flat), labels=tmp_path / "big.txt"), tiny_loaded)
    assert_one_line_message(excinfo, "uses class 1000", "predicts 1000")


def test_resolve_images_errors_for_bad_folders_and_headless_models(tmp_path, tiny_loaded):
    empty = tmp_path / "empty"
    empty.mkdir()
    flat = tmp_path / "flat"
    colour_image(flat / "x.png", RED, 0)
    cases = [
        (tmp_path / "missing", "no such folder"),
        (flat / "x.png", "is not a folder"),
        (empty, "is empty"),
        (flat, "no class subfolders"),
    ]
    for data, fragment in cases:
        with pytest.raises(UsageError) as excinfo:
            resolve_images(RunSpec(data=str(data)), tiny_loaded)
        assert_one_line_message(excinfo, fragment)

    headless_model = timm.create_model("test_vit", num_classes=0).eval()
    headless = LoadedModel("test_vit", headless_model, tiny_loaded.data_config, False)
    (tmp_path / "labels.txt").write_text("0\n")
    with pytest.raises(UsageError) as excinfo:
        resolve_images(RunSpec(data=str(flat), labels=tmp_path / "labels.txt"), headless)
    assert_one_line_message(excinfo, "no classifier head", "--data synthetic")


def test_resolve_images_applies_a_balanced_limit(tmp_path):
    model = colour_vit(num_classes=3)
    loaded = LoadedModel("colour", model, resolve_data_config({}, model=model), False)
    root = tmp_path / "val"
    for c, n in enumerate([4, 3, 2]):
        for i in range(n):
            colour_image(root / f"c{c}" / f"{i}.png", c, 10 * c + i, (20, 20))

    subset = resolve_images(RunSpec(data=str(root), limit=5), loaded)
    full = resolve_images(RunSpec(data=str(root)), loaded)

    assert subset.labels == (0, 0, 1, 1, 2)
    assert [f.name for f in subset.files] == ["0.png", "1.png", "0.png", "1.png", "0.png"]
    assert len(full.files) == 9 and full.classes == ("c0", "c1", "c2")
