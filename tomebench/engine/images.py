"""The images a sweep evaluates: the demo's digits, an image folder, or none (synthetic, throughput only),
checked against the model's classifier before anything is measured."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tomebench import data as datasets
from tomebench.demo import ARCHITECTURE, digits
from tomebench.engine.spec import DEMO_DATA, SYNTHETIC, RunSpec
from tomebench.errors import TomebenchError, UsageError
from tomebench.models import LoadedModel


def data_source(spec: RunSpec, loaded: LoadedModel) -> str:
    """--data as it will be used: the demo digits for the demo model, synthetic for any other, when unset."""
    if spec.data is not None:
        return spec.data
    return DEMO_DATA if loaded.name.startswith(ARCHITECTURE) else SYNTHETIC


def resolve_images(spec: RunSpec, loaded: LoadedModel, notes: list[str] | None = None) -> datasets.ImageList | None:
    """The images to evaluate (None: throughput only), checked against the model's classifier; `notes` gets what
    the user should know about them."""
    notes = [] if notes is None else notes
    source = data_source(spec, loaded)
    if source == SYNTHETIC and spec.limit is not None:
        raise UsageError(
            "--limit picks images to evaluate, and --data synthetic evaluates none (throughput only): "
            "drop --limit, or give --data an image folder"
        )
    if spec.labels is not None and source in (SYNTHETIC, DEMO_DATA):
        raise UsageError(f"--labels is for a flat image folder; --data {source} has its own labels: drop --labels")
    if source == SYNTHETIC:
        return None
    if source == DEMO_DATA:
        root = demo_digits()
        notes.append(f"the demo's 360 test digits are read from {root} (written once; TOMEBENCH_CACHE moves it)")
        images = datasets.discover(root)
        images = datasets.ImageList(images.files, images.labels, images.classes, "digits-test")
    else:
        images = datasets.discover(Path(source), spec.labels)
    num_classes = loaded.num_classes
    if num_classes == 0:
        raise UsageError(f"{loaded.name} has no classifier head, so it has no accuracy; use --data synthetic")
    if images.classes is not None and len(images.classes) != num_classes:
        found = len(images.classes)
        raise UsageError(
            f"--data {source} has {found} class folders but {loaded.name} predicts {num_classes} classes: for weights "
            f"of a {found}-class head pass --model-arg num_classes={found} --checkpoint FILE"
        )
    if images.classes is None and images.num_classes > num_classes:
        raise UsageError(f"--labels uses class {images.num_classes - 1} but {loaded.name} predicts {num_classes}")
    images = datasets.balanced_subset(images, spec.limit)
    if datasets.first_readable(images) is None:
        raise UsageError(
            f"none of the {len(images.files)} images under --data {source} could be read "
            "(corrupt, or not an image format PIL knows)"
        )
    return images


def cache_dir() -> Path:
    """Where tomebench keeps what it makes once (the demo's digit images): TOMEBENCH_CACHE, else
    ~/.cache/tomebench, else (no HOME) the system's temp folder."""
    if os.environ.get("TOMEBENCH_CACHE"):
        return Path(os.environ["TOMEBENCH_CACHE"]).expanduser()
    try:
        return Path.home() / ".cache" / "tomebench"
    except RuntimeError:  # HOME unset and no passwd entry
        return Path(tempfile.gettempdir()) / "tomebench-cache"


def demo_digits() -> Path:
    """The demo's 360 test digits as a class folder in the cache (written once); where, if the cache cannot be
    written (a read-only HOME), the system's temp folder. A TOMEBENCH_CACHE that is not a folder is an error."""
    chosen = cache_dir()
    if chosen.exists() and not chosen.is_dir():
        raise UsageError(
            f"the tomebench cache {chosen} (TOMEBENCH_CACHE or ~/.cache/tomebench) is a file, not a "
            "folder: point TOMEBENCH_CACHE at a folder"
        )
    for base in (chosen, Path(tempfile.gettempdir()) / "tomebench-cache"):
        try:
            return digits.write_image_folder(base / "digits-test", "test")
        except OSError:
            continue
    raise TomebenchError(
        f"cannot write the demo's digit images to {chosen} or the temp folder: set TOMEBENCH_CACHE to a writable folder"
    )
