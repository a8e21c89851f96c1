"""Per-layer schedules (tomebench/schedule.py): the authors' named and inflection schedules restated from their
formula, exact ones, sampled ones, lists, r ranges, and the distinct r values a model can tell apart."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tomebench
from tests.patch.vits import IMG, build
from tomebench.errors import UsageError
from tomebench.schedule import (
    distinct_r,
    effective_schedule,
    full_r,
    layer_schedule,
    parse_r_values,
    parse_schedule,
    sample_schedules,
    saturation_r,
)

SETTINGS = settings(max_examples=60, deadline=None)


def test_layer_schedule():
    assert layer_schedule(8, 4) == (8, 8, 8, 8)
    assert layer_schedule([4, 2, 0, 0], 4) == (4, 2, 0, 0)
    for r, depth in ((16, 12), (8, 24), (3, 7), (1, 2), (5, 6)):
        s = layer_schedule(r, depth, "decreasing")
        assert len(s) == depth
        assert sum(s) <= r * depth  # the authors' truncation can fall short of the constant budget
        assert s[0] == 2 * r and s[-1] == 0
    # ViT-B/16, r = 16: the authors' decreasing schedule (truncated, 187 tokens instead of 192).
    assert layer_schedule(16, 12, "decreasing") == (32, 29, 26, 23, 20, 17, 14, 11, 8, 5, 2, 0)
    for bad in (
        lambda: layer_schedule(-1, 4),
        lambda: layer_schedule([1, -1, 0, 0], 4),
        lambda: layer_schedule([1] * 5, 4),
        lambda: layer_schedule(4, 4, "sideways"),
    ):
        with pytest.raises(UsageError):
            bad()


def test_a_short_schedule_list_is_refused_not_padded():
    with pytest.raises(UsageError, match="lists 3 layers but the model has 8 blocks.*4,4,4,0,0,0,0,0"):
        layer_schedule([4, 4, 4], 8)
    with pytest.raises(UsageError, match="lists 3 layers"):
        tomebench.patch(build("test_vit", img_size=IMG), r=[4, 4, 4])


def test_decreasing_schedule_never_increases():
    for r in range(0, 17):
        for depth in range(2, 25):
            s = layer_schedule(r, depth, "decreasing")
            assert all(a >= b for a, b in zip(s, s[1:])), (r, depth, s)


def test_unknown_schedule_is_refused_for_any_depth():
    with pytest.raises(UsageError):
        layer_schedule(4, 1, "nonsense")


# ---------------------------------------------------------------- the authors' schedules


def authors_schedule(r: int, depth: int, inflect: float) -> tuple[int, ...]:
    """The authors' (r, inflection) schedule (facebookresearch/ToMe `parse_r`), restated from its formula."""
    lo = int(r * (1.0 - inflect))
    hi = 2 * r - lo
    return tuple(int(lo + (hi - lo) / (depth - 1) * i) for i in range(depth))


@pytest.mark.parametrize("depth", [8, 12, 24])
@pytest.mark.parametrize("r", [1, 7, 8, 13, 16, 23])
def test_named_and_inflection_schedules_are_the_authors(depth, r):
    for name, inflect in (
        ("decreasing", -1.0),
        ("increasing", 1.0),
        ("inflection:0.5", 0.5),
        ("inflection:-0.5", -0.5),
        ("constant", 0.0),
        ("inflection:0", 0.0),
    ):
        assert layer_schedule(r, depth, name) == authors_schedule(r, depth, inflect), name
    assert layer_schedule(r, depth, "inflection:-1") == layer_schedule(r, depth, "decreasing")
    decreasing = layer_schedule(r, depth, "decreasing")
    assert decreasing[0] == 2 * r and decreasing[-1] == 0 and sum(decreasing) <= r * depth


def test_authors_schedules_known_values():
    # Checked against facebookresearch/ToMe's parse_r: ViT-B (12 blocks) r = 13 at inflection -0.5 and +0.5.
    assert layer_schedule(13, 12, "inflection:-0.5") == (19, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7)
    assert layer_schedule(13, 12, "inflection:0.5") == (6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 20)
    assert layer_schedule(8, 8, "increasing") == (0, 2, 4, 6, 9, 11, 13, 16)


@pytest.mark.parametrize("depth", [1, 2, 7, 12, 24])
@pytest.mark.parametrize("r", [0, 1, 5, 16])
def test_exact_inflection_schedules_keep_the_budget_and_their_shape(depth, r):
    decreasing = layer_schedule(r, depth, "inflection-exact:-1")
    increasing = layer_schedule(r, depth, "inflection-exact:1")
    for name in ("inflection-exact:0.5", "inflection-exact:-0.25", "inflection-exact:0", "inflection-exact:-1"):
        assert sum(layer_schedule(r, depth, name)) == r * depth
    if depth > 1:
        assert increasing == tuple(reversed(decreasing))
        assert increasing[0] == 0 and increasing[-1] == 2 * r
        half = layer_schedule(r, depth, "inflection-exact:-0.5")
        assert all(a >= b for a, b in zip(half, half[1:]))  # non-increasing
        assert half[0] <= decreasing[0] and half[-1] >= decreasing[-1]
    assert layer_schedule(r, depth, "inflection-exact:0") == (r,) * depth


