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
from tomebench.reducers import REDUCERS
from tomebench.results.row import Row
from tomebench.schedule import parse_r_values


def paper_rows(path: Path) -> list[Row]:
    """The published rows of one config file; a UsageError if it has no [paper] table. A config of a reducer whose
    budget is its own knob (`reducer = "diffrate"`, `opt = ["diffrate.target=2.9"]`) names no r and may publish no
    speedup (DiffRate's README gives top-1 and GMACs): its row has the r and schedule a run of it writes."""
    options, paper = configs.load(path)
    if not paper:
        raise UsageError(f"{path} has no [paper] table of published figures")
    reducer = REDUCERS.get(str(options.get("reducer", "tome")))
    own_knob = reducer.budget is not None
    needed = ("top1_before", "top1_after") if own_knob else ("top1_before", "top1_after", "speedup")
    missing = [k for k in needed if k not in paper]
    if missing:
        raise UsageError(f"{path}: [paper] lacks {', '.join(missing)}")
    if "model" not in options:
        raise UsageError(f'{path}: a paper config names its model, e.g. model = "vit_b"')
    # A run names its model architecture.tag, or the bare architecture when weights come from --checkpoint.
    model, img_size = describe(options["model"], from_checkpoint="checkpoint" in options)
    if own_knob:
        r, schedule, reducer_options = _own_knob(reducer, options, path)
    else:
        r_values = [r for r in parse_r_values(str(options.get("r", "0"))) if r > 0]
        if len(r_values) != 1:
            raise UsageError(f"{path}: a paper config names one r > 0, got {options.get('r')!r}")
        r, schedule, reducer_options = r_values[0], "constant", None
    mae = "mae" in model or "mae" in Path(str(options.get("checkpoint", ""))).name
    prop_attn = options.get("prop_attn", reducer.prop_attn and not mae)
    where = f"published ({paper.get('device', 'unknown device')}): {paper.get('source', path.name)}"
    if "img_per_sec_before" in paper and "img_per_sec_after" in paper:
        # In the note, not in infer_samples_per_sec: that column holds what tomebench measured, and these were not.
        where += f"; {paper['img_per_sec_before']} -> {paper['img_per_sec_after']} images/s"
    if "gmacs" in paper:  # likewise not infer_gflops, which tomebench counts
        where += f"; {paper['gmacs']} GMACs"
    common = dict(
        model=model,
        infer_img_size=img_size,
        infer_batch_size=options.get("batch_size", 256),
        dtype=options.get("dtype", "fp16"),
        device=options.get("device", "cuda"),
        dataset="imagenet-val",
        device_name=paper.get("device"),
        note=where,
    )
    return [
        Row(
            reducer="none", r=0, schedule="constant", prop_attn=False, top1=paper["top1_before"], speedup=1.0, **common
        ),
        Row(
            reducer=reducer.name,
            r=r,
            schedule=schedule,
            prop_attn=prop_attn,
            reducer_options=reducer_options,
            top1=paper["top1_after"],
            speedup=paper.get("speedup"),
            **common,
        ),
    ]


def _own_knob(reducer, options: dict, path: Path) -> tuple[int, str, str | None]:
    """(r, schedule, reducer_options) a run of a reducer whose budget is its own knob writes: its options from the
    config's opt list, the tokens it asks each block to remove counted on the model built on the meta device."""
    import timm
    import torch

    from tomebench.engine.spec import nominal_r
    from tomebench.patch import layout
    from tomebench.patch.plan import NATIVE

    given = {}
    for item in options.get("opt", []):
        head, _, value = item.partition("=")
        name, _, key = head.partition(".")
        if REDUCERS.get(name.strip()).name == reducer.name:
            given[key.strip()] = _number(value.strip())
    checked = reducer.check(given)
    architecture = describe(options["model"], from_checkpoint=True)[0]
    kwargs = dict(item.split("=", 1) for item in options.get("model_kwargs", []))
    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, **kwargs)
    reducer.check(checked, layout(model))
    label = ",".join(f"{k}={v}" for k, v in reducer.canonical(checked)) or None
    if reducer.knob == "r":  # r spent the reducer's own way (PPT: r at each of its blocks): the row holds r as given
        r_values = [r for r in parse_r_values(str(options.get("r", "0"))) if r > 0]
        if len(r_values) != 1:
            raise UsageError(f"{path}: a paper config names one r > 0, got {options.get('r')!r}")
        return r_values[0], NATIVE, label
    requested = reducer.requested(0, None, reducer.defaults() | checked, layout(model))
    return nominal_r(requested), NATIVE, label


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
