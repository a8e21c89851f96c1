"""What --data names, opened as an ImageList: an image folder, a Hugging Face dataset or WebDataset shards."""

from __future__ import annotations

from pathlib import Path

from tomebench.data.folders import discover
from tomebench.data.images import ImageList
from tomebench.errors import UsageError


def open_data(data: str, labels: Path | None = None, notes: list[str] | None = None) -> ImageList:
    """`hf:NAME[:SPLIT]` and `wds:PATTERN` by their prefix; a folder by what it holds (a save_to_disk dataset, parquet
    shards, .tar shards, else image files)."""
    notes = [] if notes is None else notes
    from tomebench.data import hf, wds

    kind = None
    if data.startswith("hf:"):
        kind, where = "hf", data[3:]
    elif data.startswith("wds:"):
        kind, where = "wds", data[4:]
    else:
        root = Path(data).expanduser()
        kind = hf.holds_dataset(root) and "hf-folder" or wds.holds_shards(root) and "wds" or None
        where = data
    if kind is not None and labels is not None:
        raise UsageError(f"--labels is for a flat image folder; --data {data} has its own labels: drop --labels")
    if kind == "hf":
        return hf.open_hub(where, notes)
    if kind == "hf-folder":
        return hf.open_folder(Path(where).expanduser(), notes)
    if kind == "wds":
        return wds.open_shards(where, notes)
    return discover(Path(data), labels)
