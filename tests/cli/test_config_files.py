"""TOML run configurations: the bundled configs, config errors, CLI flags over config values, one real run."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import pytest
import tomllib

from tests.helpers import (
    CONFIGS,
    assert_one_line_error,
    invoke,
    read_rows,
)
from tomebench import cli
from tomebench.cli import run as cli_run
from tomebench.config import load
from tomebench.engine.spec import ReducerChoice
from tomebench.errors import UsageError
from tomebench.reducers import REDUCERS

ALL_CONFIGS = sorted(CONFIGS.glob("*.toml"))
PAPER_CONFIGS = [p for p in ALL_CONFIGS if "paper" in tomllib.loads(p.read_text())]
DEMO = CONFIGS / "demo.toml"


def command_options(command) -> set[str]:
    """The option names `_with_config` allows for a command: its parameters (less ctx) plus model_kwargs."""
    return (set(inspect.signature(command).parameters) - {"ctx"}) | {"model_kwargs"}


def write_toml(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the bundled configs


def test_the_bundled_configs_are_the_expected_set():
    assert {p.stem for p in ALL_CONFIGS} >= {"demo", "compare_vit_b", "vit_b_r13", "mae_l_r8", "vit_l384_r23"}
    assert {p.stem for p in PAPER_CONFIGS} >= {"vit_b_r13", "mae_l_r8", "vit_l384_r23"}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_for_its_command(path):
    options, paper = load(path)
    assert options["model"]
    is_compare = "reducers" in options
    command = cli.compare if is_compare else cli.sweep
    options_for_command, paper_again = load(path, allowed=command_options(command))
    assert options_for_command == options and paper_again == paper
    # And not for the other command: compare has no --reducer, sweep no --reducers.
    if is_compare:
        with pytest.raises(UsageError, match="'reducers'"):
            load(path, allowed=command_options(cli.sweep))
    # Joined the way the CLI writes it; a config of a reducer whose budget is its own knob (diffrate's target)
    # names no r.
    if "r" in options or REDUCERS.get(options.get("reducer", "tome")).budget is None:
        assert isinstance(options["r"], str)
    for key in ("out", "checkpoint", "labels", "baseline"):
        assert key not in options or isinstance(options[key], Path)


# ---------------------------------------------------------------- config errors


def test_unknown_key_is_named(tmp_path):
    path = write_toml(tmp_path, 'model = "demo"\nbatchsize = 8\n')
    with pytest.raises(UsageError, match="unknown key 'batchsize'"):
        load(path)
    path = write_toml(tmp_path, 'model = "demo"\n[paper]\ntop1 = 80.0\n', "p.toml")
    with pytest.raises(UsageError, match=r"unknown \[paper\] key 'top1'"):
        load(path)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("batch_size = 1.5", "batch_size must be int or str or list, got float 1.5"),
        ("prop_attn = 1", "prop_attn must be bool, got int 1"),
        ("r = 1.5", "r must be str or int or list, got float 1.5"),
        ("batch_size = true", "batch_size must be int or str or list, got bool True"),
        ("compile = 3", "compile must be bool or str, got int 3"),
        ('opt = ["kmeans.iters=3", 4]', "opt must be a list of strings"),
        ("paper = 3", "[paper] must be a table"),
    ],
)
def test_wrong_types_are_usage_errors(tmp_path, line, fragment):
    path = write_toml(tmp_path, f'model = "demo"\n{line}\n')
    with pytest.raises(UsageError) as info:
        load(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    path = write_toml(tmp_path, 'model = "demo\nr = 4\n')
    with pytest.raises(UsageError, match="is not valid TOML"):
        load(path)
    with pytest.raises(UsageError, match="no such file"):
        load(tmp_path / "absent.toml")
    with pytest.raises(UsageError, match="no such file"):
        load(tmp_path)  # a folder is not a config


def test_lists_are_joined_and_model_kwargs_become_model_args(tmp_path):
    path = write_toml(
        tmp_path,
        'r = [0, 8]\nreducers = ["tome", "prune"]\nschedule = [8, 4]\n'
        'out = "x/y.csv"\nmodel_kwargs = { global_pool = "avg" }\n',
    )
    options, paper = load(path)
    assert options == {
        "r": "0,8",
        "reducers": "tome,prune",
        "schedule": "8,4",
        "out": Path("x/y.csv"),
        "model_kwargs": ["global_pool=avg"],
    }
    assert paper == {}
    assert load(write_toml(tmp_path, "r = 13\n", "i.toml"))[0] == {"r": "13"}


def test_allowed_limits_the_keys(tmp_path):
    path = write_toml(tmp_path, 'model = "demo"\nreducer = "tome"\n')
    assert load(path, allowed={"model", "reducer"})[0] == {"model": "demo", "reducer": "tome"}
    with pytest.raises(UsageError, match="unknown key 'reducer'"):
        load(path, allowed=command_options(cli.compare))


# ---------------------------------------------------------------- the command line: config values and flags


def test_compare_config_reaches_the_engine(engine):
    result = invoke("compare", "--config", DEMO)
    assert result.exit_code == 0, result.output
    spec = engine["spec"]
    assert spec.model == "demo"
    assert spec.reducers == (
        ReducerChoice.of("tome"),
        ReducerChoice.of("prune", {"seed": 0}),
        ReducerChoice.of("attn-prune"),
        ReducerChoice.of("kmeans", {"iters": 5}),
    )
    assert spec.r == tuple(range(9))
    assert (spec.batch_sizes, spec.device, spec.dtype, spec.data) == ((128,), "cpu", "fp32", "demo")
    assert spec.model_args == {} and spec.limit is None and spec.pretrained is True
    assert str(engine["out"]) == "results/compare-demo.csv"


def test_flags_the_config_does_not_set_are_kept(engine):
    result = invoke("compare", "--config", DEMO, "--limit", "50", "--repeats", "3", "--no-pretrained")
    assert result.exit_code == 0, result.output
    spec = engine["spec"]
    assert (spec.limit, spec.repeats, spec.pretrained) == (50, 3, False)
    assert (spec.batch_sizes, spec.r) == ((128,), tuple(range(9)))


def test_command_line_flags_override_the_config(engine):
    assert invoke("compare", "--config", DEMO).exit_code == 0
    from_config, out = engine["spec"], engine["out"]
    result = invoke("compare", "--config", DEMO, "--batch-size", "16", "--r", "0,4")
    assert result.exit_code == 0, result.output
    assert engine["spec"] == replace(from_config, batch_sizes=16, r=(0, 4))
    assert engine["out"] == out


def test_sweep_config_with_model_kwargs(engine, tmp_path):
    path = write_toml(
        tmp_path,
        'model = "test_vit"\nmodel_kwargs = { global_pool = "avg", drop_rate = 0.0 }\nreducer = "prune"\nr = [4]\n',
    )
    result = invoke("sweep", "--config", path)
    assert result.exit_code == 0, result.output
    spec = engine["spec"]
    assert spec.model_args == {"global_pool": "avg", "drop_rate": 0.0}
    assert (spec.model, spec.reducers, spec.r) == ("test_vit", (ReducerChoice("prune"),), (4,))
    assert str(engine["out"]) == "results/sweep-test_vit.csv"


@pytest.mark.parametrize(
    ("command", "line", "key"),
    [("sweep", 'reducers = ["tome", "prune"]', "reducers"), ("compare", 'reducer = "tome"', "reducer")],
)
def test_a_key_of_the_other_command_exits_2(engine, tmp_path, command, line, key):
    path = write_toml(tmp_path, f'model = "demo"\n{line}\n')
    result = invoke(command, "--config", path)
    assert_one_line_error(result, 2, f"unknown key '{key}'")
    assert "spec" not in engine


def test_bad_config_on_the_command_line_exits_2(engine, tmp_path):
    result = invoke("sweep", "--config", tmp_path / "absent.toml")
    assert result.exit_code == 2 and "no such file" in result.output
    result = invoke("sweep", "--config", write_toml(tmp_path, "batch_size = 1.5\n"))
    assert result.exit_code == 2 and "batch_size must be int" in result.output
    assert "spec" not in engine


# ---------------------------------------------------------------- real runs


def _check_demo_csv(path: Path) -> None:
    rows = read_rows(path)
    # r=0 is measured once, as the unpatched row.
    assert [(r["reducer"], r["r"]) for r in rows] == [("none", "0"), ("tome", "2"), ("prune", "2")]
    for row in rows:
        assert row["error"] == ""
        assert (row["model"], row["dtype"], row["device"], row["infer_batch_size"]) == (
            "tomebench_demo_vit.digits",
            "fp32",
            "cpu",
            "128",
        )
        assert (row["dataset"], row["n_images"]) == ("digits-test", "360")
        assert 50.0 < float(row["top1"]) <= 100.0  # the bundled model knows its digits
    assert [int(r["tokens_final"]) for r in rows] == [65, 49, 49]


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return (
        json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    )


def test_demo_config_runs_end_to_end(tmp_path, monkeypatch):
    # configs/demo.toml with a shorter r range and two reducers, so the run stays a few seconds long.
    monkeypatch.chdir(tmp_path)
    raw = tomllib.loads(DEMO.read_text())
    raw.update(r=[0, 2], reducers=["tome", "prune"], out=str(tmp_path / "c.csv"))
    path = write_toml(tmp_path, "".join(f"{k} = {_toml_value(v)}\n" for k, v in raw.items()), "short.toml")
    result = invoke("compare", "--config", path, "--repeats", "1")
    assert result.exit_code == 0, result.output
    _check_demo_csv(tmp_path / "c.csv")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_demo_config_with_flags_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's own out (results/compare-demo.csv) must never land in the repo
    args = (
        "compare",
        "--config",
        DEMO,
        "--r",
        "0,2",
        "--repeats",
        "1",
        "--reducers",
        "tome,prune",
        "--out",
        tmp_path / "c.csv",
    )
    # The same command with the engine stubbed first: while flags lose to the config, the real run would sweep
    # every reducer over r 0..8 (about a minute) into the wrong file, so stop here instead.
    with monkeypatch.context() as patched:
        seen = {}
        patched.setattr(cli_run, "run", lambda spec, out, *rest: seen.update(spec=spec, out=out) or [])
        assert invoke(*args).exit_code == 0
        spec = seen["spec"]
        assert (spec.r, seen["out"]) == ((0, 2), tmp_path / "c.csv")
        assert [choice.name for choice in spec.reducers] == ["tome", "prune"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    _check_demo_csv(tmp_path / "c.csv")
