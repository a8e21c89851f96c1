"""The one place that turns a model name into a timm model and its data config.

Short aliases map to the timm names the ToMe paper evaluates; any timm name (with or without a pretrained
tag) works too. Weights come from timm's hub loading, or from a local file with `checkpoint`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from tomebench import demo
from tomebench.errors import TomebenchError, UsageError, one_line

if TYPE_CHECKING:
    from torch import nn

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
    timm = _timm()
    from timm.data import resolve_data_config

    kwargs: dict = dict(model_kwargs)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint file not found: {checkpoint}")
        # timm's own loader then applies the model's checkpoint filter (pos-embed resizing, key renames).
        kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint), hf_hub_id=None, url=None)
        pretrained = True
    elif pretrained:
        _fail_fast_offline(timm_name)
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
    classes = _class_count_mismatch(str(exc))
    if classes is not None:
        return UsageError(f"the weights have a {classes}-class head but {timm_name} was built with another class "
                          f"count: pass --model-arg num_classes={classes}")
    if checkpoint is not None:
        return TomebenchError(f"cannot load checkpoint {checkpoint} into {timm_name}: {detail}")
    if _is_offline(exc):
        offline = "HF_HUB_OFFLINE is set and they are not in the hub cache" if _hub_offline() else (
            "no network? set HF_HUB_OFFLINE=1 to fail at once instead of retrying")
        return TomebenchError(
            f"pretrained weights for {timm_name} are not reachable ({offline}): pass --checkpoint PATH, "
            "put them in the Hugging Face hub cache, or use --no-pretrained for a throughput-only run"
        )
    return TomebenchError(f"cannot create {timm_name}: {detail}")


def _is_offline(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    hub_errors = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "HfHubHTTPError", "URLError"}
    return bool(names & hub_errors) or "internet" in str(exc).lower() or "offline" in str(exc).lower()


# The weight files timm asks the hub for, in its order; any one in the cache means no download is needed.
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 3.0  # a reachable hub answers a TCP connect in well under a second


def _fail_fast_offline(timm_name: str) -> None:
    """Raise at once when pretrained weights would have to come from a hub this machine cannot reach.

    Unasked, huggingface_hub retries each file for about half a minute with back-off before giving up. With
    HF_HUB_OFFLINE set it fails at once by itself; otherwise, when the weights are not cached, one short
    connection attempt to the hub tells (skipped behind a proxy, which a direct probe would wrongly fail).
    """
    if _hub_offline() or any(os.environ.get(name) for name in PROXY_VARIABLES):
        return
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return  # a URL or a local file: not the hub's to probe
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    if any(isinstance(try_to_load_from_cache(repo, name, revision=revision or None), str) for name in HUB_FILES):
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise TomebenchError(
            f"pretrained weights for {timm_name} are not in the hub cache and {endpoint.hostname} is not reachable "
            f"({exc.strerror or exc}): pass --checkpoint PATH, use --no-pretrained for a throughput-only run, or "
            "set HF_HUB_OFFLINE=1 to use only cached weights"
        ) from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _class_count_mismatch(text: str) -> int | None:
    """The class count of the weights when loading failed on the classifier's shape, else None.

    torch says "size mismatch for head.weight: copying a param with shape torch.Size([10, 64]) from checkpoint,
    the shape in current model is torch.Size([1000, 64])"; the first dimension of the checkpoint's is the count.
    """
    found = re.search(r"size mismatch for (?:head|fc|classifier)\w*\.(?:weight|bias): copying a param with shape "
                      r"torch\.Size\(\[(\d+)", text)
    return int(found.group(1)) if found else None
