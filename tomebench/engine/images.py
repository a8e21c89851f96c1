"""The images a sweep evaluates: the demo's digits, an image folder, or none (synthetic, throughput only),
checked against the model's classifier before anything is measured."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

from tomebench import data as datasets
from tomebench.data import imagenet
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
    for flag, value in (("--real-labels", spec.real_labels), ("--class-subset", spec.class_subset)):
        if value is not None and source in (SYNTHETIC, DEMO_DATA):
            raise UsageError(f"{flag} is for ImageNet data; --data {source} is not: drop {flag}")
    if source == SYNTHETIC:
        return None
    if source == DEMO_DATA:
        root = demo_digits()
        notes.append(f"the demo's 360 test digits are read from {root} (written once; TOMEBENCH_CACHE moves it)")
        images = replace(datasets.discover(root), name="digits-test")
    else:
        images = datasets.open_data(source, spec.labels, notes)
    num_classes = loaded.num_classes
    if num_classes == 0:
        raise UsageError(f"{loaded.name} has no classifier head, so it has no accuracy; use --data synthetic")
    if spec.class_subset is not None:
        images = imagenet.class_subset(images, spec.class_subset, num_classes)
        if images.valid is not None:
            notes.append(f"{len(images.valid)} of {num_classes} classes: logits restricted to them (--class-subset)")
    _check_classes(images, source, loaded.name, num_classes)
    if spec.real_labels is not None:
        if images.valid is not None:
            raise UsageError("--real-labels are ImageNet-1k val labels; a --class-subset dataset has none")
        names = [images.name_of(i) for i in range(len(images.files))]
        images = replace(images, real=imagenet.real_labels(spec.real_labels, names))
    images = datasets.balanced_subset(images, spec.limit)
    if datasets.first_readable(images) is None:
        raise UsageError(
            f"none of the {len(images.files)} images under --data {source} could be read "
            "(corrupt, or not an image format PIL knows)"
        )
    return images


def _check_classes(images: datasets.ImageList, source: str, model: str, num_classes: int) -> None:
    """The labels fit the model's classifier, or one line saying how to make them fit."""
    classes = images.classes
    if images.valid is not None:
        return
    numbered = classes is not None and all(c.isascii() and c.isdigit() for c in classes)
    if numbered and [int(c) for c in classes] != list(range(num_classes)):
        raise UsageError(
            f"--data {source} has {len(classes)} class folders named by number, {model} predicts {num_classes} "
            "classes and text order puts 10 before 2: pass --class-subset indices to label each folder by its "
            f"number (ImageNet-V2), or --model-arg num_classes={len(classes)} --checkpoint FILE for such a head"
        )
    if classes is not None and len(classes) != num_classes:
        found = len(classes)
        if all(c in imagenet.synsets() for c in classes) and num_classes == 1000:
            raise UsageError(
                f"--data {source} has {found} ImageNet class folders (as ImageNet-A/R) but {model} predicts "
                f"{num_classes} classes: pass --class-subset synsets"
            )
        raise UsageError(
            f"--data {source} has {found} class folders but {model} predicts {num_classes} classes: for weights "
            f"of a {found}-class head pass --model-arg num_classes={found} --checkpoint FILE"
        )
    if classes is None and images.num_classes > num_classes:
        raise UsageError(f"--labels uses class {images.num_classes - 1} but {model} predicts {num_classes}")


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
