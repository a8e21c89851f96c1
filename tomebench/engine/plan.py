"""From a spec and the loaded model to the configurations a sweep measures, each decided once.

`plan_configs` lists them (the unpatched baseline first, then every reducer at every r, or the study's own
list); `decide` turns each into the frozen `PatchInfo` that timing and evaluation install without checking
anything again. A configuration the model cannot run (a reducer option its layout refuses) is decided as an
error, which becomes that configuration's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from tomebench.engine.spec import Config, RunSpec, nominal_r
from tomebench.errors import UsageError, one_line
from tomebench.models import LoadedModel
from tomebench.patch import PatchInfo, layout, num_input_tokens, num_prefix_tokens, plan_patch
from tomebench.patch import depth as model_depth
from tomebench.reducers import REDUCERS
from tomebench.schedule import CONSTANT, distinct_r, full_r, layer_schedule


def plan_configs(spec: RunSpec, loaded: LoadedModel, notes: list[str] | None = None) -> list[Config]:
    """The unpatched baseline first, then every (reducer, r), reducers in the order given (or spec.configs).

    r values that give the same effective per-block schedule on this model (every r above what its tokens allow,
    say) are one configuration: the first is kept, and a line added to `notes` says so."""
    notes = notes if notes is not None else []
    model = loaded.model
    depth = model_depth(model)
    if spec.configs is not None:
        planned = list(spec.configs(loaded) if callable(spec.configs) else spec.configs)
        for cfg in planned:
            REDUCERS.get(cfg.reducer).check(dict(cfg.options))
    else:
        r_values = spec.r
        if r_values is None:
            r_values = tuple(range(full_r(num_input_tokens(model), num_prefix_tokens(model), depth) + 1))
        if spec.schedule.explicit:
            # An explicit per-block list is one configuration; its r is the mean tokens removed per block.
            layer_schedule(spec.schedule.blocks, depth)  # one r per block, exactly: refuses short and long lists
            r_values = (sum(spec.schedule.blocks) // depth,)
        own: dict[str, list[int]] = {}
        if not spec.schedule.explicit:
            r_values, own = _distinct_r(r_values, spec, loaded, notes)
        if len([c for c in spec.reducers if c.name != "none"]) > 1 and 0 in r_values and len(r_values) > 1:
            # Every reducer at r = 0 removes nothing: the same work as the unpatched model, which is timed anyway.
            # Timed once per reducer, its noise would be drawn as several different "speedups" of one computation.
            r_values = [r for r in r_values if r != 0]
            own = {name: [r for r in kept if r != 0] for name, kept in own.items()}
            notes.append("r=0 removes nothing, whatever the reducer: it is measured once, as the unpatched row")
        planned = []
        if _matching(spec):
            from tomebench.engine.matching import matched_configs

            planned = matched_configs(spec, loaded, r_values, notes)
        for choice in spec.reducers:
            if not _matching(spec):
                planned += _choice_configs(choice, spec, own.get(choice.name, r_values), model, notes)
            for option in choice.inert:
                notes.append(
                    f"{choice.name}.{option}: it changes nothing with the other options, so it is left out of the rows"
                )
    for cfg in planned:
        if cfg.schedule.explicit:
            layer_schedule(cfg.schedule.blocks, depth)
    return [Config("none", 0)] + [cfg for cfg in planned if cfg.reducer != "none"]


def _matching(spec: RunSpec) -> bool:
    """--match gmacs, asked for or by default because the reducers' knobs differ."""
    if spec.match is not None:
        return spec.match == "gmacs"
    from tomebench.engine.matching import knobs_differ

    return knobs_differ(spec.reducers)


