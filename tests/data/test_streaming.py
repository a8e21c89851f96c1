"""Hugging Face datasets (save_to_disk, parquet shards, hf:) and WebDataset shards, written here with the libraries
themselves: top-1/top-5/n_images equal those of the same images in a class folder, with --limit, an undecodable
sample and a split over Ray's shards.

The model is test_vit with 3-class "colour" weights: it predicts the dominant colour channel."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.data.images import BLUE, GREEN, RED, colour_image, colour_vit
from tests.helpers import assert_one_line_message
from tomebench.engine.images import resolve_images
from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec
from tomebench.errors import UsageError

CLASSES = ("ant", "bee", "cat")
# (class, dominant colour or None for bytes that do not decode), in dataset order: classes interleaved.
PLAN = [
    (0, RED),
    (1, GREEN),
    (2, BLUE),
    (0, GREEN),
    (1, GREEN),
    (2, RED),
    (0, RED),
    (1, None),
    (2, BLUE),
    (0, BLUE),
    (1, GREEN),
    (2, BLUE),
]
GARBAGE = b"not an image at all " * 10


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[tuple[int, bytes]]:
    """(label, encoded image) per sample: PNGs of varying size, one undecodable."""
    folder = tmp_path_factory.mktemp("encoded")
    out = []
    for i, (label, colour) in enumerate(PLAN):
        if colour is None:
            out.append((label, GARBAGE))
        else:
            out.append((label, colour_image(folder / f"{i}.png", colour, i, (50 + 7 * i, 60)).read_bytes()))
    return out


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory, samples) -> Path:
    """The reference: the same images in class folders, named so that file order is dataset order."""
    root = tmp_path_factory.mktemp("reference") / "data"
    for i, (label, data) in enumerate(samples):
        path = root / CLASSES[label] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> RunSpec:
    path = tmp_path_factory.mktemp("weights") / "colour3.safetensors"
    save_file({k: v.contiguous() for k, v in colour_vit(num_classes=3).state_dict().items()}, str(path))
    return RunSpec(
        model="test_vit",
        checkpoint=path,
        model_kwargs={"num_classes": 3},
        r=(4,),
        repeats=1,
        batch_sizes=4,
        workers=0,
        device="cpu",
    )


def accuracy(spec: RunSpec) -> list[tuple]:
    rows = run_sweep(spec)
    assert all(row.error is None for row in rows), [row.error for row in rows]
    return [(row.top1, row.top5, row.n_images, row.n_unreadable) for row in rows]


@pytest.fixture(scope="module")
def reference(spec, class_folder) -> dict:
    full = accuracy(replace(spec, data=str(class_folder)))
    assert full[0][2] == 11 and full[0][3] == 1 and 0 < full[0][0] < 100  # not a vacuous equality
    return {None: full, 5: accuracy(replace(spec, data=str(class_folder), limit=5))}


# ---------------------------------------------------------------- Hugging Face datasets


def make_dataset(images: list[bytes], labels: list[int], label_feature=None):
    """A datasets.Dataset of (image, label) rows, as imagenet-1k's (an Image column and a ClassLabel).

    Built from its Arrow table with a given fingerprint: from_dict's own fingerprint pickles the table with dill,
    which fails for some pyarrow/dill pairs; what is tested (reading) is the same."""
    datasets = pytest.importorskip("datasets", reason="the data extra (datasets) is not installed")
    from datasets.table import InMemoryTable

    label_feature = label_feature or datasets.ClassLabel(names=list(CLASSES))
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    rows = {"image": [{"bytes": data, "path": f"{i:03d}.png"} for i, data in enumerate(images)], "label": labels}
    table = InMemoryTable.from_pydict(features.encode_batch(rows), schema=features.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=f"test-{len(images)}")


@pytest.fixture(scope="module")
def hf_dataset(samples):
    return make_dataset([data for _, data in samples], [label for label, _ in samples])


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """load_dataset's Arrow cache in the test's folder, not the user's."""
    if "datasets" in sys.modules:
        monkeypatch.setattr(sys.modules["datasets"].config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("limit", [None, 5])
def test_save_to_disk_folder_equals_the_class_folder(tmp_path, spec, hf_dataset, reference, limit):
    hf_dataset.save_to_disk(str(tmp_path / "imagenet-1k"))
    assert accuracy(replace(spec, data=str(tmp_path / "imagenet-1k"), limit=limit)) == reference[limit]


def test_a_dataset_dict_on_disk_evaluates_its_validation_split(tmp_path, spec, hf_dataset, reference):
    import datasets

    splits = datasets.DatasetDict({"train": hf_dataset.select([0, 1]), "validation": hf_dataset})
    splits.save_to_disk(str(tmp_path / "dd"))
    rows = run_sweep(replace(spec, data=str(tmp_path / "dd")))
    assert [(r.top1, r.top5, r.n_images, r.n_unreadable) for r in rows] == reference[None]
    assert rows[0].dataset == "dd:validation"


@pytest.mark.parametrize("form", ["folder", "hf"])
def test_parquet_shards_equal_the_class_folder(tmp_path, spec, hf_dataset, reference, form):
    data = tmp_path / "imagenet-1k" / "data"
    data.mkdir(parents=True)
    hf_dataset.select(range(7)).to_parquet(str(data / "validation-00000-of-00002.parquet"))
    hf_dataset.select(range(7, 12)).to_parquet(str(data / "validation-00001-of-00002.parquet"))
    where = str(tmp_path / "imagenet-1k")
    assert accuracy(replace(spec, data=where if form == "folder" else f"hf:{where}:validation")) == reference[None]


def test_hf_without_the_library_says_how_to_install_it(tmp_path, spec, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UsageError) as excinfo:
        run_sweep(replace(spec, data=str(tmp_path / "ds")))
    assert_one_line_message(excinfo, "pip install 'tomebench[data]'")


def test_bad_hf_sources_are_one_line_errors(tmp_path, spec, hf_dataset, samples):
    import datasets

    hf_dataset.select_columns(["image"]).save_to_disk(str(tmp_path / "nolabel"))
    unlabelled = make_dataset([data for _, data in samples], [-1] * len(samples), datasets.Value("int64"))
    unlabelled.save_to_disk(str(tmp_path / "test-split"))
    cases = [
        (str(tmp_path / "nolabel"), "no label column"),
        (str(tmp_path / "test-split"), "no labelled samples"),
        ("hf:", "names no dataset"),
        (f"hf:{tmp_path / 'missing'}", "cannot load it"),
    ]
    for data, fragment in cases:
        with pytest.raises(UsageError) as excinfo:
            run_sweep(replace(spec, data=data))
        assert_one_line_message(excinfo, fragment)


# ---------------------------------------------------------------- WebDataset shards


def write_shards(folder: Path, samples, per_shard: int = 5) -> list[Path]:
    """Shards written by webdataset's TarWriter, timm's imagenet-1k-wds way (key.png + key.cls), plus a sample
    without a label that is left out."""
    webdataset = pytest.importorskip("webdataset", reason="webdataset is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(0, len(samples), per_shard):
        path = folder / f"val-{k // per_shard:02d}.tar"
        with webdataset.TarWriter(str(path)) as sink:
            for i, (label, data) in enumerate(samples[k : k + per_shard], start=k):
                sink.write({"__key__": f"ILSVRC2012_val_{i + 1:08d}", "png": data, "cls": label})
            if k == 0:
                sink.write({"__key__": "unlabelled", "png": samples[0][1]})
        paths.append(path)
    return paths


@pytest.mark.parametrize("limit", [None, 5])
def test_webdataset_shards_equal_the_class_folder(tmp_path, spec, samples, reference, limit):
    shards = write_shards(tmp_path / "wds", samples)
    assert len(shards) == 3
    pattern = f"wds:{tmp_path / 'wds'}/val-{{00..02}}.tar"
    assert accuracy(replace(spec, data=pattern, limit=limit)) == reference[limit]
    assert accuracy(replace(spec, data=str(tmp_path / "wds"), limit=limit)) == reference[limit]


def test_webdataset_limit_is_class_balanced_and_deterministic(tmp_path, spec, samples):
    write_shards(tmp_path / "wds", samples)
    notes: list[str] = []
    from tomebench.models import create

    loaded = create("test_vit", pretrained=False, num_classes=3)
    first = resolve_images(replace(spec, data=str(tmp_path / "wds"), limit=7), loaded, notes)
    again = resolve_images(replace(spec, data=str(tmp_path / "wds"), limit=7), loaded)
    assert first == again and sorted(first.labels) == [0, 0, 0, 1, 1, 2, 2]
    assert any("1 samples of the shards have no image or no .cls label" in n for n in notes)


def test_bad_webdataset_sources_are_one_line_errors(tmp_path, spec, samples):
    write_shards(tmp_path / "wds", samples)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.tar").write_bytes(b"\x1f\x8b" + b"gzip, not a tar" * 40)
    (tmp_path / "empty").mkdir()
    cases = [
        (f"wds:{tmp_path / 'wds'}/val-{{00..05}}.tar", "3 of 6 shards missing"),
        (str(tmp_path / "broken"), "not a readable uncompressed tar"),
        (f"wds:{tmp_path / 'empty'}", "without .tar shards"),
    ]
    for data, fragment in cases:
        with pytest.raises(UsageError) as excinfo:
            run_sweep(replace(spec, data=data))
        assert_one_line_message(excinfo, fragment)


def test_webdataset_over_ray_shards_counts_every_sample_once(tmp_path, spec, samples, reference):
    ray = pytest.importorskip("ray")
    from tomebench.engine.ray import RayExecutor

    write_shards(tmp_path / "wds", samples)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_sweep(replace(spec, data=f"wds:{tmp_path / 'wds'}"), executor=RayExecutor(shards=3))
    finally:
        ray.shutdown()
    assert [(r.top1, r.top5, r.n_images, r.n_unreadable) for r in rows] == reference[None]


def test_real_labels_find_webdataset_samples_by_key(tmp_path, spec, samples):
    write_shards(tmp_path / "wds", samples)
    real = tmp_path / "real.json"
    real.write_text(str([[label] for label, _ in samples]))  # ReaL agreeing with the labels: real_top1 = top1
    rows = run_sweep(replace(spec, data=f"wds:{tmp_path / 'wds'}", real_labels=real))
    assert all(row.real_top1 == pytest.approx(row.top1) for row in rows)
