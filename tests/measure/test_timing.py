"""The timing loop's plans."""

from __future__ import annotations

import torch

from tomebench.measure.timing import LATENCY_CALLS, latency_plan


def test_latency_plan_times_single_calls(monkeypatch):
    plan = latency_plan(torch.device("cpu"))
    assert plan.repeats >= LATENCY_CALLS == 100 and plan.min_repeat_s == 0
