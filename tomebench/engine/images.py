"""The images a sweep evaluates: the demo's digits, an image folder, or none (synthetic, throughput only),
checked against the model's classifier before anything is measured."""

from __future__ import annotations

import os
from pathlib import Path

from tomebench import data as datasets
from tomebench.demo import ARCHITECTURE, digits
from tomebench.engine.spec import DEMO_DATA, SYNTHETIC, RunSpec
from tomebench.errors import UsageError
from tomebench.models import LoadedModel


def data_source(spec: RunSpec, loaded: LoadedModel) -> str:
    """--data as it will be used: the demo digits for the demo model, synthetic for any other, when unset."""
    if spec.data is not None:
        return spec.data
    return DEMO_DATA if loaded.name.startswith(ARCHITECTURE) else SYNTHETIC


def resolve_images(spec: RunSpec, loaded: LoadedModel) -> datasets.ImageList | None:
    """The images to evaluate (None: throughput only), checked against the model's classifier."""
    source = data_source(spec, loaded)
    if source == SYNTHETIC:
        return None
    if source == DEMO_DATA:
        root = digits.write_image_folder(cache_dir() / "digits-test", "test")
        images = datasets.discover(root)
        images = datasets.ImageList(images.files, images.labels, images.classes, "digits-test")
    else:
        images = datasets.discover(Path(source), spec.labels)
    num_classes = loaded.num_classes
    if num_classes == 0:
        raise UsageError(f"{loaded.name} has no classifier head, so it has no accuracy; use --data synthetic")
    if images.classes is not None and len(images.classes) != num_classes:
        raise UsageError(
            f"--data {source} has {len(images.classes)} class folders but {loaded.name} predicts {num_classes} classes"
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
    ~/.cache/tomebench."""
    return Path(os.environ.get("TOMEBENCH_CACHE", Path.home() / ".cache" / "tomebench"))