def _choice_configs(choice, spec: RunSpec, r_values, model, notes: list[str]) -> list[Config]:
    """One reducer's configurations: one per r for a reducer whose budget is r; one for a reducer whose own knob
    plans its blocks (its r is the mean tokens it removes per block; a grid of knob values is several choices)."""
    reducer = REDUCERS.get(choice.name)
    if reducer.kind == "none":
        return []
    if reducer.budget is None:
        return [Config(choice.name, r, spec.schedule, spec.prop_attn, choice.options) for r in r_values]
    if spec.schedule.label != "constant":
        says = "r says" if reducer.knob == "r" else f"its {reducer.knob} option says"
        notes.append(
            f"{choice.name} spends its budget as {says}, block by block: "
            f"--schedule {spec.schedule.label} does not apply to it"
        )
    if reducer.knob == "r":  # r spent the reducer's own way (PPT: at each of its blocks): one per r
        return [Config(choice.name, r, CONSTANT, spec.prop_attn, choice.options) for r in r_values]
    requested = reducer.requested(0, None, reducer.defaults() | dict(choice.options), layout(model))
    return [Config(choice.name, nominal_r(requested), CONSTANT, spec.prop_attn, choice.options)]


def _distinct_r(r_values, spec: RunSpec, loaded: LoadedModel, notes: list[str]) -> tuple[list, dict[str, list]]:
    """ToMe's distinct r values (the cost --match gmacs holds every reducer to), and each r-budget reducer's own.

    A reducer that can remove more of a block than bipartite matching (ATC: down to one cluster), less (MCTF keeps
    10 tokens), or that spends r its own way (blocks it skips, its authors' r - 1) keeps the r values that differ
    for it: deduplicating them by ToMe's clamp would measure two different configurations as one."""
    model = loaded.model
    depth, tokens, prefix = model_depth(model), num_input_tokens(model), num_prefix_tokens(model)
    kept, cap = distinct_r(r_values, spec.schedule, depth, tokens, prefix)
    model_layout = layout(model)
    own: dict[str, tuple[list, int]] = {}
    # Under --match gmacs ToMe's r values are the costs every reducer is matched to, not r values each one runs.
    for choice in () if _matching(spec) else spec.reducers:
        reducer = REDUCERS.get(choice.name)
        if reducer.kind == "none" or reducer.budget is not None:
            continue
        spend = partial(_spent, reducer, dict(choice.options), model_layout)
        own[choice.name] = distinct_r(r_values, spec.schedule, depth, tokens, prefix, reducer.most, spend)
    groups: dict[tuple, list[str]] = {}
    for name, (its, its_cap) in own.items():
        groups.setdefault((tuple(its), its_cap), []).append(name)
    if not own or len(groups) == 1 and next(iter(groups))[0] == tuple(kept):
        groups = {(tuple(kept), cap): []}  # every reducer as ToMe: one note, as it always read
    for (its, its_cap), names in groups.items():
        if len(its) < len(r_values):
            who = f" for {', '.join(names)}" if names else ""
            notes.append(
                f"{len(r_values)} r values asked, {len(its)} distinct{who} on {loaded.name}: from r={its_cap} on, "
                f"every block of the {spec.schedule.label} schedule removes as many tokens as it can, and r values "
                f"with the same per-block schedule are measured once (r={runs(list(its))})"
            )
    return kept, {name: its for name, (its, _) in own.items()}


def _spent(reducer, options: dict, model_layout, requested: tuple[int, ...]) -> tuple[int, ...]:
    """What `reducer` removes of each block's requested r (0 where it does not act, its authors' own count)."""
    return reducer.only_active(requested, options, model_layout)


def runs(values: list[int]) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0..3,7,9..10": a long list of r in a line that stays short."""
    parts: list[list[int]] = []
    for v in values:
        if parts and v == parts[-1][-1] + 1:
            parts[-1].append(v)
        else:
            parts.append([v])
    return ",".join(f"{p[0]}..{p[-1]}" if len(p) > 2 else ",".join(map(str, p)) for p in parts)


@dataclass(frozen=True)
class Decided:
    """A configuration decided for the loaded model: its patch (None for the unpatched model), or why it cannot
    run."""

    patch: PatchInfo | None = None
    error: str | None = None


def decide(model, cfg: Config) -> Decided:
    """The patch of one configuration, checked once. A UsageError (options the model's layout refuses) is the
    configuration's error, not the sweep's."""
    if cfg.reducer == "none":
        return Decided()
    requested = cfg.schedule.blocks if cfg.schedule.explicit else cfg.r
    try:
        return Decided(plan_patch(model, cfg.reducer, requested, cfg.schedule, cfg.prop_attn, **dict(cfg.options)))
    except UsageError as exc:
        return Decided(error=one_line(exc))
