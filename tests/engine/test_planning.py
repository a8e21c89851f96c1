"""Planning a sweep: r values that coincide on a model are measured once, and a huge r range costs nothing."""

from __future__ import annotations

import time
from dataclasses import replace

from tomebench.engine.setup import Setup
from tomebench.engine.spec import RunSpec
from tomebench.schedule import parse_r_spec

SPEC = RunSpec(model="test_vit", pretrained=False, r=(0, 4), repeats=1, device="cpu", data="synthetic")


def test_a_huge_r_range_is_capped_at_the_model_and_coinciding_r_are_measured_once():
    start = time.perf_counter()
    r = parse_r_spec("0..10000000000000")
    assert isinstance(r, range)
    setup = Setup.build(replace(SPEC, r=r))
    assert time.perf_counter() - start < 30
    # test_vit: 100 patches + cls, so a block merges at most 50 tokens; r 0..50 all differ.
    assert [c.r for c in setup.configs] == [0, *range(51)]
    [note] = [note for note in setup.notes if "distinct" in note]  # besides the one on --repeats 1
    assert note.startswith("10000000000001 r values asked, 51 distinct on test_vit") and "r=50 on" in note
    decreasing = Setup.build(replace(SPEC, r=parse_r_spec("0..100000"), schedule="decreasing"))
    assert len(decreasing.configs) < 200 and decreasing.notes


def test_gmacs_matching_is_held_to_tome_whatever_the_registry_order():
    # attn-prune comes first alphabetically, and PPT's knob is r too; ToMe's r still sets the cost of every row.
    spec = replace(SPEC, reducers=("attn-prune", "ppt", "evit", "tome"), r=(4,), match="gmacs")
    configs = Setup.build(spec).configs
    matched = [c for c in configs if c.reducer not in ("none", "tome")]
    assert matched and all(c.note.startswith("matched to tome r=4") for c in matched), [c.note for c in matched]


def test_each_reducer_keeps_the_r_values_that_differ_for_it():
    # test_vit: 100 patches + cls. ToMe saturates at r = 50 (it merges at most half); ATC can cluster down to one
    # token, so r = 50..99 still differ for it, and its authors' r - 1 makes r = 1 the unpatched model.
    setup = Setup.build(replace(SPEC, reducers=("tome", "atc"), r=parse_r_spec("0..200"), match="none"))
    rs = {name: [c.r for c in setup.configs if c.reducer == name] for name in ("tome", "atc")}
    assert max(rs["tome"]) == 50 and max(rs["atc"]) > 50 and 1 not in rs["atc"]
    # r = 0 counts among the distinct values; it is then measured once, as the unpatched row
    notes = sorted(note for note in setup.notes if "distinct" in note)
    assert len(notes) == 2, notes
    assert notes[0].startswith(f"201 r values asked, {len(rs['atc']) + 1} distinct for atc on test_vit")
    assert notes[1].startswith(f"201 r values asked, {len(rs['tome']) + 1} distinct for tome on test_vit")


def test_a_clamp_note_gives_the_reducers_own_limit():
    from tomebench.engine.probe import _clamp_note

    assert _clamp_note((4, 4), (4, 4)) is None
    tome = _clamp_note((30, 30), (30, 17), "tome")
    assert tome == "r clamped at block(s) 2:30->17 (a block merges at most (N - prefix) // 2 tokens)"
    atc = _clamp_note((29, 29), (29, 5), "atc")
    assert atc.startswith("r clamped at block(s) 2:29->5 (atc's most per block: Down to one cluster")
    assert "(N - prefix) // 2" not in atc


def test_under_gmacs_matching_the_r_values_are_tomes_costs_and_one_note_says_so():
    # r = 60 and 70 are one configuration for ToMe (saturated at 50), though not for ATC: ToMe's r sets the costs.
    setup = Setup.build(replace(SPEC, reducers=("tome", "atc"), r=(40, 60, 70), match="gmacs"))
    notes = [note for note in setup.notes if "distinct" in note]
    assert len(notes) == 1 and notes[0].startswith("3 r values asked, 2 distinct on test_vit"), notes
    assert [c.r for c in setup.configs if c.reducer == "tome"] == [40, 60]
