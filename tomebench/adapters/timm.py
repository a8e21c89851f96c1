"""timm's VisionTransformer (ViT, DeiT, DeiT-III, registers, MAP and average-pool heads): names and surgery.

Follows timm >= 1.0 `Block` / `Attention`: LayerScale (ls1/ls2), drop-path, q/k norm, the attention output norm
and gate where present; `num_prefix_tokens` covers cls, distillation and register tokens.
"""

from __future__ import annotations

import difflib
import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench import demo
from tomebench.adapters.base import (
    ADAPTERS,
    Adapter,
    LoadedModel,
    PatchedForward,
    hub_offline,
    is_offline,
    loaded_class,
    weighted_mean,
)
from tomebench.errors import TomebenchError, UsageError, one_line

if TYPE_CHECKING:
    from torch import Tensor, nn

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
    architecture = name.split(".", 1)[0]
    if timm.is_model(architecture):
        return name
    choices = list(ALIASES) + timm.list_models()
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `tomebench models` lists the aliases"
    raise UsageError(f"unknown model {name!r}{hint}")


class _TimmForward(PatchedForward):
    """timm's forward and forward_features, reducing tokens; masks cannot follow a shrinking sequence."""

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        return self._tome_tokens(x)[0]

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        _refuse_masks(attn_mask, is_causal)
        return self._tome_logits(x)


def _refuse_masks(attn_mask: Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise NotImplementedError("token reduction changes the sequence, so attention masks cannot be applied")


class TimmAdapter(Adapter):
    summary = "timm VisionTransformer: any timm ViT/DeiT name, with or without a pretrained tag, or an alias"

    def handles(self, cls: type) -> bool:
        base = loaded_class("timm.models.vision_transformer", "VisionTransformer")
        return base is not None and issubclass(cls, base)

    def check(self, model: nn.Module) -> None:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        for i, block in enumerate(model.blocks):
            if not isinstance(block, Block) or not isinstance(block.attn, Attention):
                raise UsageError(
                    f"block {i} is a {type(block).__name__} with {type(getattr(block, 'attn', None)).__name__}; "
                    "tomebench supports timm's standard pre-norm Block with Attention."
                )

    def forward_mixin(self, model_class: type) -> type:
        return _TimmForward

    def blocks(self, model: nn.Module) -> nn.Module:
        return model.blocks

    def num_prefix_tokens(self, model: nn.Module) -> int:
        return int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))

    def has_cls(self, model: nn.Module) -> bool:
        return getattr(model, "cls_token", None) is not None  # timm puts it first among the prefix tokens

    def grid_size(self, model: nn.Module) -> tuple[int, int]:
        return tuple(model.patch_embed.grid_size)

    def num_classes(self, model: nn.Module) -> int:
        return int(getattr(model, "num_classes", 0) or 0)

    def default_prop_attn(self, model: nn.Module) -> bool:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        names = f"{cfg.get('architecture', '')}.{cfg.get('tag', '')}".lower()
        return "mae" not in names

    def embed(self, model: nn.Module, images: Tensor, **kwargs: Any) -> Tensor:
        x = model.patch_embed(images)
        x = model._pos_embed(x)  # (B, N, C), prefix tokens first
        x = model.patch_drop(x)
        return model.norm_pre(x)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attn

    def attn_input(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.norm1(x)

    def qkv(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = h.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv.unbind(0)
        return attn.q_norm(q), attn.k_norm(k), v

    def attn_scale(self, attn: nn.Module) -> float:
        return getattr(attn, "scale", attn.head_dim**-0.5)

    def attn_dropout(self, attn: nn.Module) -> float:
        return attn.attn_drop.p if attn.training else 0.0

    def attn_output(self, attn: nn.Module, out: Tensor, h: Tensor) -> Tensor:
        norm = getattr(attn, "norm", None)  # timm's optional attention-output norm (scale_norm); Identity when off
        if norm is not None:
            out = norm(out)
        gate = getattr(attn, "gate", None)
        if gate is not None:
            out = out * gate(h).sigmoid()
        return attn.proj_drop(attn.proj(out))

    def attn_residual(self, block: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        return x + block.drop_path1(block.ls1(out))

    def mlp_residual(self, block: nn.Module, x: Tensor) -> Tensor:
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def final_norm(self, model: nn.Module, x: Tensor) -> Tensor:
        return model.norm(x)

    def head(self, model: nn.Module, x: Tensor, size: Tensor | None) -> Tensor:
        """Average pooling weighs tokens by size; token and MAP (attention-pool) heads run timm's own head."""
        pooling = getattr(model, "global_pool", "token")
        if size is None or getattr(model, "attn_pool", None) is not None or pooling not in ("avg", "avgmax"):
            return model.forward_head(x)
        if not getattr(model, "pool_include_prefix", False):
            p = self.num_prefix_tokens(model)
            x, size = x[:, p:], size[:, p:]
        pooled = weighted_mean(x, size)  # (B, C)
        if pooling == "avgmax":
            pooled = 0.5 * (x.amax(dim=1) + pooled)
        return model.head(model.head_drop(model.fc_norm(pooled)))

    def load(self, name: str, pretrained: bool, checkpoint: Path | None, **model_kwargs: Any) -> LoadedModel:
        """model_kwargs go to timm.create_model (for example global_pool="avg" for MAE fine-tuned checkpoints);
        a checkpoint goes through timm's own loader, so the model's checkpoint filter applies."""
        timm_name = resolve_name(name)
        timm = _timm()
        from timm.data import resolve_data_config

        kwargs: dict = dict(model_kwargs)
        if checkpoint is not None:
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


def _load_error(timm_name: str, checkpoint: Path | None, exc: Exception) -> TomebenchError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    classes = _class_count_mismatch(str(exc))
    if classes is not None:
        return UsageError(f"the weights have a {classes}-class head but {timm_name} was built with another class "
                          f"count: pass --model-arg num_classes={classes}")
    if checkpoint is not None:
        return TomebenchError(f"cannot load checkpoint {checkpoint} into {timm_name}: {detail}")
    if is_offline(exc):
        offline = "HF_HUB_OFFLINE is set and they are not in the hub cache" if hub_offline() else (
            "no network? set HF_HUB_OFFLINE=1 to fail at once instead of retrying")
        return TomebenchError(
            f"pretrained weights for {timm_name} are not reachable ({offline}): pass --checkpoint PATH, "
            "put them in the Hugging Face hub cache, or use --no-pretrained for a throughput-only run"
        )
    return TomebenchError(f"cannot create {timm_name}: {detail}")


def _class_count_mismatch(text: str) -> int | None:
    """The class count of the weights when loading failed on the classifier's shape, else None.

    torch says "size mismatch for head.weight: copying a param with shape torch.Size([10, 64]) from checkpoint,
    the shape in current model is torch.Size([1000, 64])"; the first dimension of the checkpoint's is the count.
    """
    found = re.search(r"size mismatch for (?:head|fc|classifier)\w*\.(?:weight|bias): copying a param with shape "
                      r"torch\.Size\(\[(\d+)", text)
    return int(found.group(1)) if found else None


TIMM = ADAPTERS.register("timm", description="timm VisionTransformer")(TimmAdapter())
