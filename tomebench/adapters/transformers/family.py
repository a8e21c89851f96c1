"""Hugging Face transformers' ViT and DeiT image classifiers (an optional extra: `pip install 'tomebench[hf]'`):
names and loading.

Names: `hf:ID`, ID a hub repository (`google/vit-base-patch16-224`, `facebook/deit-base-distilled-patch16-224`)
or a local folder saved with `save_pretrained`, whose config is a `vit` or `deit` model. Preprocessing comes from
the repository's image processor config (resize, optional centre crop, resample filter, mean, std).

transformers is imported only when a model is loaded, so tomebench works without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import FAMILIES, Family, LoadedModel, is_offline, load_state_file, unreachable
from tomebench.adapters.transformers.surgery import TEACHER
from tomebench.errors import TomebenchError, UsageError, one_line

if TYPE_CHECKING:
    from torchvision import transforms

EXTRA = "transformers is not installed: pip install 'tomebench[hf]' to use hf: models"

# PIL's resample numbers, which image processor configs store, as torchvision's interpolation modes.
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class TransformersFamily(Family):
    prefix = "hf"
    summary = "transformers ViT/DeiT image classifiers: hf:HUB_ID or hf:LOCAL_FOLDER"

    def load(self, name: str, pretrained: bool, checkpoint: Path | None, **model_kwargs: Any) -> LoadedModel:
        """model_kwargs set config attributes (num_labels=..., image_size=...)."""
        transformers = _import()
        config = _config(transformers, name, model_kwargs)
        cls = _model_class(transformers, config, name)
        try:
            if pretrained and checkpoint is None:
                model = cls.from_pretrained(name, config=config)
            else:
                model = cls(config)
                if checkpoint is not None:
                    model.load_state_dict(load_state_file(checkpoint))
        except Exception as exc:  # noqa: BLE001 - download, hash, key or shape failures: one line, with what to do
            if checkpoint is not None:
                raise TomebenchError(f"cannot load checkpoint {checkpoint} into hf:{name}: {one_line(exc)}") from None
            if is_offline(exc):
                raise unreachable(f"pretrained weights for hf:{name}", "offline?") from None
            raise TomebenchError(f"cannot create hf:{name}: {one_line(exc)}") from None
        model.eval()
        data_config, transform = _preprocessing(transformers, name, config)
        return LoadedModel(
            f"hf:{name}",
            model,
            data_config,
            pretrained or checkpoint is not None,
            transform,
            (("transformers", transformers.__version__),),
        )

    def hub_id(self, name: str) -> str | None:
        local = name.startswith((".", "/", "~")) or os.path.exists(name)
        return None if local or not name else name

    def describe(self, name: str, from_checkpoint: bool) -> tuple[str, int]:
        config = _config(_import(), name, {})
        size = config.image_size
        return f"hf:{name}", int(size if isinstance(size, int) else size[-1])

    def catalog(self) -> list[tuple[str, str, str]]:
        return [
            ("hf:google/vit-base-patch16-224", "ViTForImageClassification", "ViT-B/16, ImageNet-21k -> 1k"),
            ("hf:google/vit-large-patch16-224", "ViTForImageClassification", "ViT-L/16, ImageNet-21k -> 1k"),
            ("hf:facebook/deit-small-patch16-224", "ViTForImageClassification", "DeiT-S/16 (ViT layout)"),
            ("hf:facebook/deit-base-distilled-patch16-224", TEACHER, "DeiT-B/16 distilled (cls + dist token)"),
            ("hf:FOLDER", "any of the above", "a local folder saved with save_pretrained"),
        ]


def _import():
    try:
        import transformers
    except ImportError:
        raise UsageError(EXTRA) from None
    return transformers


SIZE_KEYS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _local_config(name: str) -> dict:
    """A local folder's config.json as a dict; unreadable or not JSON is a UsageError."""
    path = Path(name).expanduser() / "config.json"
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"hf:{name}: cannot read {path}: {one_line(exc)}") from None
    if not isinstance(values, dict):
        raise UsageError(f"hf:{name}: {path} is not a JSON object")
    return values


def _check_sizes(name: str, values: dict) -> None:
    """Sizes the surgery computes with must be positive whole numbers (a list for image_size is allowed)."""
    for key in SIZE_KEYS:
        value = values.get(key)
        items = value if isinstance(value, (list, tuple)) else [value]
        if value is not None and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            raise UsageError(f"hf:{name}: its config.json has {key} = {value!r}, not a positive whole number")


