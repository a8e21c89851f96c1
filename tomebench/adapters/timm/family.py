"""timm's VisionTransformer family: names (aliases, any timm name with or without a pretrained tag) and loading
through timm's own factory, weights and data config."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from tomebench import demo
from tomebench.adapters.base import FAMILIES, Family, LoadedModel, is_offline, unreachable
from tomebench.errors import TomebenchError, UsageError, one_line
from tomebench.registry import did_you_mean

# alias -> (timm name, what it is). The tags are the weights timm publishes for each architecture.
ALIASES: dict[str, tuple[str, str]] = {
    "demo": (demo.NAME, "bundled depth-8 ViT trained on scikit-learn's 8x8 digits (runs offline)"),
    "vit_t": ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "ViT-Ti/16, AugReg"),
    "vit_s": ("vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S/16, AugReg"),
    "vit_b": ("vit_base_patch16_224.augreg_in21k_ft_in1k", "ViT-B/16, AugReg"),
    "vit_l": ("vit_large_patch16_224.augreg_in21k_ft_in1k", "ViT-L/16, AugReg"),
    "vit_l384": ("vit_large_patch16_384.augreg_in21k_ft_in1k", "ViT-L/16 at 384px, AugReg"),
    "vit_h": ("vit_huge_patch14_clip_224.laion2b_ft_in12k_in1k", "ViT-H/14, CLIP LAION-2B fine-tuned"),
    "deit_t": ("deit_tiny_patch16_224.fb_in1k", "DeiT-Ti/16"),
    "deit_s": ("deit_small_patch16_224.fb_in1k", "DeiT-S/16"),
    "deit_b": ("deit_base_patch16_224.fb_in1k", "DeiT-B/16"),
    "deit_b_dist": ("deit_base_distilled_patch16_224.fb_in1k", "DeiT-B/16 distilled (cls + dist token)"),
    "deit3_s": ("deit3_small_patch16_224.fb_in1k", "DeiT-III-S/16 (LayerScale)"),
    "deit3_b": ("deit3_base_patch16_224.fb_in1k", "DeiT-III-B/16 (LayerScale)"),
    "mae_b": ("vit_base_patch16_224.mae", "MAE ViT-B/16 (self-supervised features, no classifier)"),
    "mae_l": ("vit_large_patch16_224.mae", "MAE ViT-L/16 (self-supervised features, no classifier)"),
    "vit_m_reg4": ("vit_medium_patch16_reg4_gap_256.sbb_in12k_ft_in1k", "ViT-M/16 with 4 registers, avg pool"),
}


def _timm():
    """timm, with the demo ViT registered. Imported here, not at the top: `tomebench models` and `--help` should
    not wait seconds for timm and torch."""
    importlib.import_module("tomebench.demo.model")
    return importlib.import_module("timm")


def resolve_name(name: str) -> str:
    """Alias or timm name -> timm name. Unknown names raise a UsageError with close matches."""
    if name in ALIASES:
        return ALIASES[name][0]
    timm = _timm()
    architecture, _, tag = name.partition(".")
    if timm.is_model(architecture):
        if tag and name not in timm.list_pretrained(f"{architecture}.*"):
            tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{architecture}.*")]
            hint = did_you_mean(tag, tags) or f"its tags: {', '.join(tags) or 'none'}"
            raise UsageError(f"{architecture} has no pretrained tag {tag!r}; {hint}")
        return name
    hint = did_you_mean(name, list(ALIASES) + timm.list_models(), cutoff=0.6)
    raise UsageError(f"unknown model {name!r}; {hint or '`tomebench models` lists the aliases'}")


class TimmFamily(Family):
    summary = "timm VisionTransformer: any timm ViT/DeiT name, with or without a pretrained tag, or an alias"

    def load(self, name: str, pretrained: bool, checkpoint: Path | None, **model_kwargs: Any) -> LoadedModel:
        """model_kwargs go to timm.create_model (for example global_pool="avg" for MAE fine-tuned checkpoints);
        a checkpoint goes through timm's own loader, so the model's checkpoint filter applies."""
        timm_name = resolve_name(name)
        timm = _timm()
        from timm.data import resolve_data_config

        kwargs: dict = dict(model_kwargs)
        _check_head(timm, timm_name, kwargs, pretrained and checkpoint is None)
        if checkpoint is not None:
            # timm's own loader then applies the model's checkpoint filter (pos-embed resizing, key renames). Its
            # head is the checkpoint's: told the class count asked for, timm keeps it rather than dropping it.
            overlay = dict(file=str(checkpoint), hf_hub_id=None, url=None)
            if "num_classes" in kwargs:
                overlay["num_classes"] = kwargs["num_classes"]
            kwargs["pretrained_cfg_overlay"] = overlay
            pretrained = True
        try:
            model = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
        except TypeError as exc:  # an argument the architecture does not take
            raise UsageError(f"cannot create {timm_name} with {model_kwargs}: {str(exc).splitlines()[0]}") from None
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise _load_error(timm_name, checkpoint, exc) from None
        except Exception as exc:  # noqa: BLE001 - timm asserts on bad arguments (global_pool="zz"): still one line
            if model_kwargs:
                raise UsageError(f"cannot create {timm_name} with {model_kwargs}: {one_line(exc)}") from None
            raise TomebenchError(f"cannot create {timm_name}: {one_line(exc)}") from None
        model.eval()
        cfg = resolve_data_config({}, model=model)
        tag = model.pretrained_cfg.get("tag") if hasattr(model, "pretrained_cfg") else None
        architecture = timm_name.split(".", 1)[0]
        # Local weights are not the hub's tag: name the architecture alone rather than claim the published weights.
        full_name = f"{architecture}.{tag}" if tag and pretrained and checkpoint is None else architecture
        return LoadedModel(name=full_name, model=model, data_config=cfg, pretrained=pretrained)

    def describe(self, name: str, from_checkpoint: bool) -> tuple[str, int]:
        timm_name = resolve_name(name)
        from timm.models import get_pretrained_cfg

        architecture, _, tag = timm_name.partition(".")
        cfg = get_pretrained_cfg(timm_name) or get_pretrained_cfg(architecture)
        size = int(cfg.input_size[-1]) if cfg else 224
        return (architecture if from_checkpoint or not tag else timm_name), size

    def hub_id(self, name: str) -> str | None:
        _timm()
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(resolve_name(name))
        return getattr(cfg, "hf_hub_id", None) if cfg is not None else None

    def catalog(self) -> list[tuple[str, str, str]]:
        return [(alias, timm_name, what) for alias, (timm_name, what) in ALIASES.items()]

    def display_name(self, name: str) -> str:
        return resolve_name(name)


def _check_head(timm, timm_name: str, kwargs: dict, published: bool) -> None:
    """num_classes must be a whole number >= 0; with the published weights it must be their head's, since timm
    silently replaces a head of another size with an untrained one (a top-1 of chance, with no word)."""
    if "num_classes" not in kwargs:
        return
    asked = kwargs["num_classes"]
    if not isinstance(asked, int) or isinstance(asked, bool) or asked < 0:
        raise UsageError(f"--model-arg num_classes={asked!r}: the class count is a whole number >= 0")
    if published:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(timm_name)
        have = getattr(cfg, "num_classes", None)
        if have and asked != have:
            raise UsageError(
                f"the published weights of {timm_name} have a {have}-class head; num_classes={asked} would "
                "replace it with an untrained one: drop --model-arg num_classes, give a --checkpoint with "
                f"a {asked}-class head, or use --no-pretrained"
            )


def _load_error(timm_name: str, checkpoint: Path | None, exc: Exception) -> TomebenchError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if checkpoint is not None and _other_architecture(str(exc)):
        return UsageError(
            f"the checkpoint {checkpoint} is not a {timm_name}: {_other_architecture(str(exc))}; give "
            "--model the architecture it was saved from"
        )
    classes = _class_count_mismatch(str(exc))
    if classes is not None:
        return UsageError(
            f"the weights have a {classes}-class head but {timm_name} was built with another class "
            f"count: pass --model-arg num_classes={classes}"
        )
    if checkpoint is not None:
        return TomebenchError(f"cannot load checkpoint {checkpoint} into {timm_name}: {detail}")
    if is_offline(exc):
        return unreachable(f"pretrained weights for {timm_name}")
    return TomebenchError(f"cannot create {timm_name}: {detail}")


def _other_architecture(text: str) -> str | None:
    """What shows a checkpoint of another architecture (not just another head): tensors other than the
    classifier's with other shapes, or keys missing or unexpected."""
    shapes = re.findall(r"size mismatch for ([\w.]+)", text)
    body = [name for name in shapes if not re.match(r"(head|fc|classifier)\w*\.", name)]
    if body:
        return f"{len(body)} tensor(s) have other shapes (first: {body[0]})"
    if "Missing key(s)" in text or "Unexpected key(s)" in text:
        return "its tensors have other names"
    return None


def _class_count_mismatch(text: str) -> int | None:
    """The class count of the weights when loading failed on the classifier's shape, else None.

    torch says "size mismatch for head.weight: copying a param with shape torch.Size([10, 64]) from checkpoint,
    the shape in current model is torch.Size([1000, 64])"; the first dimension of the checkpoint's is the count.
    """
    found = re.search(
        r"size mismatch for (?:head|fc|classifier)\w*\.(?:weight|bias): copying a param with shape "
        r"torch\.Size\(\[(\d+)",
        text,
    )
    return int(found.group(1)) if found else None


TIMM = FAMILIES.register("timm", description="timm VisionTransformer")(TimmFamily())
