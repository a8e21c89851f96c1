"""The one place that turns a model name into a timm model and its data config.

Short aliases map to the timm names the ToMe paper evaluates; any timm name (with or without a pretrained
tag) works too. Weights come from timm's hub loading, or from a local file with `checkpoint`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import timm
from timm.data import resolve_data_config
from torch import nn

from tomebench.demo import model as demo_model  # registers the demo ViT with timm
from tomebench.errors import TomebenchError, UsageError, one_line

# alias -> (timm name, what it is). The tags are the weights timm publishes for each architecture.
ALIASES: dict[str, tuple[str, str]] = {
    "demo": (demo_model.NAME, "bundled depth-8 ViT trained on scikit-learn's 8x8 digits (runs offline)"),
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


@dataclass(frozen=True)
class LoadedModel:
    """A timm model in eval mode with what measuring it needs. name is timm's `architecture.tag`."""

    name: str
    model: nn.Module
    data_config: dict
    pretrained: bool

    @property
    def img_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    @property
    def param_count(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6


def resolve_name(name: str) -> str:
    """Alias or timm name -> timm name. Unknown names raise a UsageError with close matches."""
    if name in ALIASES:
        return ALIASES[name][0]
    architecture = name.split(".", 1)[0]
    if timm.is_model(architecture):
        return name
    choices = list(ALIASES) + timm.list_models()
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `tomebench models` lists the aliases"
    raise UsageError(f"unknown model {name!r}{hint}")


def create(name: str, pretrained: bool = True, checkpoint: Path | None = None, **model_kwargs) -> LoadedModel:
    """Build the model in eval mode. checkpoint: a local .safetensors/.pth/.npz file to load instead of the hub;
    model_kwargs go to timm.create_model (for example global_pool="avg" for MAE fine-tuned checkpoints)."""
    timm_name = resolve_name(name)
    kwargs: dict = dict(model_kwargs)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint file not found: {checkpoint}")
        # timm's own loader then applies the model's checkpoint filter (pos-embed resizing, key renames).
        kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint), hf_hub_id=None, url=None)
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


def _load_error(timm_name: str, checkpoint: Path | None, exc: Exception) -> TomebenchError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if checkpoint is not None:
        return TomebenchError(f"cannot load checkpoint {checkpoint} into {timm_name}: {detail}")
    if _is_offline(exc):
        return TomebenchError(
            f"pretrained weights for {timm_name} are not reachable (offline?): pass --checkpoint PATH, "
            "put them in the Hugging Face hub cache, or use --no-pretrained for a throughput-only run"
        )
    return TomebenchError(f"cannot create {timm_name}: {detail}")


def _is_offline(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    hub_errors = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "HfHubHTTPError", "URLError"}
    return bool(names & hub_errors) or "internet" in str(exc).lower() or "offline" in str(exc).lower()
