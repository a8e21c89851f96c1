"""What a model family must tell the generic token-reduction loop, and the registry of families.

The loop in `tomebench.patch` runs every block the same way for every family:

    x = embed(images)                                   # (B, N, C), prefix tokens first
    for block in blocks:
        h = attn_input(block, x)                        # the pre-attention norm
        q, k, v = qkv(attention(block), h)              # (B, H, N, D) each, after any q/k norm
        out = SDPA(q, k, v, log(size) bias, scale)      # (B, N, H * D)
        x = attn_residual(block, x, attn_output(attention(block), out, h))
        x = reduce(x)                                   # (B, N - r, C): the reducer, between attention and MLP
        x = mlp_residual(block, x)
    logits = head(final_norm(x), size)

A family is one folder under `tomebench/adapters/` with two halves, registered under one name: its `Adapter`
(surgery: where q/k/v, the norms, LayerScale and the head are), which `tomebench.patch` looks up by the model's
class, and its `Family` (names and loading: weights, data config, transform), which `tomebench.models` looks up
by the name's prefix. Both import this module and their own library only, never `tomebench.patch`: the patched
forward reaches the loop through `PatchedForward`'s hooks, which `patch` fills in.

Adapter modules import their library inside the methods that need it (loading, checking), never at import time,
so listing the families (`tomebench models`, `--help`) imports neither torch nor any model library.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomebench.errors import TomebenchError, UsageError
from tomebench.registry import Registry

if TYPE_CHECKING:  # importing this module must stay cheap: `tomebench models` lists the families without torch
    from torch import Tensor, nn


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with what measuring it needs.

    name: what rows call it (timm's `architecture.tag`, `tv:vit_b_16.IMAGENET1K_V1`, `hf:google/vit-...`).
    data_config: timm-style keys; `input_size` (3, H, W), `mean` and `std` (0..1 scale) are always there.
    transform: PIL image -> uint8 (3, H, W) (array or tensor), the family's own resize and crop without
        normalisation (normalising happens on the device); None means timm's eval transform from data_config.
    """

    name: str
    model: nn.Module
    data_config: dict
    pretrained: bool
    transform: Callable | None = None
    versions: tuple[tuple[str, str], ...] = ()  # (library, version) of the family's own library, for the rows

    @property
    def img_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    @property
    def param_count(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6

    @property
    def num_classes(self) -> int:
        """Classes the head predicts; 0 for a model without a classifier."""
        return adapter_for(self.model).num_classes(self.model)


class Adapter:
    """The surgery half of one model family. Methods take the model, one of its blocks, or a block's attention
    module."""

    # --- which models ---------------------------------------------------------------------------------------
    def handles(self, cls: type) -> bool:
        """Whether models of this class belong to the family (checked on the class, so pickling can ask too)."""
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Raise UsageError when a model of the family has a structure the loop cannot run."""

    def forward_mixin(self, model_class: type) -> type:
        """The class whose methods (`forward`, ...) are put in front of the model's class by `patch`: a subclass
        of `PatchedForward` calling its hooks, with the signature and return type of the original forward."""
        raise NotImplementedError

    # --- structure ------------------------------------------------------------------------------------------
    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        raise NotImplementedError

    def num_prefix_tokens(self, model: nn.Module) -> int:
        """Tokens in front of the patches (cls, distillation, registers)."""
        raise NotImplementedError

    def has_cls(self, model: nn.Module) -> bool:
        """Whether the first token is a cls token (attn-prune's default score needs one)."""
        return True

    def grid_size(self, model: nn.Module) -> tuple[int, int]:
        """Patch grid (gh, gw) at the model's configured image size."""
        raise NotImplementedError

    def num_classes(self, model: nn.Module) -> int:
        raise NotImplementedError

    def default_prop_attn(self, model: nn.Module) -> bool:
        """Proportional attention helps supervised models; the paper turns it off for off-the-shelf MAE models."""
        return True

    def logits(self, output: Any) -> Tensor:
        """The logits (B, classes) in what the family's forward returned (patched, unpatched or compiled)."""
        return output

    # --- forward pieces -------------------------------------------------------------------------------------
    def embed(self, model: nn.Module, images: Tensor, **kwargs: Any) -> Tensor:
        """Images (B, 3, H, W) -> tokens entering the first block (B, N, C), prefix tokens first."""
        raise NotImplementedError

    def attention(self, block: nn.Module) -> nn.Module:
        raise NotImplementedError

    def attn_input(self, block: nn.Module, x: Tensor) -> Tensor:
        """The normed tokens (B, N, C) the block's attention reads."""
        raise NotImplementedError

    def qkv(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normed tokens (B, N, C) -> q, k, v, each (B, H, N, D), after any q/k norm."""
        raise NotImplementedError

    def queries_keys(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
        """Normed tokens (B, N, C) -> q, k (B, H, N, D) alone, after any q/k norm, for a block whose values come from
        other tokens (a reducer fuses them before attention). Families with a packed projection compute q, k only."""
        q, k, _ = self.qkv(attn, h)
        return q, k

    def values(self, attn: nn.Module, h: Tensor) -> Tensor:
        """Normed tokens (B, N, C) -> v (B, H, N, D) alone, for a block whose attention matrix was computed on other
        tokens (a reducer fused them before attention). Families with a packed projection compute v only."""
        return self.qkv(attn, h)[2]

    def attn_scale(self, attn: nn.Module) -> float:
        raise NotImplementedError

    def attn_dropout(self, attn: nn.Module) -> float:
        """Dropout on the attention weights (0 in eval mode)."""
        return 0.0

    def attn_output(self, attn: nn.Module, out: Tensor, h: Tensor) -> Tensor:
        """Attention values (B, N, H * D) -> the attention branch's output (B, N, C); h is the attention's input
        (some families gate the output with it)."""
        raise NotImplementedError

    def attn_residual(self, block: nn.Module, x: Tensor, out: Tensor) -> Tensor:
        """x + the attention branch (with LayerScale, dropout, drop-path as the family does). (B, N, C)."""
        raise NotImplementedError

    def mlp_residual(self, block: nn.Module, x: Tensor) -> Tensor:
        """x + the MLP branch (norm, MLP, LayerScale, dropout, drop-path). (B, N, C) -> (B, N, C)."""
        raise NotImplementedError

    def final_norm(self, model: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def head(self, model: nn.Module, x: Tensor, size: Tensor | None) -> Tensor:
        """Final tokens (B, N', C) and their sizes (B, N', 1) or None -> logits (B, classes). Pooling over tokens
        must weigh each token by its size, so a merged token counts for every patch it holds."""
        raise NotImplementedError

    def architecture(self, model: nn.Module) -> str:
        """The model's architecture name, where the family has one (reducers with released per-model schedules
        look theirs up by it)."""
        return ""

    def attn_impl(self, model: nn.Module) -> str:
        """How the unpatched model's own forward computes attention: "fused" (an SDPA-style kernel) or "eager"
        (the attention matrix built as a tensor). A patched model always runs SDPA unless its reducer needs the
        full matrix."""
        return "fused"


class Family:
    """How one family names and loads its models (the other half of a family; `Adapter` is its surgery)."""

    prefix: str = ""  # the name prefix that selects this family (`tv`, `hf`); "" for the default family
    summary: str = ""  # one line for `tomebench models`

    def load(self, name: str, pretrained: bool, checkpoint: Path | None, **model_kwargs: Any) -> LoadedModel:
        """The model called `name` (without the family prefix) in eval mode, with its data config and transform.
        Unknown names raise UsageError; weights that cannot be had raise TomebenchError (both one line)."""
        raise NotImplementedError

    def describe(self, name: str, from_checkpoint: bool) -> tuple[str, int]:
        """(the row's model name, the input size) for `name`, without building or downloading anything."""
        raise NotImplementedError

    def hub_id(self, name: str) -> str | None:
        """The Hugging Face hub repository pretrained weights of `name` come from, if any: `models` probes the hub
        before a download that would otherwise retry for half a minute."""
        return None

    def catalog(self) -> list[tuple[str, str, str]]:
        """(name to type, what it resolves to, what it is) rows for `tomebench models`."""
        return []

    def display_name(self, name: str) -> str:
        """`name` as messages show it (with the family prefix, aliases resolved)."""
        return f"{self.prefix}:{name}" if self.prefix else name


class PatchedForward:
    """Base of every family's forward mixin. `patch` supplies the hooks; the mixin only adapts signatures."""

    def _tome_tokens(self, images: Tensor, **embed_kwargs: Any) -> tuple[Tensor, Any]:
        """Images (B, 3, H, W) -> final normed tokens (B, N', C) and the TokenState (sizes, sources)."""
        raise NotImplementedError

    def _tome_logits(self, images: Tensor, **embed_kwargs: Any) -> Tensor:
        """Images (B, 3, H, W) -> logits (B, classes) of the reducing forward."""
        raise NotImplementedError


def weighted_mean(x: Tensor, size: Tensor) -> Tensor:
    """Size-weighted average over tokens: x (B, N, C), size (B, N, 1) -> (B, C). Equals a plain mean over the
    patches the tokens stand for."""
    return (x * size).sum(dim=1) / size.sum(dim=1)


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors file or a torch pickle (.pth/.pt/.bin, tensors only); a checkpoint that
    wraps its weights under "model" or "state_dict" is unwrapped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def loaded_class(module: str, name: str) -> type | None:
    """The class `module.name` if its module is already imported, else None. A model of that class cannot exist
    before its module is imported, so `handles` can ask without importing (or installing) the library."""
    return getattr(sys.modules.get(module), name, None)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set: Hugging Face hub downloads fail at once, only cached files are used."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_offline(exc: BaseException) -> bool:
    """Whether a loading error means the weights' server could not be reached."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    hub_errors = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "HfHubHTTPError", "URLError"}
    return bool(names & hub_errors) or "internet" in str(exc).lower() or "offline" in str(exc).lower()


def unreachable(
    what: str, why: str | None = None, hint: str = "put them in the Hugging Face hub cache"
) -> TomebenchError:
    """The one message for weights (or a config) that cannot be had offline: what is missing, why, what to do."""
    if why is None:
        why = (
            "HF_HUB_OFFLINE is set and they are not in the hub cache"
            if hub_offline()
            else "no network? set HF_HUB_OFFLINE=1 to fail at once instead of retrying"
        )
    return TomebenchError(
        f"{what} are not reachable ({why}): pass --checkpoint PATH, {hint}, or use "
        "--no-pretrained for a throughput-only run"
    )


ADAPTERS: Registry[Adapter] = Registry("model family")
FAMILIES: Registry[Family] = Registry("model family")


def adapter_for(model_or_class: nn.Module | type) -> Adapter:
    """The family of a model (or model class); a UsageError naming the supported families otherwise."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    for entry in ADAPTERS:
        if entry.obj.handles(cls):
            return entry.obj
    families = "; ".join(entry.description for entry in ADAPTERS)
    raise UsageError(f"{cls.__name__} is not a model tomebench can patch (supported: {families})")
