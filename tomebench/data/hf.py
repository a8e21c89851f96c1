"""Hugging Face datasets: `hf:NAME[:SPLIT]` from the local hub cache, a `save_to_disk` folder, or a folder of
parquet shards, read with the `datasets` library (the `data` extra).

Samples are rows of an Arrow table that `datasets` memory-maps, so they are read by index like files: --limit,
Ray's shards and the one data pass work as for folders. Images are read undecoded (their stored bytes) and
decoded by PIL in the DataLoader workers, so a row that does not decode is skipped and counted, not fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomebench.data.images import ImageList
from tomebench.errors import UsageError, one_line

INSTALL = "Hugging Face datasets need the datasets library: pip install 'tomebench[data]'"
SPLITS = ("validation", "val", "valid")  # the split a folder or a name without :SPLIT gives, in this order
LABEL_COLUMNS = ("label", "labels", "cls", "class")


def _library():
    try:
        import datasets
    except ImportError:
        raise UsageError(INSTALL) from None
    return datasets


def holds_dataset(root: Path) -> bool:
    """A save_to_disk folder (its state.json or dataset_dict.json), or parquet shards in it or in its data/
    (`data/validation-00000-of-00014.parquet`, as the hub stores imagenet-1k)."""
    if not root.is_dir():
        return False
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return True
    # Not a recursive search: an ImageNet class folder holds a million files, and is no dataset.
    return next(root.glob("*.parquet"), None) is not None or next((root / "data").glob("*.parquet"), None) is not None


def open_hub(where: str, notes: list[str]) -> ImageList:
    """hf:NAME[:SPLIT] (default split: validation) through datasets.load_dataset, which reads the hub cache; set
    HF_HUB_OFFLINE=1 where there is no network."""
    name, _, split = where.partition(":")
    if not name:
        raise UsageError("--data hf: names no dataset: write hf:NAME[:SPLIT], e.g. hf:imagenet-1k:validation")
    split = split or SPLITS[0]
    library = _library()
    try:
        dataset = library.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - not cached, no network, no such split: all one line for the user
        raise UsageError(f"--data hf:{where}: cannot load it ({one_line(exc)})") from None
    return _image_list(dataset, f"{name}:{split}", f"hf:{where}", notes)


def open_folder(root: Path, notes: list[str]) -> ImageList:
    library = _library()
    try:
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            loaded = library.load_from_disk(str(root))
        else:
            loaded = library.load_dataset("parquet", data_dir=str(root))
    except Exception as exc:  # noqa: BLE001 - a damaged folder: one line
        raise UsageError(f"--data {root}: cannot read it as a Hugging Face dataset ({one_line(exc)})") from None
    if isinstance(loaded, library.DatasetDict):
        split = _split(loaded, root)
        return _image_list(loaded[split], f"{root.name}:{split}", str(root), notes)
    return _image_list(loaded, root.name, str(root), notes)


def _split(splits, root: Path) -> str:
    names = list(splits)
    for wanted in SPLITS:
        if wanted in names:
            return wanted
    if len(names) == 1:
        return names[0]
    raise UsageError(f"--data {root} holds the splits {', '.join(names)}: keep only the one to evaluate there")


def _image_list(dataset, name: str, where: str, notes: list[str]) -> ImageList:
    library = _library()
    features = dataset.features
    images = [k for k, f in features.items() if isinstance(f, library.Image)]
    if not images:
        raise UsageError(f"--data {where} has no image column (columns: {', '.join(features)})")
    label = next((k for k, f in features.items() if isinstance(f, library.ClassLabel)), None)
    label = label or next((k for k in LABEL_COLUMNS if k in features), None)
    if label is None:
        raise UsageError(f"--data {where} has no label column (columns: {', '.join(features)})")
    labels = dataset.data.column(label).to_pylist()
    keep = [i for i, v in enumerate(labels) if isinstance(v, int) and v >= 0]
    if not keep:
        raise UsageError(f"--data {where} has no labelled samples (a test split's labels are -1)")
    if len(keep) < len(labels):
        notes.append(f"{len(labels) - len(keep)} samples of {where} have no label and are left out")
    classes = features[label].names if isinstance(features[label], library.ClassLabel) else None
    # Undecoded: the stored bytes, for PIL to decode in the workers (a broken image is then counted, not fatal).
    raw = dataset.select_columns([images[0]]).cast_column(images[0], library.Image(decode=False))
    source = RowSource(raw, images[0], f"{dataset._fingerprint}:{len(dataset)}")
    return ImageList(
        tuple(keep), tuple(labels[i] for i in keep), None if classes is None else tuple(classes), name, source
    )


@dataclass
class RowSource:
    """Rows of a `datasets.Dataset` whose one column is an undecoded image ({"bytes", "path"})."""

    dataset: Any
    column: str
    fingerprint: str
    _paths: list | None = field(default=None, repr=False)

    def read(self, item: int) -> bytes:
        cell = self.dataset[item][self.column]
        if cell.get("bytes") is not None:
            return cell["bytes"]
        return Path(cell["path"]).read_bytes()  # a dataset that stores paths to files beside it

    def name(self, item: int) -> str | None:
        if self._paths is None:  # the path field alone, from the Arrow column: no image bytes are read
            self._paths = self.dataset.data.column(self.column).combine_chunks().field("path").to_pylist()
        return self._paths[item]

    def identity(self) -> str:
        return self.fingerprint

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_paths": None}
