"""Hugging Face transformers' ViT and DeiT image classifiers: the surgery, for the transformers >= 5 layout.

`ViTLayer` / `DeiTLayer` are pre-norm (layernorm_before, attention with q/k/v/o projections, dropout,
layernorm_after, MLP, dropout); prefix tokens are cls (ViT), cls + distillation
(DeiT); the heads read token 0 (and token 1 for the distilled DeiT, averaged). transformers is imported only when
a model is loaded or its output built, so tomebench works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tomebench.adapters.base import ADAPTERS, Adapter, PatchedForward
from tomebench.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

CLASSES = ("ViTForImageClassification", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")
TEACHER = "DeiTForImageClassificationWithTeacher"


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

    def forward(
        self,
        pixel_values: Tensor | None = None,
        labels: Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ):
        if attention_mask is not None or kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
            raise NotImplementedError(
                "token reduction changes the sequence: no attention masks, attentions or hidden states"
            )
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
    def handles(self, cls: type) -> bool:
        return _family_class(cls) is not None

    def check(self, model: nn.Module) -> None:
        for i, block in enumerate(self.blocks(model)):
            attn = getattr(block, "attention", None)
            if not all(hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
                raise UsageError(
                    f"block {i} of {type(model).__name__} has no q/k/v/o projections: tomebench needs "
                    "the transformers >= 5 ViT layout"
                )

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

    def queries_keys(self, attn: nn.Module, h: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = h.shape
        q, k = (proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj))
        return q, k

    def values(self, attn: nn.Module, h: Tensor) -> Tensor:
        b, n, _ = h.shape
        return attn.v_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)  # (B, H, N, D)

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

    def attn_impl(self, model: nn.Module) -> str:
        return "eager" if getattr(model.config, "_attn_implementation", "eager") == "eager" else "fused"


TRANSFORMERS = ADAPTERS.register("transformers", aliases=("hf",), description="transformers ViT/DeiT classifier")(
    TransformersAdapter()
)
