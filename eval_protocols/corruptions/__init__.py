"""The 19 corruptions of Hendrycks & Dietterich (ImageNet-C / CIFAR-10-C) as batched torch ops.

`corrupt(images, "fog", 3, seed=0, indices=...)` corrupts a uint8 or float batch
(N, C, H, W) on CPU or GPU; `resolve_corruptions("noise,blur")` expands names and
families (ImageNet-C's: noise, blur, weather, digital, extra); each corruption registers
itself with `@corruption(name, family, ...)` (registry.py); `official` reads the
published pre-corrupted CIFAR-10-C / ImageNet-C files; `fidelity` measures how close the
corruptions come to the official generator.
"""

from djepa_bench.eval_protocols.corruptions.core import (
    COMMON,
    CORRUPTIONS,
    EXTRA,
    FAMILIES,
    REGISTRY,
    corrupt,
    family_of,
    resolve_corruptions,
    resolve_severities,
    substitute_of,
)
from djepa_bench.eval_protocols.corruptions.params import PARAM_SETS, resolve_param_set

__all__ = [
    "COMMON",
    "CORRUPTIONS",
    "EXTRA",
    "FAMILIES",
    "PARAM_SETS",
    "REGISTRY",
    "corrupt",
    "family_of",
    "resolve_corruptions",
    "resolve_param_set",
    "resolve_severities",
    "substitute_of",
]
