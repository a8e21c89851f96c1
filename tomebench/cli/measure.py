"""The measuring commands: `sweep`, `compare`, `ablate` and `schedules`. Each passes what it was given to
`command_line` by name, builds the typed spec and hands it to the run."""

from __future__ import annotations

import typer

from tomebench.cli.app import app, fail
from tomebench.cli.options import (
    AccTolOpt,
    BaselineOpt,
    BatchOpt,
    CacheDataOpt,
    CheckpointOpt,
    ClassSubsetOpt,
    CompileModeOpt,
    CompileOpt,
    ConfigOpt,
    DataOpt,
    DeviceOpt,
    DtypeOpt,
    ExecutorOpt,
    GroupOpt,
    LabelsOpt,
    LatencyOpt,
    LimitOpt,
    MatchOpt,
    MaxRetimeOpt,
    ModelArgOpt,
    ModelOpt,
    OneROpt,
    OptionOpt,
    OutOpt,
    OverwriteOpt,
    PretrainedOpt,
    PropAttnOpt,
    RayAddressOpt,
    RealLabelsOpt,
    ReducerOpt,
    ReducersOpt,
    RepeatsOpt,
    ResumeOpt,
    ROpt,
    SamplesOpt,
    ScheduleOpt,
    SeedOpt,
    SpeedupTolOpt,
    TargetSpeedupOpt,
    TimeBudgetOpt,
    WorkersOpt,
)
from tomebench.cli.run import ablation_report, measure
from tomebench.cli.spec import ablate_r, command_line, run_spec
from tomebench.errors import TomebenchError, UsageError
from tomebench.report.tolerances import Tolerances


