"""What the regression gate compares and how far each metric may move: the metrics and the tolerances, without
pandas, so the command line can check them before importing anything heavy."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tomebench.errors import UsageError


@dataclass(frozen=True)
class Metric:
    column: str
    higher_is_better: bool
    relative: bool  # tolerance as a fraction of the baseline (else absolute, in the column's unit)


METRICS = {
    "top1": Metric("top1", True, False),
    "top5": Metric("top5", True, False),
    "speedup": Metric("speedup", True, True),
    "gflops": Metric("infer_gflops", False, True),
    "tokens": Metric("tokens_final", False, False),
}
DEFAULT_METRICS = ("top1", "top5", "speedup", "gflops", "tokens")


@dataclass(frozen=True)
class Tolerances:
    """How far a metric may move the wrong way before it is a regression."""

    acc: float = 0.1  # top-1/top-5 points: 50 images of ImageNet-val; fp32 CPU accuracy reproduces exactly
    speedup: float = 0.10  # relative: the p10-p90 spread a quiet machine shows
    gflops: float = 0.001  # relative: the flop count is deterministic; this only absorbs CSV rounding
    tokens: float = 0.0

    def __post_init__(self) -> None:
        # NaN compares false with everything, so a NaN tolerance would pass any change; a negative one fails all.
        for flag, value in (
            ("--acc-tol", self.acc),
            ("--speedup-tol", self.speedup),
            ("--gflops-tol", self.gflops),
            ("tokens tolerance", self.tokens),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"{flag} must be a finite number >= 0, got {value}")

    def for_metric(self, name: str) -> float:
        return {"top1": self.acc, "top5": self.acc, "speedup": self.speedup, "gflops": self.gflops}.get(
            name, self.tokens
        )
