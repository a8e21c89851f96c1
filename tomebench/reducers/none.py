"""The unpatched model's token flow: the speedup baseline every row is paired with."""

from __future__ import annotations

from tomebench.reducers.base import LayerTokens, register
from tomebench.reducers.plans import IDENTITY, Plan


def _nothing(num_tokens: int, num_prefix_tokens: int) -> int:
    return 0


@register("none", kind="none", needs=(), most=_nothing)
def none(tokens: LayerTokens, r: int) -> Plan:
    """No reduction: the unpatched model's token flow (the speedup baseline)."""
    return IDENTITY
