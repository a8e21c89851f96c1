"""Two runs of the same sweep give the same accuracy columns, for every seeded and unseeded reducer."""

from __future__ import annotations

from dataclasses import replace

from tomebench.engine.run import run_sweep
from tomebench.engine.spec import RunSpec

SPEC = RunSpec(model="demo", r=(0, 2, 4, 6, 8), repeats=1, workers=0, limit=40, group_size=2)


def test_two_runs_of_the_same_accuracy_sweep_give_identical_accuracy_columns():
    spec = replace(SPEC, reducers=("prune", "kmeans", "attn-prune"), r=(4, 8), group_size=0)
    first, second = run_sweep(spec), run_sweep(spec)
    columns = lambda rows: [(r.reducer, r.r, r.top1, r.top5, r.n_images, r.tokens_final) for r in rows]  # noqa: E731
    assert columns(first) == columns(second)
    assert len({r.top1 for r in first}) > 1  # the reducers really differ: not a vacuous equality
