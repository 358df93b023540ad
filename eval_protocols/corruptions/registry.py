"""The corruption registry: one decorator gives a corruption its name, family and parameters.

    @corruption("fog", "weather", cifar=[...], imagenet=[...])
    def fog(x, p, rng, **_): ...

Families follow ImageNet-C's grouping (and its download archives): noise, blur, weather
(snow, frost, fog and brightness: ImageNet-C counts brightness as weather, and so do we),
digital (contrast, elastic transform, pixelate, JPEG), and extra (speckle noise, gaussian
blur, spatter, saturate: the four held-out corruptions, reported but left out of mCE).
The canonical order is the paper's: by family in that order, then in registration order.

Severity parameters (lists for severities 1..5, in the tuple layouts of the original
functions, named where each corruption reads them) come from Hendrycks & Dietterich,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR
2019, code at github.com/hendrycks/robustness:
- cifar: ImageNet-C/create_c/make_cifar_c.py (the generator of CIFAR-10-C / CIFAR-100-C);
- imagenet: ImageNet-C/create_c/make_imagenet_c.py (the generator of ImageNet-C, 224 px).
Values given there in pixels of a 32 px (CIFAR) or 224 px (ImageNet) image are kept in
pixels, except the elastic transform's, which scale with the image size as the original's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

FAMILY_ORDER = ("noise", "blur", "weather", "digital", "extra")
Family = Literal["noise", "blur", "weather", "digital", "extra"]
CorruptionFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    `apply(x, params, rng, param_set=...)` maps float images in [0, 1] to float images.
    `rounding` is how 8-bit output is made: "floor" as the original's np.uint8 of a float
    array, "round" where the original's last step is an 8-bit library call that rounds
    (ImageMagick, PIL). `substitute` names what stands in for an original ingredient that
    is not reproduced (it goes into every robustness record as params.substitute).
    """

    name: str
    family: Family
    apply: CorruptionFn
    cifar: tuple[Any, ...]
    imagenet: tuple[Any, ...]
    rounding: Literal["floor", "round"] = "floor"
    substitute: str | None = None

    def params(self, severity: int, param_set: str) -> Any:
        """The parameter entry at `severity` (1..5) of set 'cifar' or 'imagenet'."""
        table = self.cifar if param_set == "cifar" else self.imagenet
        return table[int(severity) - 1]


_REGISTRY: dict[str, Corruption] = {}


def corruption(
    name: str,
    family: Family,
    *,
    cifar: Sequence[Any],
    imagenet: Sequence[Any],
    rounding: Literal["floor", "round"] = "floor",
    substitute: str | None = None,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Register the decorated function as corruption `name` of `family`."""

    def register(fn: CorruptionFn) -> CorruptionFn:
        if name in _REGISTRY:
            raise ValueError(f"corruption '{name}' registered twice")
        if family not in FAMILY_ORDER:
            raise ValueError(f"corruption '{name}': unknown family '{family}'")
        if len(cifar) != 5 or len(imagenet) != 5:
            raise ValueError(f"corruption '{name}' needs parameters for severities 1..5")
        _REGISTRY[name] = Corruption(
            name, family, fn, tuple(cifar), tuple(imagenet), rounding, substitute
        )
        return fn

    return register


def registered() -> dict[str, Corruption]:
    """All registered corruptions in canonical order (family, then registration)."""
    order = sorted(
        enumerate(_REGISTRY.values()),
        key=lambda item: (FAMILY_ORDER.index(item[1].family), item[0]),
    )
    return {c.name: c for _, c in order}
