"""Model families other than timm: torchvision and transformers ViTs run the same loop with the same merges.

Everything is built from configs with random init (no download). The strongest check copies the weights of a tiny
timm ViT into a torchvision and a transformers ViT of the same shape (the mappings below), so ToMe must pick the
same tokens in every block for the logits to agree."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer as TvViT

import tomebench
from tests.reducers.layers import expected_final, runnable_options
from tomebench.errors import UsageError
from tomebench.patch import (
    forward_with_state,
    layout,
    num_prefix_tokens,
    patch,
    token_counts,
    unpatch,
)
from tomebench.reducers import REDUCERS

transformers = pytest.importorskip("transformers")

# One shape for all families: 32 px, 4 px patches -> 64 patches + cls, depth 3, width 48, 4 heads.
IMG, PATCH, DEPTH, WIDTH, HEADS, MLP, CLASSES = 32, 4, 3, 48, 4, 96, 10


FULL_R = 64 // DEPTH  # (tokens - prefix) // depth


def timm_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=IMG,
        patch_size=PATCH,
        embed_dim=WIDTH,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=MLP / WIDTH,
        num_classes=CLASSES,
        qkv_bias=True,
    )
    with torch.no_grad():  # timm zero-inits some biases and the cls token; random values make the test stricter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def tv_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(1)
    args = dict(
        image_size=IMG,
        patch_size=PATCH,
        num_layers=DEPTH,
        num_heads=HEADS,
        hidden_dim=WIDTH,
        mlp_dim=MLP,
        num_classes=CLASSES,
    )
    return TvViT(**{**args, **kwargs}).eval()


def hf_config(**kwargs):
    args = dict(
        image_size=IMG,
        patch_size=PATCH,
        num_hidden_layers=DEPTH,
        hidden_size=WIDTH,
        num_attention_heads=HEADS,
        intermediate_size=MLP,
        num_labels=CLASSES,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    return {**args, **kwargs}


def hf_vit() -> torch.nn.Module:
    torch.manual_seed(2)
    return transformers.ViTForImageClassification(transformers.ViTConfig(**hf_config())).eval()


def hf_deit_teacher() -> torch.nn.Module:
    torch.manual_seed(3)
    config = transformers.DeiTConfig(**hf_config())
    model = transformers.DeiTForImageClassificationWithTeacher(config).eval()
    with torch.no_grad():  # DeiT zero-inits its cls, distillation and position embeddings
        for emb in (
            model.deit.embeddings.cls_token,
            model.deit.embeddings.distillation_token,
            model.deit.embeddings.position_embeddings,
        ):
            emb.normal_(std=0.5)
    return model


def timm_to_tv(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """timm ViT -> torchvision ViT: the packed qkv is torchvision's in_proj; MLP fc1/fc2 are mlp.0 / mlp.3."""
    s = src.state_dict()
    out = {
        "class_token": s["cls_token"],
        "conv_proj.weight": s["patch_embed.proj.weight"],
        "conv_proj.bias": s["patch_embed.proj.bias"],
        "encoder.pos_embedding": s["pos_embed"],
        "encoder.ln.weight": s["norm.weight"],
        "encoder.ln.bias": s["norm.bias"],
        "heads.head.weight": s["head.weight"],
        "heads.head.bias": s["head.bias"],
    }
    for i in range(DEPTH):
        t, v = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        for a, b in [
            ("norm1", "ln_1"),
            ("norm2", "ln_2"),
            ("attn.proj", "self_attention.out_proj"),
            ("mlp.fc1", "mlp.0"),
            ("mlp.fc2", "mlp.3"),
        ]:
            for p in ("weight", "bias"):
                out[f"{v}{b}.{p}"] = s[f"{t}{a}.{p}"]
        out[f"{v}self_attention.in_proj_weight"] = s[f"{t}attn.qkv.weight"]
        out[f"{v}self_attention.in_proj_bias"] = s[f"{t}attn.qkv.bias"]
    dst.load_state_dict(out)


