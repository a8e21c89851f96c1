"""Published figures as baseline CSVs, so `tomebench check` can hold a real run to the paper.

A config's [paper] table (top1_before, top1_after, speedup) becomes two rows with the identity a run of that
config writes: the unpatched model (top-1 before, speedup 1) and the reduced one (top-1 after, the published
speedup). Nothing is measured here; the rows say so in their note.
"""

from __future__ import annotations

from pathlib import Path

from tomebench import config as configs
from tomebench.errors import UsageError
from tomebench.models import describe
from tomebench.results.row import Row
from tomebench.schedule import parse_r_values


def paper_rows(path: Path) -> list[Row]:
    """The published rows of one config file; a UsageError if it has no [paper] table."""
    options, paper = configs.load(path)
    if not paper:
        raise UsageError(f"{path} has no [paper] table of published figures")
    missing = [k for k in ("top1_before", "top1_after", "speedup") if k not in paper]
    if missing:
        raise UsageError(f"{path}: [paper] lacks {', '.join(missing)}")
    if "model" not in options:
        raise UsageError(f'{path}: a paper config names its model, e.g. model = "vit_b"')
    r_values = [r for r in parse_r_values(str(options.get("r", "0"))) if r > 0]
    if len(r_values) != 1:
        raise UsageError(f"{path}: a paper config names one r > 0, got {options.get('r')!r}")
    # A run names its model architecture.tag, or the bare architecture when weights come from --checkpoint.
    model, img_size = describe(options["model"], from_checkpoint="checkpoint" in options)
    mae = "mae" in model or "mae" in Path(str(options.get("checkpoint", ""))).name
    prop_attn = options.get("prop_attn", not mae)
    where = f"published ({paper.get('device', 'unknown device')}): {paper.get('source', path.name)}"
    if "img_per_sec_before" in paper and "img_per_sec_after" in paper:
        # In the note, not in infer_samples_per_sec: that column holds what tomebench measured, and these were not.
        where += f"; {paper['img_per_sec_before']} -> {paper['img_per_sec_after']} images/s"
    common = dict(
        model=model,
        schedule="constant",
        infer_img_size=img_size,
        infer_batch_size=options.get("batch_size", 256),
        dtype=options.get("dtype", "fp16"),
        device=options.get("device", "cuda"),
        dataset="imagenet-val",
        device_name=paper.get("device"),
        note=where,
    )
    return [
        Row(reducer="none", r=0, prop_attn=False, top1=paper["top1_before"], speedup=1.0, **common),
        Row(
            reducer="tome",
            r=r_values[0],
            prop_attn=prop_attn,
            top1=paper["top1_after"],
            speedup=paper["speedup"],
            **common,
        ),
    ]
