"""Parameter sets: which of the two severity tables (CIFAR-10-C, ImageNet-C) an image size uses.

Each corruption's severity parameters sit beside its function, in its `@corruption`
registration (see registry.py for their sources).
"""

from __future__ import annotations

from djepa_bench.errors import UserError

PARAM_SETS = ("cifar", "imagenet")
SMALL_IMAGE_MAX = 64  # images up to this size use the CIFAR set under "auto"

# Multiplier turning the elastic fractions into pixels for an image of size `s` (the
# ImageNet original multiplies by 244 for 224 px images).
ELASTIC_SCALE = {"cifar": lambda s: float(s), "imagenet": lambda s: 244.0 * s / 224.0}


def resolve_param_set(param_set: str, image_size: int) -> str:
    """'auto' -> 'cifar' for images up to 64 px, else 'imagenet'; checks the name."""
    if param_set == "auto":
        return "cifar" if image_size <= SMALL_IMAGE_MAX else "imagenet"
    if param_set not in PARAM_SETS:
        raise UserError(
            f"unknown corruption parameter set '{param_set}'; use auto, cifar or imagenet"
        )
    return param_set
