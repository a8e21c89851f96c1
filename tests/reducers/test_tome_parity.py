"""End to end on the bundled demo model and the 360 held-out digits: ToMe's accuracy is the authors' (a golden
table), and no registered reducer's accuracy depends on how the images were batched."""

from __future__ import annotations

import pytest
import timm
import torch

from tests.reducers.layers import runnable_options
from tomebench.data import DeviceNormalize, make_loader
from tomebench.engine.images import resolve_images
from tomebench.engine.spec import RunSpec
from tomebench.evaluate import evaluate_in_one_pass
from tomebench.measure.device import autocast_for
from tomebench.patch import patch, unpatch
from tomebench.reducers import REDUCERS

# Correct top-1 out of 360 for tome (default options) at r = 0..8. Produced once with tomebench and checked
# against the authors' released code (facebookresearch/ToMe's timm patch, run beside tomebench on the same
# weights and decoded images): identical predictions on all 360 images at every r. tomebench 0.1, which split
# A/B over the patches only and never restored the token order, gave 358 358 358 359 359 358 356 358 357.
AUTHORS_TOP1_CORRECT = [358, 358, 358, 358, 359, 358, 358, 355, 355]


@pytest.fixture(scope="module")
def demo_images(demo):
    return resolve_images(RunSpec(), demo)


def evaluate(demo, images, prepares, batch_size):
    loader = make_loader(images, demo.data_config, batch_size=batch_size, workers=0, pin_memory=False)
    result = evaluate_in_one_pass(
        demo.model,
        prepares,
        loader,
        DeviceNormalize(demo.data_config, torch.device("cpu")),
        autocast_for(torch.device("cpu"), "fp32"),
    )
    unpatch(demo.model)
    return result.per_config


def test_demo_tome_top1_at_every_r_is_the_authors(demo, demo_images):
    model = demo.model
    accuracy = evaluate(demo, demo_images, [lambda r=r: patch(model, "tome", r) for r in range(9)], batch_size=120)
    assert [acc.correct1 for acc in accuracy] == AUTHORS_TOP1_CORRECT
    assert all(acc.n_images == 360 for acc in accuracy)


def demo_model():
    """The demo's architecture (random weights): what a reducer whose budget is its own knob is fitted to."""
    from tomebench.demo.model import DEMO_VIT_KWARGS

    return timm.models.vision_transformer.VisionTransformer(**DEMO_VIT_KWARGS).eval()


# Every registered reducer with its defaults (one whose budget is its own knob: options removing 6 tokens per block),
# and every option that involves a choice that could depend on the batch.
CONFIGS = [(name, runnable_options(name, demo_model(), 6)) for name in REDUCERS.names()] + [
    ("tome", {"partition": "random"}),
    ("tome", {"partition": "sequential"}),
    ("tome", {"partition": "alternating-patches"}),
    ("tome", {"features": "x", "combine": "keep"}),
    ("prune", {"seed": 3}),
    ("attn-prune", {"score": "mean"}),
]


def test_every_reducer_gives_the_same_accuracy_at_batch_7_and_batch_32(demo, demo_images):
    model = demo.model
    prepares = [lambda name=name, options=options: patch(model, name, 6, **options) for name, options in CONFIGS]
    small, large = evaluate(demo, demo_images, prepares, 7), evaluate(demo, demo_images, prepares, 32)
    for (name, options), a, b in zip(CONFIGS, small, large):
        assert a.error is None and b.error is None, (name, options, a.error, b.error)
        assert (a.correct1, a.correct5) == (b.correct1, b.correct5), (name, options)