@pytest.mark.parametrize("text", ["inflection:2", "inflection:x", "inflection", "sideways"])
def test_bad_schedules_are_refused(text):
    with pytest.raises(UsageError, match="bad schedule"):
        parse_schedule(text)
    assert (
        parse_schedule("inflection:0.50").label == "inflection:0.5"
        and parse_schedule("increasing").label == "increasing"
    )
    assert parse_schedule("inflection-exact:-0.50").label == "inflection-exact:-0.5"


# ---------------------------------------------------------------- sampled schedules


@SETTINGS
@given(st.integers(1, 24), st.integers(5, 200), st.integers(0, 3), st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_sampled_schedules_are_seeded_distinct_in_range_and_within_the_clamp(depth, tokens, prefix, seed, n):
    prefix = min(prefix, tokens - 1)
    top = (tokens - prefix) * 2
    lo, hi = sorted((seed % (top + 1), (seed // 7) % (top + 1)))
    first = sample_schedules(n, depth, tokens, prefix, (lo, hi), seed)
    assert first == sample_schedules(n, depth, tokens, prefix, (lo, hi), seed)
    assert len(set(first)) == len(first) <= n
    for schedule in first:
        assert len(schedule) == depth
        assert effective_schedule(schedule, tokens, prefix)[0] == schedule  # nothing left to clamp
        assert sum(schedule) <= hi


def test_sampled_totals_span_the_range_when_nothing_clamps():
    schedules = sample_schedules(200, 12, 197, 1, (48, 144), seed=0)
    totals = [sum(s) for s in schedules]
    assert len(schedules) == 200 and min(totals) >= 48 and max(totals) <= 144
    assert min(totals) < 60 and max(totals) > 130  # spread over the range, not bunched
    assert sample_schedules(200, 12, 197, 1, (48, 144), seed=1) != schedules


# ---------------------------------------------------------------- r values


def test_parse_r_values():
    assert parse_r_values("0..24:4") == [0, 4, 8, 12, 16, 20, 24]
    assert parse_r_values("0..3") == [0, 1, 2, 3]
    assert parse_r_values("0,8,16") == [0, 8, 16]
    assert parse_r_values(" 16 ") == [16]
    assert parse_r_values("8, 8,4") == [8, 4]  # duplicates dropped, order kept
    for bad in ("24..0", "0..24:0", "-3", "abc", "0,-8", ""):
        with pytest.raises(UsageError):
            parse_r_values(bad)


def test_full_r():
    assert full_r(197, 1, 12) == 16
    assert full_r(197, 1, 24) == 8
    assert full_r(1, 1, 12) == 0


def test_distinct_r_agrees_with_measuring_every_r():
    for depth, tokens, prefix in ((6, 101, 1), (12, 197, 1), (4, 17, 2), (1, 10, 0)):
        for schedule in ("constant", "decreasing", "increasing", "inflection:0.5", "inflection:-0.25"):
            cap = saturation_r(schedule, depth, tokens, prefix)
            effective = lambda r: effective_schedule(layer_schedule(r, depth, schedule), tokens, prefix)[0]  # noqa
            assert all(effective(cap + k) == effective(cap) for k in (1, 2, 7, 100, 10**9))
            brute = list(dict.fromkeys(effective(r) for r in range(3 * cap + 3)))
            kept, _ = distinct_r(range(0, 10**12), schedule, depth, tokens, prefix)
            assert [effective(r) for r in kept] == brute


def test_distinct_r_with_a_reducers_own_limit_and_count_agrees_with_measuring_every_r():
    # ATC's limits: down to one cluster (M - 1 a block, not M // 2) and its authors' r - 1 with a cls token;
    # MCTF's: at least 10 tokens stay, the first block skipped.
    def down_to_one(n, p):
        return max(n - p - 1, 0)

    def ten_stay(n, p):
        return max(min(n - 10, (n - p) // 2), 0)

    def one_less(rs):
        return tuple(max(r - 1, 0) for r in rs)

    def skip_first(rs):
        return (0, *rs[1:])

    for depth, tokens, prefix in ((6, 101, 1), (12, 197, 1), (4, 17, 2)):
        for schedule in ("constant", "decreasing", "inflection:0.5"):
            for most, spend in ((down_to_one, one_less), (down_to_one, None), (ten_stay, skip_first)):
                count = spend or tuple

                def effective(r, depth=depth, schedule=schedule, tokens=tokens, prefix=prefix, most=most, count=count):
                    return effective_schedule(count(layer_schedule(r, depth, schedule)), tokens, prefix, most)[0]

                kept, cap = distinct_r(range(0, 10**12), schedule, depth, tokens, prefix, most, spend)
                assert all(effective(cap + k) == effective(cap) for k in (1, 2, 7, 100, 10**9))
                brute = list(dict.fromkeys(effective(r) for r in range(3 * cap + 3)))
                assert [effective(r) for r in kept] == brute
    # ATC can remove more of a block than ToMe, so it keeps r values that ToMe's clamp collapses into one.
    tome, _ = distinct_r(range(0, 200), "constant", 12, 197, 1)
    atc, _ = distinct_r(range(0, 200), "constant", 12, 197, 1, down_to_one, one_less)
    assert max(atc) > max(tome) and 1 not in atc  # r = 1 spends 0 with a cls token: the same as r = 0
