"""Every option of the command line, defined once as an `Annotated` alias and reused by each command that takes
it; the help text here is the one `--help` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME",
        help="Alias (see `tomebench models`), any timm name, tv:ARCH[.WEIGHTS] (torchvision) or hf:ID (transformers).",
    ),
]
ROpt = Annotated[
    Optional[str],
    typer.Option("--r", metavar="R", help="r values: 16, 0,8,16, 0..24 or 0..24:4. Default: 0 to the model's full r."),
]
ScheduleOpt = Annotated[
    str,
    typer.Option(
        metavar="SCHEDULE",
        help="constant, decreasing (2r down to 0), increasing (0 up to 2r), inflection:T (the authors' "
        "schedule: T in [-1, 1], -1 decreasing, 1 increasing), inflection-exact:T (same line, total exactly "
        "r x depth) or one r per block: 16,12,8,...",
    ),
]
PropAttnOpt = Annotated[
    Optional[bool], typer.Option("--prop-attn/--no-prop-attn", help="Proportional attention. Default: the paper's.")
]
BatchOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="N[,N...]",
        help="Images per batch: 32, or several as --r takes them (1,8,32,128): every "
        "configuration at every size, each paired with the unpatched model at that size. Default: 256 on "
        "CUDA, 32 on CPU.",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile every configuration and the unpatched model (each its own compiled module, static "
        "shapes), in inductor's default mode unless --compile-mode says another. Compile time goes to compile_s, "
        "never into throughput. Default: eager.",
    ),
]
CompileModeOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="MODE",
        help="The torch.compile mode: default, max-autotune or reduce-overhead (CUDA graphs on GPU); implies "
        "--compile.",
    ),
]
LatencyOpt = Annotated[
    bool,
    typer.Option(
        "--latency", help="Also time >= 100 single-image calls: latency_ms_p50/p90/p99 and latency_speedup (at p50)."
    ),
]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto (cuda if available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[
    Optional[str],
    typer.Option(metavar="DTYPE", help="fp32, fp16 or bf16 (autocast). Default: fp16 on CUDA, fp32 on CPU."),
]
DataOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="DATA",
        help="synthetic (throughput only), demo (the digits test split), an image folder, a Hugging Face dataset "
        "(hf:NAME[:SPLIT], a save_to_disk or parquet folder) or WebDataset shards (wds:PATTERN, a folder of .tar). "
        "Default: demo for the demo model, else synthetic.",
    ),
]
LabelsOpt = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE",
        help="Labels for a flat image folder: one per line, name,label, the devkit's "
        "ILSVRC2012_validation_ground_truth.txt (meta.mat beside it) or Kaggle's LOC_val_solution.csv.",
    ),
]
RealLabelsOpt = Annotated[
    Optional[Path], typer.Option(metavar="FILE", help="ImageNet-ReaL's real.json: real_top1 beside top1 (as timm).")
]
ClassSubsetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--class-subset",
        "--valid-labels",
        metavar="SUBSET",
        help="Class folders onto the model's classes: synsets (ImageNet-A/R), indices (ImageNet-V2), or a file of "
        "class indices, one per sorted folder (timm's --valid-labels); fewer classes restrict the logits.",
    ),
]
CacheDataOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="DIR", help="Keep the decoded crops here; later sweeps with the same data config read them."),
]
LimitOpt = Annotated[
    Optional[int], typer.Option(metavar="N", help="Evaluate a class-balanced, deterministic subset of N images.")
]
PretrainedOpt = Annotated[
    bool,
    typer.Option(
        "--pretrained/--no-pretrained",
        help="Load the published weights from the model family's hub (default), or random init for throughput only.",
    ),
]
CheckpointOpt = Annotated[
    Optional[Path], typer.Option(metavar="FILE", help="Local .safetensors/.pth weights to load instead.")
]
OutOpt = Annotated[
    Optional[Path],
    typer.Option("--out", "-o", metavar="FILE.csv", help="CSV to write. Default: results/<command>-<model>.csv"),
]
RepeatsOpt = Annotated[
    Optional[int], typer.Option(metavar="N", help="Timed repeats per configuration. Default: 7 on CPU, 10 on CUDA.")
]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option(
        metavar="N", help="DataLoader workers for the accuracy pass. Default: the number of CPU cores, at most 4."
    ),
]
MaxRetimeOpt = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="Time a group again, up to N times, while one of its rows has a p10-p90 "
        "spread above 10% of its median; the quietest attempt is kept. 0: never.",
    ),
]
OptionOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--opt",
        metavar="REDUCER.KEY=VALUE",
        help="Reducer option REDUCER.KEY=VALUE, e.g. kmeans.iters=3 or prune.seed=1 (repeatable).",
    ),
]
BaselineOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE.csv", help="After the run, check the CSV against this baseline (exit 1 on regression)."),
]
AccTolOpt = Annotated[float, typer.Option(metavar="POINTS", help="Allowed top-1/top-5 drop, in absolute points.")]
SpeedupTolOpt = Annotated[float, typer.Option(metavar="FRACTION", help="Allowed relative speedup drop (0.1 = 10%).")]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE.toml", help="TOML file of these options (see configs/); flags given here override it."),
]
ModelArgOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--model-arg",
        metavar="KEY=VALUE",
        help="KEY=VALUE for the model's constructor: timm.create_model, the "
        "torchvision builder or the transformers config (repeatable).",
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Keep the rows already in --out and measure only the missing configurations.")
]
ExecutorOpt = Annotated[
    str,
    typer.Option(metavar="EXECUTOR", help="local (this machine) or ray (a Ray cluster; pip install 'tomebench[ray]')."),
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="ADDRESS",
        help="Ray cluster to join (ray://host:10001 or host:6379). Default: RAY_ADDRESS, "
        "else a local Ray started for the run.",
    ),
]
GroupOpt = Annotated[
    int,
    typer.Option(
        metavar="N",
        help="Configurations timed together (interleaved with the unpatched model) and evaluated in one "
        "data pass; each group's rows are saved as it finishes. 0: all in one group.",
    ),
]
ReducerOpt = Annotated[str, typer.Option(metavar="NAME", help="Registered reducer (see `tomebench reducers`).")]
ReducersOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="NAMES", help="Comma-separated reducers, compared in one run. Default: every registered reducer."
    ),
]
OneROpt = Annotated[
    Optional[int], typer.Option("--r", metavar="R", help="Tokens removed per block. Default: the model's full r.")
]
SamplesOpt = Annotated[int, typer.Option(metavar="N", help="Random per-block schedules to measure.")]
TargetSpeedupOpt = Annotated[
    float, typer.Option(metavar="X", help="Centre of the search: the constant r whose GFLOPs drop by this factor.")
]
SeedOpt = Annotated[int, typer.Option(metavar="N", help="Seed of the schedule sampler (same seed, same schedules).")]
MatchOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="HOW",
        help="Compare reducers whose knobs differ at equal cost: gmacs (ToMe's r as given, every other reducer at "
        "the value of its own knob nearest in GMACs per image) or none (each reducer's own knob values). Default: "
        "gmacs when the reducers' knobs differ, else none.",
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace --out if it exists (without it, an existing CSV is never replaced)."),
]
TimeBudgetOpt = Annotated[
    Optional[float],
    typer.Option(
        metavar="SECONDS",
        help="Keep timing a group, round after round beyond --repeats, until every speedup's median is known to "
        "within 3% (its 95% interval) or this many seconds have passed. Default: exactly --repeats rounds.",
    ),
]
