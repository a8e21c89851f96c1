"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def engine(monkeypatch):
    """What reaches the engine: the CLI's run replaced by a recorder (nothing is measured)."""
    from tomebench.cli import run as cli_run

    seen = {}

    def fake_run(spec, out, *rest):
        seen["spec"], seen["out"] = spec, out
        return []

    monkeypatch.setattr(cli_run, "run", fake_run)
    return seen
