"""TOML run configurations: one key per command-line option, checked; flags given on the command line win.

    # configs/vit_b_r13.toml
    model = "vit_b"
    r = "0,13"          # or 13, or [0, 13]
    dtype = "fp16"
    [paper]             # published figures, for `tomebench paper-baseline` (not an option)
    top1_before = 84.57
    top1_after = 82.60
    speedup = 1.65

Values keep TOML's types; r, reducers and schedule may be lists. Unknown keys and wrong types are errors.
Relative paths are relative to the working directory, as on the command line.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

from tomebench.errors import UsageError

NUMBER = (int, float)
# option name -> accepted TOML types. The names are the CLI's, with "-" written as "_".
OPTIONS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "model_kwargs": (dict,),  # passed to timm.create_model, e.g. {global_pool = "avg"}
    "r": (str, int, list),
    "reducer": (str,),
    "reducers": (str, list),
    "match": (str,),
    "schedule": (str, list),
    "prop_attn": (bool,),
    "batch_size": (int, str, list),  # 32, "1,8,32" or [1, 8, 32]
    "compile": (bool, str),  # true (inductor's default mode), or the mode itself
    "compile_mode": (str,),
    "latency": (bool,),
    "device": (str,),
    "dtype": (str,),
    "data": (str,),
    "labels": (str,),
    "real_labels": (str,),
    "class_subset": (str,),
    "cache_data": (str,),
    "limit": (int,),
    "pretrained": (bool,),
    "checkpoint": (str,),
    "out": (str,),
    "repeats": (int,),
    "workers": (int,),
    "group_size": (int,),
    "max_retime": (int,),
    "time_budget": NUMBER,
    "executor": (str,),
    "ray_address": (str,),
    "samples": (int,),
    "target_speedup": NUMBER,
    "seed": (int,),
    "resume": (bool,),
    "overwrite": (bool,),
    "opt": (list,),
    "baseline": (str,),
    "acc_tol": NUMBER,
    "speedup_tol": NUMBER,
}
PAPER_KEYS: dict[str, tuple[type, ...]] = {
    "top1_before": NUMBER,
    "top1_after": NUMBER,
    "speedup": NUMBER,
    "img_per_sec_before": NUMBER,  # published images/s where the source gives them (the SWAG table): in the note
    "img_per_sec_after": NUMBER,
    "gmacs": NUMBER,  # published GMACs per image (DiffRate's README): in the note
    "device": (str,),
    "source": (str,),
}
PATHS = ("labels", "checkpoint", "out", "baseline", "real_labels", "cache_data")


# Options only some commands take, and which: a key another command would take is named as such.
COMMAND_OF = {
    "reducers": "compare",
    "reducer": "sweep",
    "samples": "schedules",
    "target_speedup": "schedules",
    "seed": "schedules",
}


def load(path: Path, allowed: set[str] | None = None, command: str | None = None) -> tuple[dict, dict]:
    """(options, paper) from a TOML file. `allowed` limits the option names (a command's own options; `command`
    names it in messages).

    Lists are joined the way the CLI writes them (r = [0, 13] -> "0,13"); model_kwargs stays a table.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path} is not valid TOML: {str(exc).splitlines()[0]}") from None
    paper = raw.pop("paper", {})
    if not isinstance(paper, dict):
        raise UsageError(f"--config {path}: [paper] must be a table")
    _check_types(path, paper, PAPER_KEYS, "[paper] key")
    known = OPTIONS if allowed is None else {k: v for k, v in OPTIONS.items() if k in allowed}
    for key in raw:
        if key in OPTIONS and key not in known:
            other = COMMAND_OF.get(key)
            where = (
                f"it is an option of `tomebench {other}`: run `tomebench {other} --config {path}`"
                if other
                else ("that command does not take it")
            )
            raise UsageError(f"--config {path}: unknown key {key!r} for {command or 'this command'}; {where}")
    _check_types(path, raw, known, "key")
    options = {}
    for key, value in raw.items():
        if key in ("r", "reducers", "schedule", "batch_size") and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif key == "r" and isinstance(value, int):
            value = str(value)
        elif key == "opt" and not all(isinstance(v, str) for v in value):
            raise UsageError(f'--config {path}: opt must be a list of strings like "kmeans.iters=3"')
        elif key in PATHS:
            value = Path(value).expanduser()
        elif key == "model_kwargs":
            value = [f"{k}={v}" for k, v in value.items()]  # the CLI's --model-arg form
        options[key] = value
    return options, paper


def _check_types(path: Path, values: dict, known: dict[str, tuple[type, ...]], what: str) -> None:
    for key, value in values.items():
        if key not in known:
            raise UsageError(f"--config {path}: unknown {what} {key!r} (known: {', '.join(known)})")
        types = known[key]
        # bool is an int in Python; a TOML true is not a batch size.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise UsageError(f"--config {path}: {key} must be {expected}, got {type(value).__name__} {value!r}")
