"""The timm family: `surgery` (timm's Block/Attention for the loop) and `family` (names and loading)."""

from tomebench.adapters.timm import family, surgery  # noqa: F401  (each registers its half)
from tomebench.adapters.timm.family import ALIASES, resolve_name

__all__ = ["ALIASES", "resolve_name"]
