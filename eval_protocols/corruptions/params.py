"""Severity parameters of the 19 corruptions: the CIFAR-10-C set and the ImageNet-C set.

Sources (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019; code at github.com/hendrycks/robustness):
- CIFAR: ImageNet-C/create_c/make_cifar_c.py (the generator of CIFAR-10-C / CIFAR-100-C).
- IMAGENET: ImageNet-C/create_c/make_imagenet_c.py (the generator of ImageNet-C, 224 px).
Each table lists severities 1..5 in order; the tuple layouts are those of the original
functions and are named where each corruption reads them. Values given there in pixels
of a 32 px (CIFAR) or 224 px (ImageNet) image are kept in pixels, except the elastic
transform whose original code scales with the image size (IMSIZE=32, and 244 for 224).
"""

from __future__ import annotations

import numpy as np

from djepa_bench.errors import UserError

PARAM_SETS = ("cifar", "imagenet")
SMALL_IMAGE_MAX = 64  # images up to this size use the CIFAR set under "auto"

CIFAR: dict[str, list] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # std
    "shot_noise": [500, 250, 100, 75, 50],  # photons per unit intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # salt-and-pepper fraction
    "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],  # multiplicative std
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],  # sigma
    # (sigma, max_delta, iterations)
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    # (disk radius, anti-alias sigma)
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    # (radius, sigma) of ImageMagick's motion blur
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    # zoom factors, exactly as np.arange gave them in the original
    "zoom_blur": [
        np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01),
    ],
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    # (image weight, frost weight); the original shrinks its frost photos by 0.2 for CIFAR
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    # (fog strength, plasma decay)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    # (mean, std, sigma, threshold, intensity, mud?)
    "spatter": [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],  # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # factor about the channel mean
    # (alpha, sigma, affine jitter) as fractions of the image size (IMSIZE * ...)
    "elastic_transform": [
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # down-scale factor
    "jpeg_compression": [80, 65, 58, 50, 40],  # quality
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],  # (scale, shift) of S
}  # fmt: skip

IMAGENET: dict[str, list] = {
    "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
    "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
    "gaussian_blur": [1, 2, 3, 4, 6],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [
        np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03),
    ],
    "snow": [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "spatter": [
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ],
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
    "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
    # the original multiplies by 244 for 224 px images ("should have been 224"); kept
    "elastic_transform": [
        (2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
        (0.12, 0.01, 0.02),
    ],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
}  # fmt: skip

# Multiplier turning the elastic fractions into pixels for an image of size `s`.
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


def severity_params(corruption: str, severity: int, param_set: str):
    """The parameter entry of `corruption` at `severity` (1..5) in the named set."""
    if not 1 <= int(severity) <= 5:
        raise UserError(f"severity must be 1..5, got {severity}")
    table = CIFAR if param_set == "cifar" else IMAGENET
    return table[corruption][int(severity) - 1]
