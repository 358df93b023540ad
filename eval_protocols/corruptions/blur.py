"""Blur corruptions: defocus, glass, motion and zoom blur."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from djepa_bench.eval_protocols.corruptions import ops
from djepa_bench.eval_protocols.corruptions.registry import corruption
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


def _cv2_gaussian_1d(ksize: int, sigma: float) -> np.ndarray:
    t = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma * sigma))
    return k / k.sum()


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The original's anti-aliased disk: a hard disk on a 17x17 (or 2r+1) grid, then
    OpenCV GaussianBlur with a 3x3 (5x5 for r > 8) kernel of sigma `alias_blur`."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        r = int(radius)
        grid, ksize = np.arange(-r, r + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    k = _cv2_gaussian_1d(ksize, alias_blur)
    pad = ksize // 2
    padded = np.pad(disk, pad, mode="reflect")  # OpenCV's default border (reflect101)
    rows = sum(k[i] * padded[i : i + disk.shape[0], :] for i in range(ksize))
    return sum(k[i] * rows[:, i : i + disk.shape[1]] for i in range(ksize))


@corruption(  # (disk radius, anti-alias sigma)
    "defocus_blur", "blur",
    cifar=[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    imagenet=[(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
)  # fmt: skip
def defocus_blur(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Filter with an anti-aliased disk of radius p[0] (OpenCV filter2D, reflect101)."""
    return ops.filter2d(x, disk_kernel(float(p[0]), float(p[1])), "reflect101")


def glass_source_map(offsets: np.ndarray, height: int, width: int, delta: int) -> np.ndarray:
    """The original's pixel "swaps" as one source index per pixel, for every image at once.

    offsets: (N, iterations, positions, 2) integers (dx, dy) in [-delta, delta), in the
    original's scan order (rows then columns from the bottom-right corner inwards). The
    original writes `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on an RGB array, where both
    sides are views, so the pixel at (h', w') is copied to (h, w) and nothing moves back;
    this replays exactly that. result[n, p] is the pixel that ends up at p.
    """
    n = offsets.shape[0]
    source = np.tile(np.arange(height * width, dtype=np.int64)[:, None], (1, n))  # (HW, N)
    cols = np.arange(n)
    positions = [
        h * width + w
        for h in range(height - delta, delta, -1)
        for w in range(width - delta, delta, -1)
    ]
    jumps = offsets[..., 1].astype(np.int64) * width + offsets[..., 0]  # (N, it, P)
    for it in range(offsets.shape[1]):
        step = jumps[:, it, :].T  # (P, N)
        for k, p in enumerate(positions):
            source[p] = source[p + step[k], cols]
    return source.T


@corruption(  # (sigma, max_delta, iterations)
    "glass_blur", "blur",
    cifar=[(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    imagenet=[(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
)  # fmt: skip
def glass_blur(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Gaussian blur, then the original's local pixel shuffling loop (exactly), then blur."""
    sigma, delta, iterations = float(p[0]), int(p[1]), int(p[2])
    n, c, h, w = x.shape
    blurred = torch.floor(ops.gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255  # np.uint8()
    positions = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    if positions == 0:
        return ops.gaussian_blur(blurred, sigma)
    offsets = rng.integers(0, -delta, delta, (iterations, positions, 2)).cpu().numpy()
    perm = torch.from_numpy(glass_source_map(offsets, h, w, delta)).to(x.device)
    shuffled = blurred.flatten(2).gather(2, perm[:, None, :].expand(n, c, h * w))
    return ops.gaussian_blur(shuffled.view(n, c, h, w), sigma)


@corruption(  # (radius, sigma) of ImageMagick's motion blur, whose 8-bit output rounds
    "motion_blur", "blur",
    cifar=[(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    imagenet=[(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    rounding="round",
)  # fmt: skip
def motion_blur(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """ImageMagick motion blur (radius, sigma) at an angle drawn from U(-45, 45) per image."""
    angle = rng.uniform(0)[:] * 90.0 - 45.0
    return ops.motion_blur(x, float(p[0]), float(p[1]), angle)


@corruption(  # zoom factors, exactly as np.arange gave them in the original
    "zoom_blur", "blur",
    cifar=[
        np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01),
    ],
    imagenet=[
        np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03),
    ],
)  # fmt: skip
def zoom_blur(x: torch.Tensor, factors: np.ndarray, rng: KeyedRandom, **_) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor."""
    out = x.clone()
    for factor in factors:
        out += ops.clipped_zoom(x, float(factor))
    return out / (len(factors) + 1)
