"""The one place that turns a model name (any family) into a model and its data config.

`NAME` is a timm name or alias (the default family), `tv:NAME` a torchvision ViT, `hf:NAME` a transformers ViT or
DeiT; the prefix picks the family's adapter, which loads the model with its weights and its own preprocessing.
Weights come from each library's hub loading, or from a local file with `checkpoint`. Naming a model imports
nothing heavy: the adapter imports its library when it loads.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from tomebench.adapters import FAMILIES, Family, LoadedModel
from tomebench.adapters.base import hub_offline, unreachable
from tomebench.errors import UsageError

__all__ = ["LoadedModel", "create", "describe", "family"]

DEFAULT_FAMILY = "timm"  # a name without a prefix


def family(name: str) -> tuple[Family, str]:
    """(the family, the name without its prefix). No prefix: timm. `tv:` and `hf:` are aliases of the
    torchvision and transformers families; an unknown prefix is a UsageError."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return FAMILIES.get(DEFAULT_FAMILY), name
    if prefix in FAMILIES:
        return FAMILIES.get(prefix), rest
    prefixes = ", ".join(f"{entry.obj.prefix}:" for entry in FAMILIES if entry.obj.prefix)
    raise UsageError(f"unknown model family {prefix!r} in {name!r}; use a timm name or one of {prefixes}")


def create(name: str, pretrained: bool = True, checkpoint: Path | None = None, **model_kwargs) -> LoadedModel:
    """Build the model in eval mode. checkpoint: a local weights file to load instead of the hub; model_kwargs go
    to the family's constructor (timm.create_model, the torchvision builder, the transformers config)."""
    loader, rest = family(name)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint file not found: {checkpoint}")
    elif pretrained:
        _fail_fast_offline(name)
    loaded = loader.load(rest, pretrained, checkpoint, **model_kwargs)
    if checkpoint is not None or pretrained:
        _refuse_nonfinite(loaded, checkpoint)
    return loaded


def _refuse_nonfinite(loaded: LoadedModel, checkpoint: Path | None) -> None:
    """Weights with NaN or inf (a broken checkpoint, an overflowed fp16 save) would be measured as a model of
    chance accuracy without a word: refuse them, naming the first tensor."""
    import torch

    bad = [
        name
        for name, tensor in loaded.model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        where = f"the checkpoint {checkpoint}" if checkpoint is not None else f"the weights of {loaded.name}"
        raise UsageError(
            f"{where} hold NaN or inf values in {len(bad)} tensor(s) (first: {bad[0]}): not weights to measure"
        )


def describe(name: str, from_checkpoint: bool = False) -> tuple[str, int]:
    """(the `model` a run of `name` writes in its rows, the input size), without building anything."""
    loader, rest = family(name)
    return loader.describe(rest, from_checkpoint)


# The weight files timm and transformers ask the hub for; any one in the cache means no download is needed.
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 3.0  # a reachable hub answers a TCP connect in well under a second


def _fail_fast_offline(name: str) -> None:
    """Raise at once when pretrained weights would have to come from a hub this machine cannot reach.

    Unasked, huggingface_hub retries each file for about half a minute with back-off before giving up. With
    HF_HUB_OFFLINE set it fails at once by itself; otherwise, when the weights are not cached, one short
    connection attempt to the hub tells (behind a proxy, to the proxy: the hub itself is not reachable directly).
    Models whose weights come from elsewhere (torchvision's download server, a local folder) are not probed.
    """
    if hub_offline():
        return
    loader, rest = family(name)
    hub_id = loader.hub_id(rest)
    if not hub_id:
        return
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    if any(isinstance(try_to_load_from_cache(repo, file, revision=revision or None), str) for file in HUB_FILES):
        return
    proxy = next((os.environ[v] for v in PROXY_VARIABLES if os.environ.get(v)), None)
    if proxy:
        # Behind a proxy the hub itself cannot be probed, but the proxy can: a proxy that answers no connection
        # would otherwise cost a minute of retries printed line by line.
        _probe(urlparse(proxy if "//" in proxy else f"http://{proxy}"), 8080, f"the proxy {proxy}", loader, rest)
        return
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    _probe(endpoint, 443 if endpoint.scheme == "https" else 80, endpoint.hostname, loader, rest)


def _probe(address, default_port: int, what: str, loader: Family, rest: str) -> None:
    """One short connection attempt to `address`; a one-line error when it answers none."""
    try:
        socket.create_connection((address.hostname, address.port or default_port), timeout=PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise unreachable(
            f"pretrained weights for {loader.display_name(rest)}",
            f"not in the hub cache, and {what} answers no connection: {getattr(exc, 'strerror', None) or exc}",
            "set HF_HUB_OFFLINE=1 to use only cached weights",
        ) from None
