"""`tomebench visualize`: group maps from source matrices, merge_groups on the real demo model, overlay, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

import tomebench
from tests.helpers import (
    assert_one_line_error,
    invoke,
)
from tomebench import cli
from tomebench.errors import UsageError
from tomebench.patch import is_patched  # `tomebench.patch` is the function; the module is reached this way
from tomebench.studies import visualize as vis

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


DEMO_TOKENS = 65  # 8x8 patches of 4 px on a 32 px digit, plus the class token


DEMO_DEPTH = 8


@pytest.fixture(scope="module")
def pixels(demo, digits) -> np.ndarray:
    return vis.load_image(digits / "0" / "0024.png", demo.data_config)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label arrays group the same elements together (labels themselves may differ)."""
    a, b = a.ravel(), b.ravel()
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


def test_groups_from_source_merged_and_dropped_patches():
    # 1 prefix token + 6 patches on a 2x3 grid. Rows are output tokens, columns input tokens.
    source = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],  # cls holds only itself
            [0, 1, 1, 0, 0, 0, 0],  # token A: patches 0, 1
            [0, 0, 0, 0, 1, 0, 0],  # token B: patch 3
            [0, 0, 0, 1, 0, 0, 1],  # token C: patches 2, 5
        ],  # patch 4 (column 5) is held by nobody: pruned
        dtype=torch.float32,
    )
    ids = vis.groups_from_source(source, 1, (2, 3))
    assert ids.shape == (2, 3) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [[0, 0, 1], [2, -1, 1]])  # numbered by first appearance
    groups = vis.Groups(layer=1, ids=ids, tokens_left=4)
    assert groups.count == 3


def test_groups_from_source_with_two_prefix_tokens_and_identity():
    # Two prefix tokens (cls + distillation) are skipped in both rows and columns; nothing merged: one group each.
    source = torch.eye(2 + 4)
    ids = vis.groups_from_source(source, 2, (2, 2))
    np.testing.assert_array_equal(ids, [[0, 1], [2, 3]])
    # All four patches in one token, plus an empty (fully pruned) row: one group, nothing dropped.
    merged = torch.zeros(3, 6)
    merged[0, 0] = merged[1, 1] = 1
    merged[2, 2:] = 1
    np.testing.assert_array_equal(vis.groups_from_source(merged, 2, (2, 2)), [[0, 0], [0, 0]])


def test_groups_are_numbered_by_first_appearance():
    # Token order differs from patch order (ToMe appends merged dst tokens after the kept src tokens).
    source = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1],  # the first non-prefix token holds the bottom row
            [0, 1, 1, 0, 0],  # the second holds the top row
        ],
        dtype=torch.float32,
    )
    np.testing.assert_array_equal(vis.groups_from_source(source, 1, (2, 2)), [[0, 0], [1, 1]])


