"""torchvision's VisionTransformer family (vit_b_16 ... vit_h_14, and the SWAG weights the ToMe paper
evaluates): names and loading.

Names: `tv:ARCH[.WEIGHTS]`, ARCH a torchvision ViT builder (`vit_b_16`), WEIGHTS a member of its weights enum
(`IMAGENET1K_SWAG_E2E_V1`, any case) or a short form (`swag_e2e`, `swag_linear`, `v1`); no WEIGHTS means the
enum's DEFAULT. The weights decide the input size (SWAG end-to-end: 384 to 518 px) and the preprocessing
(`weights.transforms()`), whether or not they are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import FAMILIES, Family, LoadedModel, is_offline, load_state_file, unreachable
from tomebench.errors import TomebenchError, UsageError, one_line
from tomebench.registry import did_you_mean

if TYPE_CHECKING:
    from torch import nn
    from torchvision import transforms

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The ViT weights torchvision publishes (architecture, weights, input size, ImageNet-1k top-1 in its docs), listed
# by `tomebench models` without importing torchvision; tests/adapters/test_loading.py holds it to torchvision's enums.
PUBLISHED = (
    ("vit_b_16", "IMAGENET1K_V1", 224, 81.072),
    ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", 384, 85.304),
    ("vit_b_16", "IMAGENET1K_SWAG_LINEAR_V1", 224, 81.886),
    ("vit_b_32", "IMAGENET1K_V1", 224, 75.912),
    ("vit_h_14", "IMAGENET1K_SWAG_E2E_V1", 518, 88.552),
    ("vit_h_14", "IMAGENET1K_SWAG_LINEAR_V1", 224, 85.708),
    ("vit_l_16", "IMAGENET1K_V1", 224, 79.662),
    ("vit_l_16", "IMAGENET1K_SWAG_E2E_V1", 512, 88.064),
    ("vit_l_16", "IMAGENET1K_SWAG_LINEAR_V1", 224, 85.146),
    ("vit_l_32", "IMAGENET1K_V1", 224, 76.972),
)


class TorchvisionFamily(Family):
    prefix = "tv"
    summary = "torchvision VisionTransformer: tv:ARCH[.WEIGHTS]"

    def load(self, name: str, pretrained: bool, checkpoint: Path | None, **model_kwargs: Any) -> LoadedModel:
        """model_kwargs go to the builder (image_size=..., num_classes=...); a checkpoint is a state dict file
        for the architecture at its weights' input size."""
        import torchvision

        architecture, weights = _resolve(name)
        if weights is None and pretrained and checkpoint is None:
            raise UsageError(f"tv:{architecture} has no published weights: pass --checkpoint PATH or --no-pretrained")
        kwargs: dict = dict(model_kwargs)
        builder = torchvision.models.get_model_builder(architecture)
        if weights is not None and (not pretrained or checkpoint is not None):
            # The architecture as those weights need it (SWAG end-to-end weights are for 384-518 px inputs).
            kwargs.setdefault("image_size", weights.meta["min_size"][0])
            kwargs.setdefault("num_classes", len(weights.meta["categories"]))
        use_weights = weights if pretrained and checkpoint is None else None
        try:
            model = builder(weights=use_weights, **kwargs)
        except TypeError as exc:
            raise UsageError(f"cannot create tv:{architecture} with {model_kwargs}: {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - a download or hash failure: one line, with what to do
            if use_weights is not None and (is_offline(exc) or isinstance(exc, OSError)):
                raise unreachable(
                    f"pretrained weights for tv:{architecture}.{weights.name}",
                    "offline?",
                    "put them in the torch hub cache",
                ) from None
            raise TomebenchError(f"cannot create tv:{architecture}: {one_line(exc)}") from None
        if checkpoint is not None:
            try:
                model.load_state_dict(load_state_file(checkpoint))
            except Exception as exc:  # noqa: BLE001 - wrong keys or shapes, unreadable file: one line
                raise TomebenchError(
                    f"cannot load checkpoint {checkpoint} into tv:{architecture}: {one_line(exc)}"
                ) from None
        model.eval()
        data_config, transform = _preprocessing(model, weights)
        loaded_name = f"tv:{architecture}.{weights.name}" if use_weights is not None else f"tv:{architecture}"
        return LoadedModel(
            loaded_name,
            model,
            data_config,
            pretrained or checkpoint is not None,
            transform,
            (("torchvision", torchvision.__version__),),
        )

    def describe(self, name: str, from_checkpoint: bool) -> tuple[str, int]:
        architecture, weights = _resolve(name)
        size = weights.meta["min_size"][0] if weights is not None else 224
        named = weights is not None and not from_checkpoint
        return (f"tv:{architecture}.{weights.name}" if named else f"tv:{architecture}"), int(size)

    def catalog(self) -> list[tuple[str, str, str]]:
        rows = []
        for architecture, weights, size, top1 in PUBLISHED:
            short = weights.lower().removeprefix("imagenet1k_").removesuffix("_v1")
            rows.append((f"tv:{architecture}.{short}", f"tv:{architecture}.{weights}", f"{size} px, top-1 {top1}"))
        return rows


def _architectures() -> list[str]:
    """torchvision's ViT builders, and any `vit_*` builder registered with torchvision's model registry."""
    import torchvision

    return [m for m in torchvision.models.list_models() if m.startswith("vit_")]


def _weights_enum(architecture: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError, AttributeError):
        return None  # a builder registered without published weights


def _resolve(name: str):
    """`vit_b_16.swag_e2e` -> ("vit_b_16", its IMAGENET1K_SWAG_E2E_V1 enum member); no tag: DEFAULT, or None for a
    builder without a weights enum."""
    architecture, _, tag = name.partition(".")
    if architecture not in _architectures():
        hint = did_you_mean(architecture, _architectures(), prefix="tv:") or "`tomebench models` lists them"
        raise UsageError(f"unknown torchvision model 'tv:{name}'; {hint}")
    enum = _weights_enum(architecture)
    if enum is None:
        if tag:
            raise UsageError(f"tv:{architecture} has no published weights, so no tag {tag!r}")
        return architecture, None
    if not tag:
        return architecture, enum.DEFAULT
    members = {w.name: w for w in enum}
    upper = tag.upper()
    for candidate in (upper, f"IMAGENET1K_{upper}", f"IMAGENET1K_{upper}_V1"):
        if candidate in members:
            return architecture, members[candidate]
    raise UsageError(f"tv:{architecture} has no weights {tag!r}; choose one of {', '.join(members)}")


def _preprocessing(model: nn.Module, weights) -> tuple[dict, transforms.Compose]:
    """The data config and the uint8 transform from the weights' own `transforms()` (resize, centre crop,
    interpolation, antialias, mean, std); a builder without weights: resize to its image size, ImageNet stats."""
    from torchvision import transforms

    if weights is not None:
        preset = weights.transforms()
        resize, crop = list(preset.resize_size), list(preset.crop_size)
        mean, std, interpolation = tuple(preset.mean), tuple(preset.std), preset.interpolation
        antialias = preset.antialias
    else:
        resize, crop = [model.image_size], [model.image_size]
        mean, std, interpolation, antialias = IMAGENET_MEAN, IMAGENET_STD, transforms.InterpolationMode.BILINEAR, True
    size = crop[0]
    transform = transforms.Compose(
        [
            transforms.Resize(resize, interpolation=interpolation, antialias=antialias),
            transforms.CenterCrop(crop),
            transforms.PILToTensor(),  # uint8 (3, H, W): normalising happens on the device
        ]
    )
    data_config = dict(
        input_size=(3, size, size),
        mean=mean,
        std=std,
        interpolation=interpolation.value,
        crop_pct=crop[0] / resize[0],
        crop_mode="center",
    )
    return data_config, transform


TORCHVISION = FAMILIES.register("torchvision", aliases=("tv",), description="torchvision VisionTransformer")(
    TorchvisionFamily()
)