def _strict_errors() -> tuple[type[BaseException], ...]:
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: transformers raises ValueError/TypeError itself
        return (TypeError,)
    return (StrictDataclassError, TypeError)


def _config(transformers, name: str, overrides: dict):
    """The model config; a name that is no usable hub id or folder, or not a ViT/DeiT, is a UsageError."""
    if not name:
        raise UsageError("hf: needs a hub id or a folder, e.g. hf:google/vit-base-patch16-224")
    looks_local = name.startswith((".", "/", "~")) or os.path.exists(name)
    if looks_local and not (Path(name).expanduser() / "config.json").is_file():
        raise UsageError(f"hf:{name}: no such folder with a config.json (save the model with save_pretrained)")
    if looks_local:
        _check_sizes(name, _local_config(name) | overrides)
    try:
        config = transformers.AutoConfig.from_pretrained(name, **overrides)
    except ValueError as exc:  # a malformed repository id, or a config transformers cannot read
        raise UsageError(f"hf:{name}: {one_line(exc)}") from None
    except _strict_errors() as exc:  # newer transformers validate config fields through huggingface_hub
        raise UsageError(f"hf:{name}: its config.json does not validate: {one_line(exc)}") from None
    except OSError as exc:
        if is_offline(exc):
            raise TomebenchError(
                f"the config of hf:{name} is not reachable (offline?): use a local folder or put "
                "it in the Hugging Face hub cache"
            ) from None
        raise UsageError(f"unknown transformers model hf:{name}: {one_line(exc)}") from None
    _check_sizes(name, {key: getattr(config, key, None) for key in SIZE_KEYS})
    if config.model_type not in ("vit", "deit"):
        raise UsageError(
            f"hf:{name} is a {config.model_type!r} model; tomebench patches ViT and DeiT image classifiers"
        )
    return config


def _model_class(transformers, config, name: str) -> type:
    if config.model_type == "vit":
        return transformers.ViTForImageClassification
    if TEACHER in (config.architectures or []):
        return getattr(transformers, TEACHER)
    return transformers.DeiTForImageClassification


def _preprocessing(transformers, name: str, config) -> tuple[dict, transforms.Compose]:
    """Data config and uint8 transform from the image processor config (resize to `size`, centre crop to
    `crop_size` if `do_center_crop`, the `resample` filter, `image_mean`/`image_std`), resized by PIL as the
    PIL-backed image processors do. A folder without one gets ViTImageProcessor's defaults at the model's image
    size (bilinear resize, mean and std 0.5)."""
    from torchvision import transforms

    side = config.image_size if isinstance(config.image_size, int) else config.image_size[-1]
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(name)
        size, resample = _hw(proc.size, side), RESAMPLE.get(int(getattr(proc, "resample", 2)), "bilinear")
        crop = _hw(proc.crop_size, side) if getattr(proc, "do_center_crop", False) else None
        normalize = getattr(proc, "do_normalize", True)
        mean = tuple(proc.image_mean) if normalize else (0.0, 0.0, 0.0)
        std = tuple(proc.image_std) if normalize else (1.0, 1.0, 1.0)
    except OSError:
        size, resample, crop, mean, std = (side, side), "bilinear", None, (0.5,) * 3, (0.5,) * 3
    steps = [transforms.Resize(size, interpolation=transforms.InterpolationMode(resample))]
    if crop is not None:
        steps.append(transforms.CenterCrop(crop))
    steps.append(transforms.PILToTensor())  # uint8 (3, H, W): normalising happens on the device
    final = crop or (size if isinstance(size, tuple) else (size, size))
    data_config = dict(
        input_size=(3, *final),
        mean=mean,
        std=std,
        interpolation=resample,
        crop_pct=final[0] / (size[0] if isinstance(size, tuple) else size),
        crop_mode="center",
    )
    return data_config, transforms.Compose(steps)


def _hw(size, default: int) -> tuple[int, int] | int:
    """An image processor's size ({"height", "width"} or {"shortest_edge"}) as torchvision's Resize takes it."""
    get = size.get if isinstance(size, dict) else (lambda key, d=None: getattr(size, key, d))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    edge = get("shortest_edge")
    return int(edge) if edge else (default, default)  # an int: the shorter side, aspect ratio kept


TRANSFORMERS = FAMILIES.register("transformers", aliases=("hf",), description="transformers ViT/DeiT classifier")(
    TransformersFamily()
)
