"""Comparing reducers at equal cost: `--match gmacs` picks, for every reducer but the reference, the value of its
own knob whose GMACs per image come closest to the reference's at each r.

r means different things to different methods (tokens per block, a keep rate at three blocks, a ratio), so equal r
is not equal work. The reference (ToMe when it is compared, else the first reducer spending r per block) is swept
over r as usual; for each of its r, every other reducer gets the knob value (an r of its own, a keep rate, a ratio,
a released schedule) whose GMACs are nearest, found by bisection on the FLOP counter over one image: deterministic,
the same on every machine. The row keeps the reference's r, names the chosen value in `reducer_options` and says
the gap in its note.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from tomebench.engine.spec import Config, ReducerChoice, RunSpec, nominal_r
from tomebench.errors import UsageError
from tomebench.measure.cost import count_gflops
from tomebench.models import LoadedModel
from tomebench.patch import install, layout, plan_patch, unpatch
from tomebench.reducers import REDUCERS, ReducerSpec
from tomebench.reducers.options import Option
from tomebench.schedule import CONSTANT, full_r

DIGITS = 3  # a continuous knob is chosen to this many decimals: finer is below what one image's GMACs can tell
STEPS = 14  # bisection steps on a continuous knob: (high - low) / 2**14 is finer than DIGITS for every range here


def knobs_differ(choices: Sequence[ReducerChoice]) -> bool:
    """Whether the reducers count their budget differently (then equal r is not equal cost)."""
    return len({REDUCERS.get(c.name).knob for c in choices if REDUCERS.get(c.name).kind != "none"}) > 1


@dataclass
class _Costs:
    """GMACs per image of configurations of one model, each counted once. Counted on a copy of the model whose
    weights are meta tensors (shapes only, no arithmetic: ten times faster, the same count), and keyed on what the
    count depends on: the tokens each block is asked to remove and the options other than the knob, so the many
    knob values a bisection tries that plan the same blocks cost one count."""

    loaded: LoadedModel
    seen: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        model = self.loaded.model
        memo = {id(t): torch.empty_like(t, device="meta") for t in [*model.parameters(), *model.buffers()]}
        self.meta = copy.deepcopy(unpatch(model), memo)
        self.image = torch.zeros((1, *self.loaded.data_config["input_size"]), device="meta")

    def of(self, reducer: str, r: int, options: dict, schedule=CONSTANT) -> float:
        info = plan_patch(self.meta, reducer, r, schedule, None, **options)
        knob = REDUCERS.get(reducer).knob
        key = (info.reducer, info.r, tuple(sorted((k, v) for k, v in info.options.items() if k != knob)))
        if key not in self.seen:
            try:
                install(self.meta, info)
                self.seen[key] = count_gflops(self.meta, self.image) / 2
            except Exception:  # noqa: BLE001 - an op without a meta kernel: count on the real model instead
                install(self.loaded.model, info)
                image = torch.zeros(self.image.shape)
                self.seen[key] = count_gflops(self.loaded.model, image) / 2
            finally:
                unpatch(self.meta)
                unpatch(self.loaded.model)
        return self.seen[key]


def matched_configs(spec: RunSpec, loaded: LoadedModel, r_values: Sequence[int], notes: list[str]) -> list[Config]:
    """The configurations of `--match gmacs`: the reference reducer at every r, every other reducer at the knob
    value nearest in GMACs to the reference at that r."""
    choices = [c for c in spec.reducers if REDUCERS.get(c.name).kind != "none"]
    reference = _reference(choices)
    if reference is None:
        raise UsageError(
            "--match gmacs needs a reducer whose budget is r (tome, prune, ...) to set the GMACs of each r; "
            "add one to --reducers or pass --match none"
        )
    costs = _Costs(loaded)
    targets = {r: costs.of(reference.name, r, dict(reference.options), spec.schedule) for r in r_values}
    planned = [Config(reference.name, r, spec.schedule, spec.prop_attn, reference.options) for r in r_values]
    for choice in choices:
        if choice == reference:
            continue
        reducer = REDUCERS.get(choice.name)
        if reducer.knob in choice.given and reducer.knob != "r":
            raise UsageError(
                f"--match gmacs chooses {choice.name}.{reducer.knob} itself; drop "
                f"--opt {choice.name}.{reducer.knob} or pass --match none"
            )
        if reducer.knob != "r" and _runs_as_given(reducer, choice, loaded):
            options = reducer.canonical(dict(choice.options))
            requested = reducer.requested(0, None, reducer.defaults() | dict(options), layout(loaded.model))
            note = f"not matched: no value of {choice.name}.{reducer.knob} changes its cost here; run as given"
            planned.append(Config(choice.name, nominal_r(requested), CONSTANT, spec.prop_attn, options, note=note))
            continue
        search = _searcher(reducer, choice, costs, loaded, spec)
        for r, target in targets.items():
            value, got = search(target)
            gap = (got - target) / target if target else 0.0
            knob = f"r={value}" if reducer.knob == "r" else f"{reducer.knob}={value}"
            note = f"matched to {reference.name} r={r} at {target:.4g} GMACs: {knob} gives {got:.4g} GMACs ({gap:+.1%})"
            if reducer.knob == "r":
                planned.append(
                    Config(choice.name, int(value), _schedule(reducer, spec), spec.prop_attn, choice.options, note=note)
                )
                continue
            options = reducer.canonical(dict(choice.options) | {reducer.knob: value})
            requested = reducer.requested(0, None, reducer.defaults() | dict(options), layout(loaded.model))
            planned.append(Config(choice.name, nominal_r(requested), CONSTANT, spec.prop_attn, options, note=note))
    unique: dict[tuple, Config] = {}
    for cfg in planned:  # two targets can pick the same value: it is one configuration, measured once
        unique.setdefault((cfg.reducer, cfg.r, cfg.schedule.label, cfg.options), cfg)
    planned = list(unique.values())
    notes.append(
        f"--match gmacs: {reference.name} sets the GMACs of each r; every other reducer runs the value of "
        "its own knob with the nearest GMACs per image (see each row's note)"
    )
    return planned


def _reference(choices: Sequence[ReducerChoice]) -> ReducerChoice | None:
    """The reducer whose r sets the cost: ToMe when it is compared (the paper's comparisons are against it, and
    the registry's alphabetical order must not make attn-prune the yardstick), else the first that spends r tokens
    in every block, else the first whose knob is r at all (PPT spends r at a few blocks only)."""
    by_r = [c for c in choices if REDUCERS.get(c.name).knob == "r"]
    uniform = [c for c in by_r if REDUCERS.get(c.name).budget is None]
    return next((c for c in by_r if c.name == "tome"), None) or next(iter(uniform + by_r), None)


def _runs_as_given(reducer: ReducerSpec, choice: ReducerChoice, loaded: LoadedModel) -> bool:
    """True when there is no knob value to choose: the knob changes nothing under the other options (diffrate's
    target beside an explicit schedule), or the model offers none (a released schedule's targets for a model with
    none released; the configuration's error then says why)."""
    option = next(o for o in reducer.options if o.name == reducer.knob)
    full = reducer.defaults() | dict(choice.options)
    if not all(full.get(k) == v for k, v in option.applies_when):
        return True
    return reducer.grid is not None and option.choices is None and not reducer.grid(layout(loaded.model))


def _searcher(
    reducer: ReducerSpec, choice: ReducerChoice, costs: _Costs, loaded: LoadedModel, spec: RunSpec
) -> Callable[[float], tuple[object, float]]:
    """A function from a GMACs target to (the knob value nearest to it, its GMACs)."""
    base = dict(choice.options)
    if reducer.knob == "r":
        model = loaded.model
        top = max(full_r(layout(model).num_tokens, layout(model).num_prefix_tokens, layout(model).depth) * 2, 1)
        if reducer.budget is not None:  # r at a few blocks only (PPT): as many as the tokens, the loop clamps
            top = layout(model).num_tokens

        def cost(value):
            return costs.of(choice.name, int(value), base, _schedule(reducer, spec))

        return lambda target: _bisect_whole(cost, target, 0, top)
    option = next(o for o in reducer.options if o.name == reducer.knob)

    def cost(value):
        return costs.of(choice.name, 0, base | {reducer.knob: value})

    if option.choices is not None or reducer.grid is not None:
        values = list(option.choices or reducer.grid(layout(loaded.model)))
        return lambda target: min(((v, cost(v)) for v in values), key=lambda vc: abs(vc[1] - target))
    return lambda target: _bisect_float(cost, target, option)


def _schedule(reducer: ReducerSpec, spec: RunSpec):
    """The run's schedule, or constant for a reducer that spends r its own way (PPT: r at each of its blocks)."""
    return spec.schedule if reducer.budget is None else CONSTANT


def _bisect_whole(cost: Callable[[int], float], target: float, low: int, high: int) -> tuple[int, float]:
    """The whole number in [low, high] whose cost is nearest `target`, for a cost falling as the number rises."""
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if cost(middle) > target else (low, middle)
    return min(((v, cost(v)) for v in (low, high)), key=lambda vc: (abs(vc[1] - target), vc[0]))


def _bisect_float(cost: Callable[[float], float], target: float, option: Option) -> tuple[float, float]:
    """The knob value in the option's range, to DIGITS decimals, whose cost is nearest `target`; the cost may rise
    or fall with the knob (a keep rate raises it, a removal ratio lowers it)."""
    low, high = float(option.low), float(option.high)
    rising = cost(high) >= cost(low)
    for _ in range(STEPS):
        middle = (low + high) / 2
        if (cost(middle) < target) == rising:
            low = middle
        else:
            high = middle
    step = 10**-DIGITS
    candidates = {round(v + d, DIGITS) for v in (low, high) for d in (-step, 0.0, step)}
    candidates = {min(max(v, float(option.low)), float(option.high)) for v in candidates}
    # Ties (values that plan the same blocks) go to the shortest decimal: 1.0 rather than 0.995.
    return min(((v, cost(v)) for v in sorted(candidates)), key=lambda vc: (abs(vc[1] - target), len(repr(vc[0]))))
