"""The torchvision family: `surgery` (its blocks for the loop) and `family` (names and loading)."""

from tomebench.adapters.torchvision import family, surgery  # noqa: F401  (each registers its half)
