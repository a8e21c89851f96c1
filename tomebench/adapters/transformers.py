"""Hugging Face transformers' ViT and DeiT image classifiers (an optional extra: `pip install 'tomebench[hf]'`).

Names: `hf:ID`, ID a hub repository (`google/vit-base-patch16-224`, `facebook/deit-base-distilled-patch16-224`)
or a local folder saved with `save_pretrained`, whose config is a `vit` or `deit` model. Preprocessing comes from
the repository's image processor config (resize, optional centre crop, resample filter, mean, std).

Surgery (transformers >= 5 layout): `ViTLayer` / `DeiTLayer` are pre-norm (layernorm_before, attention with
q/k/v/o projections, dropout, layernorm_after, MLP, dropout); prefix tokens are cls (ViT), cls + distillation
(DeiT); the heads read token 0 (and token 1 for the distilled DeiT, averaged). transformers is imported only when
a model is loaded or its output built, so tomebench works without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import ADAPTERS, Adapter, LoadedModel, PatchedForward, is_offline, load_state_file
from tomebench.errors import TomebenchError, UsageError, one_line

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torchvision import transforms

CLASSES = ("ViTForImageClassification", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")
TEACHER = "DeiTForImageClassificationWithTeacher"
EXTRA = "transformers is not installed: pip install 'tomebench[hf]' to use hf: models"

# PIL's resample numbers, which image processor configs store, as torchvision's interpolation modes.
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _family_class(cls: type) -> type | None:
    """The transformers class a (possibly patched) model class derives from, or None."""
    for base in cls.__mro__:
        if base.__name__ in CLASSES and base.__module__.startswith("transformers.models."):
            return base
    return None


def _is_teacher(model: nn.Module) -> bool:
    return _family_class(type(model)).__name__ == TEACHER


def _base(model: nn.Module) -> nn.Module:
    return model.deit if hasattr(model, "deit") else model.vit


def _teacher_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Distilled DeiT: (cls logits, distillation logits), each (B, classes), from tokens 0 and 1 of x (B, N', C)."""
    return model.cls_classifier(x[:, 0]), model.distillation_classifier(x[:, 1])


class _TransformersForward(PatchedForward):
    """The classifiers' forward: same arguments and output class (ImageClassifierOutput or DeiT's teacher
    output), logits from the reducing loop. Hidden states and attentions are not returned: tokens change count."""

    def forward(self, pixel_values: Tensor | None = None, labels: Tensor | None = None,
                interpolate_pos_encoding: bool | None = None, attention_mask: Tensor | None = None,
                return_dict: bool | None = None, **kwargs: Any):
        if attention_mask is not None or kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
            raise NotImplementedError("token reduction changes the sequence: no attention masks, attentions or "
                                      "hidden states")
        x, _ = self._tome_tokens(pixel_values, interpolate_pos_encoding=bool(interpolate_pos_encoding))
        if _is_teacher(self):
            from transformers.models.deit.modeling_deit import DeiTForImageClassificationWithTeacherOutput

            cls_logits, dist_logits = _teacher_logits(self, x)
            out = DeiTForImageClassificationWithTeacherOutput(
                logits=(cls_logits + dist_logits) / 2, cls_logits=cls_logits, distillation_logits=dist_logits
            )
        else:
            from transformers.modeling_outputs import ImageClassifierOutput

            logits = self.classifier(x[:, 0])
            loss = self.loss_function(labels, logits, self.config) if labels is not None else None
            out = ImageClassifierOutput(loss=loss, logits=logits)
        return out if return_dict is not False else out.to_tuple()


