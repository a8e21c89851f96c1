"""The edge: what a measuring command was given (flags, then a `--config` file for the options the command line
left unset), parsed once into a typed `RunSpec` and the settings of the run around it.

Text is checked here first, without torch (ranges, r and batch syntax, paths, file names); names that need the
registries (reducers, their options) are checked when the spec is built, before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import typer

from tomebench.cli import parse
from tomebench.config import load as load_config
from tomebench.errors import UsageError
from tomebench.report.tolerances import Tolerances
from tomebench.schedule import parse_r_spec


@dataclass(frozen=True)
class CommandLine:
    """A measuring command's options as typed on the command line (or in its config file): text, not yet
    parsed. Each command fills in the ones it takes."""

    model: str = "demo"
    reducer: str = "tome"  # sweep
    reducers: str | None = None  # compare
    r: str | int | None = None
    schedule: str = "constant"
    prop_attn: bool | None = None
    batch_size: str | int | None = None
    compile: bool | str = False  # a flag; a config file may also give the mode itself (compile = "default")
    compile_mode: str | None = None
    latency: bool = False
    device: str = "auto"
    dtype: str | None = None
    data: str | None = None
    labels: Path | None = None
    real_labels: Path | None = None
    class_subset: str | None = None
    cache_data: Path | None = None
    limit: int | None = None
    pretrained: bool = True
    checkpoint: Path | None = None
    model_arg: tuple[str, ...] = ()
    out: Path | None = None
    repeats: int | None = None
    workers: int | None = None
    opt: tuple[str, ...] = ()
    baseline: Path | None = None
    acc_tol: float = Tolerances.acc
    speedup_tol: float = Tolerances.speedup
    resume: bool = False
    overwrite: bool = False
    group_size: int = 8
    max_retime: int = 2
    time_budget: float | None = None
    executor: str = "local"
    ray_address: str | None = None
    config: Path | None = None
    match: str | None = None  # compare
    samples: int = 100  # schedules
    target_speedup: float = 1.5
    seed: int = 0
    taken: frozenset[str] = field(default=frozenset(), compare=False)  # the options this command has


def command_line(ctx: typer.Context, **given) -> CommandLine:
    """The command's options, with `--config` filling every option the command line did not set."""
    args = CommandLine(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in given.items()
            if v is not None or k in ("r", "reducers", "prop_attn")
        },
        taken=frozenset(given),
    )
    if args.config is None:
        return args
    options, _ = load_config(args.config, allowed=set(given) | {"model_kwargs"}, command=ctx.info_name)
    if "model_kwargs" in options:
        options["model_arg"] = options.pop("model_kwargs")
    from_file = {}
    for key, value in options.items():
        # By name: typer may bundle its own click, whose ParameterSource is a different enum class.
        source = ctx.get_parameter_source(key)
        if getattr(source, "name", None) != "COMMANDLINE":
            from_file[key] = tuple(value) if isinstance(value, list) else value
    return replace(args, **from_file)


def run_spec(command: str, args: CommandLine, plan: dict | None = None):
    """The typed RunSpec of a measuring command. `plan`: a study's own configurations (ablate, schedules)."""
    from tomebench.engine.spec import RunSpec

    sizes = None if args.batch_size is None else parse.batch_sizes(str(args.batch_size))
    model_kwargs = tuple(parse.key_values(list(args.model_arg), "--model-arg"))
    common = dict(
        model=args.model,
        schedule=args.schedule,
        prop_attn=args.prop_attn,
        batch_sizes=sizes,
        device=args.device,
        dtype=args.dtype,
        data=args.data,
        labels=args.labels,
        real_labels=args.real_labels,
        class_subset=args.class_subset,
        cache_data=args.cache_data,
        limit=args.limit,
        pretrained=args.pretrained,
        checkpoint=args.checkpoint,
        repeats=args.repeats,
        workers=args.workers,
        model_kwargs=model_kwargs,
        group_size=args.group_size,
        compile=compile_mode(args),
        latency=args.latency,
        max_retime=args.max_retime,
        time_budget=args.time_budget,
    )
    r = None if args.r is None else parse_r_spec(str(args.r))
    RunSpec.check_plain(**common, r=r if plan is None else None, match=args.match if plan is None else None)
    if plan is not None:
        return RunSpec(**(common | plan))
    options = parse.reducer_options(list(args.opt))
    if command == "sweep":
        if "," in args.reducer:
            raise UsageError(
                f"sweep measures one reducer, got --reducer {args.reducer}; to compare several in one "
                f"run: tomebench compare --reducers {args.reducer}"
            )
        wanted = (args.reducer,)
    else:
        wanted = parse.names(args.reducers) if args.reducers is not None else _every_reducer()
    choices = tuple(choice for name in wanted for choice in _choices(name, _options_for(name, options)))
    _refuse_options_of_unplanned(options, choices)
    return RunSpec(**common, reducers=choices, r=r, match=args.match)


def _every_reducer() -> tuple[str, ...]:
    """compare's default: every registered reducer (built-ins and plug-ins), the unpatched model aside."""
    from tomebench.reducers import REDUCERS

    return tuple(entry.name for entry in REDUCERS if entry.obj.kind != "none")


def _choices(name: str, options: dict) -> list:
    """One choice of a reducer, or one per value where its knob is given as a list (`--opt pitome.ratio=0.9,0.95`):
    the grid of a method whose budget is not r, as `--r 0,8,16` is ToMe's."""
    from tomebench.engine.spec import ReducerChoice
    from tomebench.reducers import REDUCERS

    spec = REDUCERS.get(name)
    knob = next((o for o in spec.options if o.name == spec.knob and o.kind is not tuple), None)
    given = options.get(spec.knob)
    if knob is None or not (isinstance(given, str) and "," in given):
        return [ReducerChoice.of(name, options)]
    values = [v.strip() for v in given.split(",")]
    if not all(values) or len(set(values)) != len(values):
        raise UsageError(f"--opt {name}.{spec.knob}={given}: give distinct values separated by commas")
    return [ReducerChoice.of(name, options | {spec.knob: parse.option_value(value)}) for value in values]


def _options_for(name: str, options: dict[str, dict]) -> dict:
    from tomebench.reducers import REDUCERS

    canonical = REDUCERS.canonical(name)
    return {
        k: v for given, values in options.items() if REDUCERS.canonical(given) == canonical for k, v in values.items()
    }


def _refuse_options_of_unplanned(options: dict[str, dict], choices) -> None:
    """An --opt for a reducer this run does not measure would be silently ignored: check its name and values all
    the same (a typo fails), and let it pass, as the same command line may sweep it elsewhere."""
    from tomebench.reducers import REDUCERS

    planned = {choice.name for choice in choices}
    for name, values in options.items():
        if REDUCERS.canonical(name) not in planned:
            REDUCERS.get(name).check(values)


def compile_mode(args: CommandLine) -> str | None:
    """The torch.compile mode asked for, or None (eager): --compile alone is inductor's default mode; --compile-mode
    picks another (and implies --compile); a config file's `compile = "max-autotune"` names the mode itself."""
    if isinstance(args.compile, str):
        return args.compile if args.compile_mode is None else args.compile_mode
    if args.compile_mode is not None:
        return args.compile_mode
    return "default" if args.compile else None


def spec_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(CommandLine))


def ablate_r(value: object) -> int | None:
    """ablate's one r: a whole number >= 0 (a config file's r may arrive as text)."""
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).strip().isdigit()):
        raise UsageError(f"ablate takes one r, a whole number >= 0; got {value!r}")
    return int(value)