@app.command(short_help="Sweep r for one reducer: speedup, GFLOPs, tokens, accuracy.")
def sweep(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    r: ROpt = None,
    reducer: ReducerOpt = "tome",
    schedule: ScheduleOpt = "constant",
    prop_attn: PropAttnOpt = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    real_labels: RealLabelsOpt = None,
    class_subset: ClassSubsetOpt = None,
    cache_data: CacheDataOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    opt: OptionOpt = None,
    baseline: BaselineOpt = None,
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    time_budget: TimeBudgetOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sweep r for one reducer: throughput (interleaved with the unpatched model), GFLOPs, accuracy."""
    try:
        args = command_line(
            ctx,
            model=model,
            r=r,
            reducer=reducer,
            schedule=schedule,
            prop_attn=prop_attn,
            batch_size=batch_size,
            compile=compile,
            compile_mode=compile_mode,
            latency=latency,
            device=device,
            dtype=dtype,
            data=data,
            labels=labels,
            real_labels=real_labels,
            class_subset=class_subset,
            cache_data=cache_data,
            limit=limit,
            pretrained=pretrained,
            checkpoint=checkpoint,
            model_arg=model_arg,
            out=out,
            repeats=repeats,
            workers=workers,
            opt=opt,
            baseline=baseline,
            acc_tol=acc_tol,
            speedup_tol=speedup_tol,
            resume=resume,
            overwrite=overwrite,
            group_size=group_size,
            max_retime=max_retime,
            time_budget=time_budget,
            executor=executor,
            ray_address=ray_address,
            config=config,
        )
        measure("sweep", args, lambda: run_spec("sweep", args))
    except TomebenchError as exc:
        raise fail(exc) from None


@app.command(short_help="Compare reducers at the same r, in one interleaved run.")
def compare(
    ctx: typer.Context,
    reducers: ReducersOpt = None,
    match: MatchOpt = None,
    model: ModelOpt = "demo",
    r: ROpt = None,
    schedule: ScheduleOpt = "constant",
    prop_attn: PropAttnOpt = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    real_labels: RealLabelsOpt = None,
    class_subset: ClassSubsetOpt = None,
    cache_data: CacheDataOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    opt: OptionOpt = None,
    baseline: BaselineOpt = None,
    acc_tol: AccTolOpt = Tolerances.acc,
    speedup_tol: SpeedupTolOpt = Tolerances.speedup,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    time_budget: TimeBudgetOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compare reducers in one run (interleaved timing, one data pass, one CSV and Pareto plot): at the same r, or at
    equal GMACs per image when their knobs differ (--match)."""
    try:
        args = command_line(
            ctx,
            model=model,
            r=r,
            reducers=reducers,
            match=match,
            schedule=schedule,
            prop_attn=prop_attn,
            batch_size=batch_size,
            compile=compile,
            compile_mode=compile_mode,
            latency=latency,
            device=device,
            dtype=dtype,
            data=data,
            labels=labels,
            real_labels=real_labels,
            class_subset=class_subset,
            cache_data=cache_data,
            limit=limit,
            pretrained=pretrained,
            checkpoint=checkpoint,
            model_arg=model_arg,
            out=out,
            repeats=repeats,
            workers=workers,
            opt=opt,
            baseline=baseline,
            acc_tol=acc_tol,
            speedup_tol=speedup_tol,
            resume=resume,
            overwrite=overwrite,
            group_size=group_size,
            max_retime=max_retime,
            time_budget=time_budget,
            executor=executor,
            ray_address=ray_address,
            config=config,
        )
        measure("compare", args, lambda: run_spec("compare", args))
    except TomebenchError as exc:
        raise fail(exc) from None


@app.command("ablate", short_help="The paper's Table 1: every ToMe option varied alone.")
def ablate_command(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    r: OneROpt = None,
    batch_size: BatchOpt = None,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    real_labels: RealLabelsOpt = None,
    class_subset: ClassSubsetOpt = None,
    cache_data: CacheDataOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    max_retime: MaxRetimeOpt = 2,
    time_budget: TimeBudgetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The paper's Table 1: every ToMe option varied alone from the defaults, in one run (interleaved timing, one
    data pass). Writes the CSV, a Markdown table per factor (<out>.md) and the speed-accuracy plot."""
    try:
        if r is not None and r < 0:
            raise UsageError(f"--r must be >= 0, got {r}")
        args = command_line(
            ctx,
            model=model,
            r=r,
            batch_size=batch_size,
            compile=compile,
            compile_mode=compile_mode,
            latency=latency,
            device=device,
            dtype=dtype,
            data=data,
            labels=labels,
            real_labels=real_labels,
            class_subset=class_subset,
            cache_data=cache_data,
            limit=limit,
            pretrained=pretrained,
            checkpoint=checkpoint,
            model_arg=model_arg,
            out=out,
            repeats=repeats,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            max_retime=max_retime,
            time_budget=time_budget,
            config=config,
        )
        r_value = ablate_r(args.r)

        def spec():
            from tomebench.studies import ablate

            # One group: every option timed interleaved and evaluated in one data pass.
            return run_spec("ablate", args, dict(configs=ablate.plan(r_value), group_size=0))

        out_path = measure("ablate", args, spec, report=True)
        ablation_report(out_path)
    except TomebenchError as exc:
        raise fail(exc) from None


@app.command("schedules", short_help="The paper's schedule search (Figures 2 and 7).")
def schedules_command(
    ctx: typer.Context,
    model: ModelOpt = "demo",
    samples: SamplesOpt = 100,
    target_speedup: TargetSpeedupOpt = 1.5,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = None,
    compile: CompileOpt = False,
    compile_mode: CompileModeOpt = None,
    latency: LatencyOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    data: DataOpt = None,
    labels: LabelsOpt = None,
    real_labels: RealLabelsOpt = None,
    class_subset: ClassSubsetOpt = None,
    cache_data: CacheDataOpt = None,
    limit: LimitOpt = None,
    pretrained: PretrainedOpt = True,
    checkpoint: CheckpointOpt = None,
    model_arg: ModelArgOpt = None,
    out: OutOpt = None,
    repeats: RepeatsOpt = None,
    workers: WorkersOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    group_size: GroupOpt = 8,
    max_retime: MaxRetimeOpt = 2,
    time_budget: TimeBudgetOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The paper's schedule search (Figures 2 and 7): random per-block schedules around a target speedup, measured
    against the constant, decreasing and increasing ones; plots them and the average r per block of the best."""
    try:
        args = command_line(
            ctx,
            model=model,
            samples=samples,
            target_speedup=target_speedup,
            seed=seed,
            batch_size=batch_size,
            compile=compile,
            compile_mode=compile_mode,
            latency=latency,
            device=device,
            dtype=dtype,
            data=data,
            labels=labels,
            real_labels=real_labels,
            class_subset=class_subset,
            cache_data=cache_data,
            limit=limit,
            pretrained=pretrained,
            checkpoint=checkpoint,
            model_arg=model_arg,
            out=out,
            repeats=repeats,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            group_size=group_size,
            max_retime=max_retime,
            time_budget=time_budget,
            config=config,
        )
        check_search(args.samples, args.target_speedup)

        def spec():
            from tomebench.studies import schedules as search

            return run_spec("schedules", args, dict(configs=search.plan(args.samples, args.target_speedup, args.seed)))

        measure("schedules", args, spec, figure=_schedules_figure)
    except TomebenchError as exc:
        raise fail(exc) from None


MAX_SAMPLES = 100_000  # each sample is a configuration timed and evaluated: more is a typo, not a study


def check_search(samples: int, target_speedup: float) -> None:
    """The schedule search's own options, checked before anything is imported or measured."""
    import math

    if samples > MAX_SAMPLES:
        raise UsageError(f"--samples {samples} is absurd: at most {MAX_SAMPLES} (each one is a configuration measured)")
    if samples < 0 or not (1 <= target_speedup < math.inf):  # written so that NaN fails it too
        raise UsageError(
            f"--samples must be >= 0 and --target-speedup a number >= 1; got {samples} and {target_speedup}"
        )


def _schedules_figure(frame):
    from tomebench.studies import schedules as search

    return search.figure(frame)
