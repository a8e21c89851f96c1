"""A third-party reducer, installed as a plug-in: a module in another package named under the `tomebench.reducers`
entry point group registers itself when tomebench's reducers load, and then runs like a built-in."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_python

# The whole plug-in: ten lines a user would write in their own package.
PLUGIN = '''
from typing import Annotated
from tomebench.reducers import LayerTokens, Plan, register
from tomebench.reducers.options import Range
from tomebench.reducers.prune import keep_highest

@register("norm-prune", kind="prune", needs=("x",), source="tests/reducers/test_plugin.py")
def norm_prune(tokens: LayerTokens, r: int, power: Annotated[float, Range(0.5, 4)] = 2.0) -> Plan:
    """Drop the r tokens with the smallest feature norm."""
    return keep_highest(tokens.x[:, tokens.num_prefix_tokens:].norm(p=power, dim=-1), r, tokens.num_prefix_tokens)
'''


def install_plugin(root: Path, body: str = PLUGIN) -> Path:
    """A package `my_reducers` with its distribution metadata, as pip would leave it in site-packages."""
    (root / "my_reducers").mkdir()
    (root / "my_reducers" / "__init__.py").write_text("")
    (root / "my_reducers" / "norm_prune.py").write_text(body)
    info = root / "my_reducers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-reducers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tomebench.reducers]\nnorm-prune = my_reducers.norm_prune\n")
    return root


def test_a_plugin_reducer_is_registered_listed_and_runs(tmp_path):
    path = install_plugin(tmp_path)
    proc = run_python(
        """
        import timm, torch, tomebench
        from tomebench.reducers import PLUGIN_ERRORS, REDUCERS
        from tomebench.patch import forward_with_state
        spec = REDUCERS.get("norm-prune")
        print(spec.kind, spec.source, [o.describe() for o in spec.options], PLUGIN_ERRORS)
        model = timm.create_model("test_vit", pretrained=False).eval()
        tomebench.patch(model, "norm-prune", 4)
        with torch.no_grad():
            _, state = forward_with_state(model, torch.randn(2, 3, 160, 160))
        print(state.tokens)
    """,
        path=[path],
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    kind, rest = proc.stdout.splitlines()[0].split(" ", 1)
    assert kind == "prune" and "tests/reducers/test_plugin.py" in rest and "power=2.0 (float, 0.5..4)" in rest
    assert rest.endswith("[]")  # no plug-in failed to load
    tokens = [int(t) for t in proc.stdout.splitlines()[1].strip("()").split(",")]
    assert tokens == [101 - 4 * (i + 1) for i in range(len(tokens))]


def test_a_broken_plugin_is_reported_and_the_built_ins_still_work(tmp_path):
    path = install_plugin(tmp_path, "raise ImportError('a missing dependency of the plug-in')\n")
    proc = run_python(
        """
        from tomebench.reducers import PLUGIN_ERRORS, REDUCERS
        print(PLUGIN_ERRORS); print("tome" in REDUCERS)
    """,
        path=[path],
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    errors, tome = proc.stdout.splitlines()
    assert "norm-prune" in errors and "a missing dependency of the plug-in" in errors and tome == "True"
