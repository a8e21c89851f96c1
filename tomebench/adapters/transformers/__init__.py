"""The transformers family: `surgery` (its blocks for the loop) and `family` (names and loading)."""

from tomebench.adapters.transformers import family, surgery  # noqa: F401  (each registers its half)