class TransformersAdapter(Adapter):
    prefix = "hf"
    summary = "transformers ViT/DeiT image classifiers: hf:HUB_ID or hf:LOCAL_FOLDER"

    def handles(self, cls: type) -> bool:
        return _family_class(cls) is not None

    def check(self, model: nn.Module) -> None:
        for i, block in enumerate(self.blocks(model)):
            attn = getattr(block, "attention", None)
            if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
                raise UsageError(f"block {i} of {type(model).__name__} has no q/k/v/o projections: tomebench needs "
                                 "the transformers >= 5 ViT layout")

    def forward_mixin(self, model_class: type) -> type:
        return _TransformersForward

    def logits(self, output: Any) -> Tensor:
        return output.logits if hasattr(output, "logits") else output[0]  # an output object, or its to_tuple()

    def blocks(self, model: nn.Module) -> nn.Module:
        base = _base(model)
        return base.layers if hasattr(base, "layers") else base.encoder.layer

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return 2 if hasattr(_base(model).embeddings, "distillation_token") else 1

    def grid_size(self, model: nn.Module) -> tuple[int, int]:
        embed = _base(model).embeddings.patch_embeddings
        return embed.image_size[0] // embed.patch_size[0], embed.image_size[1] // embed.patch_size[1]

    def num_classes(self, model: nn.Module) -> int:
        return int(model.config.num_labels)

    def embed(self, model: nn.Module, images: Tensor, **kwargs: Any) -> Tensor:
        embeddings = _base(model).embeddings
        images = images.to(embeddings.patch_embeddings.projection.weight.dtype)  # as ViTModel.forward does
        return embeddings(images, interpolate_pos_encoding=bool(kwargs.get("interpolate_pos_encoding")))

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attention

    def attn_input(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.layernorm_before(x)

    def qkv(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = h.shape
        return tuple(
            proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)  # (B, H, N, D)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )

    def attn_scale(self, attn: nn.Module) -> float:
        return attn.scaling

    def attn_dropout(self, attn: nn.Module) -> float:
        return attn.attention_dropout if attn.training else 0.0

    def attn_output(self, attn: nn.Module, out: Tensor, h: Tensor) -> Tensor:
        return attn.o_proj(out)

    def attn_residual(self, block: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        return x + block.dropout(out)

    def mlp_residual(self, block: nn.Module, x: Tensor) -> Tensor:
        return x + block.dropout(block.mlp(block.layernorm_after(x)))

    def final_norm(self, model: nn.Module, x: Tensor) -> Tensor:
        return _base(model).layernorm(x)

    def head(self, model: nn.Module, x: Tensor, size: Tensor | None) -> Tensor:
        if _is_teacher(model):
            cls_logits, dist_logits = _teacher_logits(model, x)
            return (cls_logits + dist_logits) / 2
        return model.classifier(x[:, 0])

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
                raise TomebenchError(f"pretrained weights for hf:{name} are not reachable (offline?): pass "
                                     "--checkpoint PATH, put them in the Hugging Face hub cache, or use "
                                     "--no-pretrained") from None
            raise TomebenchError(f"cannot create hf:{name}: {one_line(exc)}") from None
        model.eval()
        data_config, transform = _preprocessing(transformers, name, config)
        return LoadedModel(f"hf:{name}", model, data_config, pretrained or checkpoint is not None, transform)

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


def _config(transformers, name: str, overrides: dict):
    """The model config; a name that is no usable hub id or folder, or not a ViT/DeiT, is a UsageError."""
    if not name:
        raise UsageError("hf: needs a hub id or a folder, e.g. hf:google/vit-base-patch16-224")
    looks_local = name.startswith((".", "/", "~")) or os.path.exists(name)
    if looks_local and not (Path(name).expanduser() / "config.json").is_file():
        raise UsageError(f"hf:{name}: no such folder with a config.json (save the model with save_pretrained)")
    try:
        config = transformers.AutoConfig.from_pretrained(name, **overrides)
    except ValueError as exc:  # a malformed repository id, or a config transformers cannot read
        raise UsageError(f"hf:{name}: {one_line(exc)}") from None
    except OSError as exc:
        if is_offline(exc):
            raise TomebenchError(f"the config of hf:{name} is not reachable (offline?): use a local folder or put "
                                 "it in the Hugging Face hub cache") from None
        raise UsageError(f"unknown transformers model hf:{name}: {one_line(exc)}") from None
    if config.model_type not in ("vit", "deit"):
        raise UsageError(f"hf:{name} is a {config.model_type!r} model; tomebench patches ViT and DeiT image "
                         "classifiers")
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
    data_config = dict(input_size=(3, *final), mean=mean, std=std, interpolation=resample,
                       crop_pct=final[0] / (size[0] if isinstance(size, tuple) else size), crop_mode="center")
    return data_config, transforms.Compose(steps)


def _hw(size, default: int) -> tuple[int, int] | int:
    """An image processor's size ({"height", "width"} or {"shortest_edge"}) as torchvision's Resize takes it."""
    get = size.get if isinstance(size, dict) else (lambda key, d=None: getattr(size, key, d))
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    edge = get("shortest_edge")
    return int(edge) if edge else (default, default)  # an int: the shorter side, aspect ratio kept


TRANSFORMERS = ADAPTERS.register("transformers", aliases=("hf",), description="transformers ViT/DeiT classifier")(
    TransformersAdapter()
)