def timm_to_hf(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """timm ViT -> transformers ViT: the packed qkv splits into q_proj, k_proj, v_proj (rows in that order)."""
    s = src.state_dict()
    out = {
        "vit.embeddings.cls_token": s["cls_token"],
        "vit.embeddings.position_embeddings": s["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": s["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": s["patch_embed.proj.bias"],
        "vit.layernorm.weight": s["norm.weight"],
        "vit.layernorm.bias": s["norm.bias"],
        "classifier.weight": s["head.weight"],
        "classifier.bias": s["head.bias"],
    }
    for i in range(DEPTH):
        t, h = f"blocks.{i}.", f"vit.layers.{i}."
        for a, b in [
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
            ("attn.proj", "attention.o_proj"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ]:
            for p in ("weight", "bias"):
                out[f"{h}{b}.{p}"] = s[f"{t}{a}.{p}"]
        for p in ("weight", "bias"):
            q, k, v = s[f"{t}attn.qkv.{p}"].chunk(3, dim=0)
            out.update({f"{h}attention.q_proj.{p}": q, f"{h}attention.k_proj.{p}": k, f"{h}attention.v_proj.{p}": v})
    dst.load_state_dict(out)


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def images(n: int = 3, size: int = IMG) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


MODELS = {
    "tv-tiny": tv_vit,
    "hf-vit": hf_vit,
    "hf-deit-teacher": hf_deit_teacher,
}


@pytest.mark.parametrize("name", MODELS)
@torch.inference_mode()
def test_r0_patched_equals_unpatched(name):
    model = MODELS[name]()
    x = images()
    before = logits_of(model, x)
    patch(model, r=0)
    assert (logits_of(model, x) - before).abs().max() <= 1e-5
    unpatch(model)
    assert type(model) is type(MODELS[name]())


@torch.inference_mode()
def test_r0_torchvision_vit_b_16_random_init():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = model(x)
    patch(model, r=0)
    assert (model(x) - before).abs().max() <= 1e-5
    patch(model, r=16)
    assert token_counts(model)[1][-1] == 11  # as timm's ViT-B/16 (the last blocks are clamped)
    assert model(x).shape == (1, 1000)


def parity_r_values() -> list[int]:
    return [0, 2, 4, FULL_R]


@pytest.mark.parametrize("family", ["tv", "hf"])
@pytest.mark.parametrize("r", parity_r_values())
@torch.inference_mode()
def test_same_weights_same_merges_as_timm(family, r):
    """A timm ViT's weights in a torchvision / transformers ViT: identical logits and sizes at every r."""
    source = timm_vit()
    target = tv_vit() if family == "tv" else hf_vit()
    (timm_to_tv if family == "tv" else timm_to_hf)(source, target)
    x = images(4)
    patch(source, r=r)
    patch(target, r=r)
    expected, state_a = forward_with_state(source, x)
    got, state_b = forward_with_state(target, x)
    assert (got - expected).abs().max() <= 1e-4
    assert (logits_of(target, x) - expected).abs().max() <= 1e-4  # the family's own forward, patched
    if r:
        torch.testing.assert_close(state_b.size, state_a.size)
    assert token_counts(target) == token_counts(source)


@pytest.mark.parametrize("name", MODELS)
@torch.inference_mode()
def test_unpatch_restores_exactly(name):
    model = MODELS[name]()
    original_class, attrs = type(model), set(vars(model))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    before = logits_of(model, x)
    patch(model, r=4)
    patch(model, r=2, schedule="decreasing")
    unpatch(model)
    assert type(model) is original_class and set(vars(model)) == attrs
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits_of(model, x), before)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("reducer", REDUCERS.names())
@torch.inference_mode()
def test_every_reducer_on_every_family(name, reducer):
    model = MODELS[name]()
    prefix = num_prefix_tokens(model)
    options = runnable_options(reducer, model, 4)
    patch(model, reducer=reducer, r=4, trace_source=True, **options)
    logits, state = forward_with_state(model, images(2))
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    expected = expected_final(reducer, model, 4, options)
    spec = REDUCERS.get(reducer)
    if spec.budget is None:  # 4 in every block the reducer acts in (MCTF's authors skip the first)
        assert expected == 65 + prefix - 1 - (
            0 if reducer == "none" else sum(spec.only_active((4,) * DEPTH, {}, layout(model)))
        )
    assert state.source.shape[1] == expected
    assert torch.equal(state.source[:, :prefix, :prefix], torch.eye(prefix).expand(2, -1, -1))  # prefix in front


@torch.inference_mode()
def test_distilled_deit_keeps_both_prefix_tokens_and_its_output_class():
    model = hf_deit_teacher()
    assert num_prefix_tokens(model) == 2
    x = images()
    before = model(x)
    patch(model, r=FULL_R)
    after = model(x)
    assert type(after) is type(before)
    torch.testing.assert_close(after.logits, (after.cls_logits + after.distillation_logits) / 2)
    assert not model(x, return_dict=False)[0].isnan().any()


@pytest.mark.parametrize("name", MODELS)
@torch.inference_mode()
def test_patched_models_pickle(name):
    model = patch(MODELS[name](), r=2)
    x = images()
    expected = logits_of(model, x)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert torch.equal(logits_of(clone, x), expected)
        assert unpatch(clone) is clone and not hasattr(clone, "_tome")


def test_other_models_are_refused_in_one_line():
    with pytest.raises(UsageError, match="not a model tomebench can patch") as excinfo:
        patch(torchvision.models.resnet18(weights=None))
    assert "\n" not in str(excinfo.value)
    with pytest.raises(UsageError, match="not a model tomebench can patch"):
        patch(
            transformers.BertModel(
                transformers.BertConfig(
                    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
                )
            )
        )


def test_public_api_takes_every_family():
    for build in MODELS.values():
        model = tomebench.patch(build(), r=1)
        assert tomebench.forward_with_state(model, images(1))[0].shape == (1, CLASSES)