def test_load_image_and_to_input_match_timms_eval_transform(demo, digits):
    path = digits / "0" / "0024.png"
    pixels = vis.load_image(path, demo.data_config)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    cfg = demo.data_config
    transform = create_transform(
        **{k: cfg[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")},
        is_training=False,
    )
    with Image.open(path) as img:
        expected = transform(img.convert("RGB"))[None]
    torch.testing.assert_close(vis.to_input(pixels, cfg), expected, atol=1e-5, rtol=0)


def test_tome_groups_cover_every_patch(demo, pixels):
    groups = vis.merge_groups(demo.model, pixels, demo.data_config, "tome", 4, [2, 8])
    assert [g.layer for g in groups] == [2, 8]
    for g in groups:
        assert g.ids.shape == (8, 8)
        assert (g.ids >= 0).all()  # merging drops nothing
        assert g.tokens_left == DEMO_TOKENS - 4 * g.layer
        assert g.count == g.tokens_left - 1  # every non-prefix token holds at least one patch
        assert set(np.unique(g.ids)) == set(range(g.count))
    assert not is_patched(demo.model)
    assert type(demo.model).__name__ == "VisionTransformer"


def test_prune_drops_exactly_r_patches_per_block(demo, pixels):
    groups = vis.merge_groups(demo.model, pixels, demo.data_config, "prune", 4, [2, 8], seed=0)
    for g in groups:
        assert int((g.ids == vis.DROPPED).sum()) == 4 * g.layer
        assert g.tokens_left == DEMO_TOKENS - 4 * g.layer
        assert g.count == g.tokens_left - 1
        kept = g.ids[g.ids != vis.DROPPED]
        assert len(np.unique(kept)) == kept.size  # pruning never puts two patches in one token
    assert not is_patched(demo.model)


def test_kmeans_groups_cover_every_patch(demo, pixels):
    groups = vis.merge_groups(demo.model, pixels, demo.data_config, "kmeans", 4, [2, 8], iters=5)
    for g in groups:
        assert (g.ids >= 0).all()
        assert g.tokens_left == DEMO_TOKENS - 4 * g.layer
        assert 1 <= g.count <= g.tokens_left - 1
    assert groups[1].count < groups[0].count
    assert not is_patched(demo.model)


@pytest.mark.parametrize("layer", [2, 8])
def test_groups_agree_with_the_traced_source(demo, pixels, layer):
    (groups,) = vis.merge_groups(demo.model, pixels, demo.data_config, "tome", 4, [layer])
    x = vis.to_input(pixels, demo.data_config)
    model = tomebench.patch(demo.model, "tome", [4] * layer + [0] * (DEMO_DEPTH - layer), trace_source=True)
    try:
        with torch.inference_mode():
            _, state = tomebench.forward_with_state(model, x)
    finally:
        tomebench.unpatch(model)
    source = state.source[0]  # (N', 65)
    assert source.shape == (DEMO_TOKENS - 4 * layer, DEMO_TOKENS)
    patches = source[1:, 1:]  # non-prefix tokens x input patches
    torch.testing.assert_close(patches.sum(dim=0), torch.ones(64))  # each patch held by exactly one token
    owner = patches.argmax(dim=0).numpy().reshape(8, 8)
    assert same_partition(groups.ids, owner)
    assert groups.count == len(np.unique(owner))


def test_layers_outside_the_model_and_failures_leave_it_unpatched(demo, pixels):
    with pytest.raises(UsageError, match=r"--layers 9 is outside 1\.\.8"):
        vis.merge_groups(demo.model, pixels, demo.data_config, "tome", 4, [2, 9])
    with pytest.raises(UsageError, match="--layers 0"):
        vis.merge_groups(demo.model, pixels, demo.data_config, "tome", 4, [0])
    # An option the reducer does not take is refused by patch (issue 14), before the model is touched.
    with pytest.raises(UsageError, match="reducer kmeans has no option 'bogus'"):
        vis.merge_groups(demo.model, pixels, demo.data_config, "kmeans", 4, [2], bogus=1)
    assert not is_patched(demo.model)


def test_overlay_tints_greys_and_draws_borders():
    pixels = np.zeros((3, 8, 8), dtype=np.uint8)  # black 8 px image -> enlarged 32x to 256 px
    ids = np.array([[0, 0], [1, vis.DROPPED]])
    out = vis.overlay(pixels, ids)
    assert out.shape == (256, 256, 3) and out.dtype == np.float64
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Borders sit on the first pixel after a change of group, in both directions.
    np.testing.assert_array_equal(out[128, 10], [1.0, 1.0, 1.0])  # group 0 above, group 1 below
    np.testing.assert_array_equal(out[200, 128], [1.0, 1.0, 1.0])  # group 1 left, dropped right
    np.testing.assert_array_equal(out[128, 200], [1.0, 1.0, 1.0])  # group 0 above, dropped below
    # Inside a group: no border, a tint that is not grey; inside the dropped patch: grey (black image -> 0.5).
    assert not np.allclose(out[64, 128], 1.0)  # 0 | 0: same group, no border
    g0, g1 = out[60, 60], out[200, 60]
    assert np.ptp(g0) > 0.05 and np.ptp(g1) > 0.05 and not np.allclose(g0, g1)
    np.testing.assert_allclose(out[200, 200], [0.5, 0.5, 0.5])
    assert (out[:128, :128] == g0).all()  # one flat tint, no border inside the top-left group


def test_overlay_alpha_sets_how_much_of_the_image_shows_through():
    pixels = np.full((3, 8, 8), 200, dtype=np.uint8)
    ids = np.array([[0, 1], [2, 3]])
    inside = (40, 40)  # within group 0, away from borders
    image_only, tint_only, default = (vis.overlay(pixels, ids, alpha)[inside] for alpha in (0.0, 1.0, vis.ALPHA))
    np.testing.assert_allclose(image_only, [200 / 255] * 3)
    np.testing.assert_allclose(default, (1 - vis.ALPHA) * image_only + vis.ALPHA * tint_only)
    assert vis.ALPHA < 0.5  # the image, not the colours, dominates (as in the paper's figures)


def test_cli_alpha_default_and_range(digits, tmp_path):
    import inspect

    assert inspect.signature(cli.visualize).parameters["alpha"].default == vis.ALPHA
    out = tmp_path / "a.png"
    result = invoke("visualize", str(digits / "0" / "0024.png"), "--alpha", "1.5", "-o", str(out))
    assert_one_line_error(result, 2, "--alpha must be between 0 and 1")
    assert not out.exists()


def test_overlay_on_a_real_image_is_in_range(demo, pixels):
    (groups,) = vis.merge_groups(demo.model, pixels, demo.data_config, "prune", 4, [8], seed=0)
    out = vis.overlay(pixels, groups.ids)
    assert out.shape == (256, 256, 3)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    dropped = np.repeat(np.repeat(groups.ids == vis.DROPPED, 32, axis=0), 32, axis=1)
    inside = dropped.copy()
    inside[:, 1:] &= dropped[:, :-1]
    inside[1:, :] &= dropped[:-1, :]
    grey = out[inside & ~np.isclose(out, 1.0).all(axis=2)]
    assert len(grey) > 0 and np.allclose(grey[:, 0], grey[:, 1]) and np.allclose(grey[:, 1], grey[:, 2])


def test_cli_draws_two_images_at_two_layers(digits, tmp_path):
    out = tmp_path / "v.png"
    images = [str(digits / "0" / "0024.png"), str(sorted((digits / "3").iterdir())[0])]
    result = invoke("visualize", *images, "--layers", "2,8", "--r", "4", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output.replace("\n", "")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    with Image.open(out) as img:
        assert img.size == (1170, 900)  # 3 columns (input + 2 layers) x 2 rows at 150 dpi
    svg = out.with_suffix(".svg").read_text()
    assert "<svg" in svg
    # matplotlib keeps each title as a comment next to its glyphs: r=4 leaves 65 - 4L tokens, one of them cls.
    for title in ("after block 2: 56 groups", "after block 8: 32 groups", "tomebench_demo_vit.digits · tome r=4"):
        assert svg.count(f"<!-- {title} -->") == (1 if "r=4" in title else 2), title


def test_cli_prune_reducer(digits, tmp_path):
    out = tmp_path / "p.png"
    result = invoke(
        "visualize", str(digits / "0" / "0024.png"), "--reducer", "prune", "--opt", "prune.seed=1", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC and out.with_suffix(".svg").is_file()
    with Image.open(out) as img:
        assert img.size == (780, 480)  # one image, default layers = the last block only


def test_cli_timm_model_on_an_arbitrary_jpeg(tmp_path):
    image = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(image)  # 200 wide, 150 high
    out = tmp_path / "t.png"
    result = invoke(
        "visualize", str(image), "--model", "test_vit", "--no-pretrained", "--layers", "1,6", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    assert out.with_suffix(".svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--layers", "9"], ["--layers 9 is outside 1..8"]),
        (["--reducer", "tomee"], ["unknown reducer 'tomee'", "did you mean tome"]),
        (["--opt", "kmeans.bogus=1", "--reducer", "kmeans"], ["kmeans has no option 'bogus'"]),
    ],
)
def test_cli_bad_options_are_one_line_exit_2(digits, tmp_path, args, fragments):
    out = tmp_path / "e.png"
    result = invoke("visualize", str(digits / "0" / "0024.png"), *args, "-o", str(out))
    assert_one_line_error(result, 2, *fragments)
    assert not out.exists()


def test_cli_missing_and_unreadable_images_exit_2(tmp_path):
    out = tmp_path / "e.png"
    missing = tmp_path / "nope.png"
    assert_one_line_error(invoke("visualize", str(missing), "-o", str(out)), 2, "no such image", "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    assert_one_line_error(invoke("visualize", str(text), "-o", str(out)), 2, "cannot read image", "notes.png")
    assert not out.exists()
