"""The one row type, the CSV contract of MEASURE.md, and the environment every row carries.

The header is derived from `Row`'s fields, in order; new columns are only ever appended, so a CSV written by
one version of tomebench is readable by the next (`tomebench.results.csv.read_csv` fills columns an older file
lacks with NaN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Environment:
    """Where a row was measured: device, library versions and the tomebench commit."""

    device_name: str
    torch: str
    timm: str
    tomebench: str
    git_sha: str
    timestamp: str


@dataclass(frozen=True)
class Row:
    """One measured configuration (model, reducer, r, schedule). Columns as in MEASURE.md; None -> empty cell."""

    model: str
    reducer: str
    r: int
    schedule: str
    prop_attn: bool
    infer_img_size: int
    infer_batch_size: int
    dtype: str
    device: str
    infer_samples_per_sec: float | None = None
    infer_samples_per_sec_p10: float | None = None
    infer_samples_per_sec_p90: float | None = None
    infer_step_time: float | None = None  # median milliseconds per batch
    speedup: float | None = None  # against the unpatched model measured in the same run
    infer_gflops: float | None = None
    tokens_final: int | None = None
    peak_mem_mb: float | None = None  # CUDA only
    top1: float | None = None
    top5: float | None = None
    n_images: int | None = None
    dataset: str | None = None
    param_count: float | None = None  # millions
    error: str | None = None
    note: str | None = None  # clamped r, noisy timing, skipped images: what a reader should know
    reducer_options: str | None = None  # non-default reducer options, "key=value,..." sorted; part of the identity
    device_name: str | None = None
    torch: str | None = None
    timm: str | None = None
    tomebench: str | None = None
    git_sha: str | None = None
    timestamp: str | None = None
    # Appended later (older CSVs lack them; `read_csv` fills them empty). Raw images/s of different timing groups
    # are not comparable, so each row names its own reference and the spread of its paired speedup.
    baseline_samples_per_sec: float | None = None  # the unpatched model's images/s in this row's timing group
    speedup_p10: float | None = None  # p10 and p90 of the per-round paired ratios whose median is `speedup`
    speedup_p90: float | None = None
    # Appended by issue 17 (compiled configurations and latency).
    compile_s: float | None = None  # --compile: seconds this configuration's first call spent compiling
    latency_ms_p50: float | None = None  # --latency: per-image latency at batch 1
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_speedup: float | None = None  # the unpatched model's latency_ms_p50 / this row's, same group
    compile: str | None = None  # the torch.compile mode, empty when eager; part of the identity
    # Appended by issue 21 (one typed run spec): what was asked travels as data, not as prose in `note`.
    requested_batch_size: int | None = None  # the batch asked for; infer_batch_size is what ran after any backoff
    tokens_per_layer: str | None = None  # tokens after each block's reduction, "197,181,...": the budget spent
    attn_impl: str | None = None  # "fused" (SDPA, at most an additive bias) or "eager" (attention matrix built)
    torchvision: str | None = None  # the family's library version, in rows of torchvision models
    transformers: str | None = None  # ... and of transformers models
    # Appended by issue 25: images of the evaluated subset that could not be decoded (n_images counts the others), so
    # a resumed CSV is never mixed with rows measured on another subset.
    n_unreadable: int | None = None
    # The 95% interval of the median paired ratio whose value is `speedup`: how well the speedup is known (more
    # rounds narrow it; speedup_p10/p90, the scatter of single rounds, do not narrow). What figures rank by.
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None
    # Appended by issue 24: ImageNet-ReaL top-1 (--real-labels), beside top1 as timm's validate.py reports it.
    real_top1: float | None = None

    def with_environment(self, env: Environment) -> Row:
        return replace(self, **asdict(env))


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row))
# Columns that hold numbers: a cell there that is not a number (a hand edit, a spreadsheet's "n/a") is read as missing
# and recorded, never a traceback later.
NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(Row) if any(t in str(f.type) for t in ("int", "float")) and f.name != "prop_attn"
)
# Columns that identify a configuration; a CSV without them is not one of ours.
KEY_COLUMNS: tuple[str, ...] = ("model", "reducer", "r", "schedule")
