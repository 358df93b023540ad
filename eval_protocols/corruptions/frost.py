"""Procedural frost textures (nothing downloaded): fractal haze plus dendritic ice needles.

The original corruption blends crops of frost photographs (it draws one of the first five
of its six files, and the second and third are the same photograph). These five
textures are a substitute, drawn from a fixed private seed so they are identical on every
machine: a fractal haze with feathery crystals (a stem with +-60 degree side branches,
the habit of window frost), rendered as anti-aliased line segments. Texture k then takes
the per-channel value distribution of photograph k (`PHOTO_QUANTILES`, measured once on
the originals), so the blend brightens, tints and mottles an image as much as the
original does: its mean absolute change is within 0.9-1.1 of the original's at every
severity (tests/test_corruption_fidelity.py checks it against the official numbers).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

NUM_TEXTURES = 5
SUBSTITUTE = "procedural frost textures"  # recorded as params.substitute
_TEXTURE_SEED = 20190501
# The value distribution of frost1.png .. frost5.jpg of the original
# (github.com/hendrycks/robustness, ImageNet-C/create_c): per photograph and channel
# (R, G, B), the values in [0, 1] at the cumulative fractions QUANTILE_AT, each pixel
# weighted by how many of the original's random crops cover it (crops favour a photo's
# middle); the CIFAR set's 32 px crops at 0.2 scale and the ImageNet set's 224 px crops
# at full scale give the same figures to within 0.02, and these are their mean.
QUANTILE_AT = (0.0, 0.02, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.98, 1.0)
_ICE_SHEET = (  # frost1: green-blue ice sheet
    (0.07, 0.13, 0.17, 0.21, 0.24, 0.28, 0.33, 0.39, 0.46, 0.57, 0.79),
    (0.39, 0.47, 0.50, 0.52, 0.55, 0.57, 0.60, 0.64, 0.67, 0.72, 0.89),
    (0.46, 0.54, 0.57, 0.59, 0.62, 0.64, 0.67, 0.70, 0.72, 0.77, 0.91),
)
_RIME = (  # frost2 (and frost3, the same photograph): bright rime with dark gaps
    (0.22, 0.58, 0.67, 0.72, 0.76, 0.79, 0.82, 0.84, 0.86, 0.90, 0.99),
    (0.22, 0.59, 0.68, 0.74, 0.78, 0.81, 0.83, 0.86, 0.89, 0.92, 1.00),
    (0.24, 0.62, 0.72, 0.77, 0.81, 0.84, 0.87, 0.90, 0.92, 0.96, 1.00),
)
_CRYSTALS = (  # frost4: grey-blue crystals
    (0.09, 0.32, 0.43, 0.49, 0.53, 0.57, 0.60, 0.64, 0.69, 0.80, 0.98),
    (0.12, 0.38, 0.49, 0.55, 0.59, 0.63, 0.66, 0.70, 0.75, 0.86, 1.00),
    (0.14, 0.42, 0.54, 0.59, 0.64, 0.68, 0.71, 0.76, 0.80, 0.92, 1.00),
)
_FEATHERS = (  # frost5: dark pane, bright feathers
    (0.06, 0.15, 0.22, 0.26, 0.33, 0.38, 0.44, 0.52, 0.60, 0.76, 1.00),
    (0.11, 0.19, 0.26, 0.31, 0.37, 0.43, 0.49, 0.57, 0.64, 0.79, 1.00),
    (0.15, 0.24, 0.31, 0.36, 0.42, 0.48, 0.54, 0.61, 0.69, 0.83, 1.00),
)
PHOTO_QUANTILES = (_ICE_SHEET, _RIME, _RIME, _CRYSTALS, _FEATHERS)


def texture_size(height: int, width: int) -> int:
    """Side of the square textures crops are taken from, for images of this size."""
    return max(128, max(height, width) + 96)


def _fractal(rs: np.random.RandomState, size: int) -> torch.Tensor:
    """Sum of bilinearly upsampled noise octaves, normalised to [0, 1]."""
    out = torch.zeros(size, size, dtype=torch.float64)
    for octave in range(6):
        cells = 2 ** (octave + 2)
        noise = torch.from_numpy(rs.uniform(0, 1, (1, 1, cells, cells)))
        up = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
        out += up[0, 0] * 0.55**octave
    out -= out.min()
    return out / out.max()


def _segments(rs: np.random.RandomState, size: int, scale: float) -> np.ndarray:
    """Line segments (x0, y0, x1, y1, width, brightness) of many dendritic crystals."""
    segs: list[tuple[float, ...]] = []
    crystals = int(size * size / (260 * scale * scale))
    for _ in range(crystals):
        x, y = rs.uniform(0, size, 2)
        angle = rs.uniform(0, 2 * math.pi)
        length = rs.uniform(5, 28) * scale
        bright = rs.uniform(0.45, 1.0)
        width = rs.uniform(0.45, 0.9) * scale
        dx, dy = math.cos(angle), math.sin(angle)
        segs.append((x, y, x + dx * length, y + dy * length, width, bright))
        spacing = rs.uniform(2.0, 4.0) * scale
        t = spacing
        while t < length:
            frac = 1.0 - t / length
            for side in (-1, 1):
                if rs.uniform() < 0.85:
                    b_angle = angle + side * math.radians(60 + rs.uniform(-10, 10))
                    b_len = length * 0.45 * frac * rs.uniform(0.5, 1.0)
                    bx, by = x + dx * t, y + dy * t
                    ex, ey = bx + math.cos(b_angle) * b_len, by + math.sin(b_angle) * b_len
                    segs.append((bx, by, ex, ey, width * 0.8, bright * 0.85))
            t += spacing
    return np.asarray(segs, dtype=np.float64)


def _render(segs: np.ndarray, size: int) -> torch.Tensor:
    """Brightest segment at every pixel: brightness * exp(-(distance / width)^2), each
    segment evaluated only in its bounding box."""
    canvas = np.zeros((size, size), dtype=np.float32)
    for x0, y0, x1, y1, width, bright in segs:
        reach = 3.0 * width
        c0, c1 = int(max(min(x0, x1) - reach, 0)), int(min(max(x0, x1) + reach + 1, size))
        r0, r1 = int(max(min(y0, y1) - reach, 0)), int(min(max(y0, y1) + reach + 1, size))
        if c0 >= c1 or r0 >= r1:
            continue
        py, px = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * vx + (py - y0) * vy) / max(vx * vx + vy * vy, 1e-6), 0, 1)
        d2 = (px - x0 - t * vx) ** 2 + (py - y0 - t * vy) ** 2
        value = bright * np.exp(-d2 / (width * width))
        np.maximum(canvas[r0:r1, c0:c1], value, out=canvas[r0:r1, c0:c1])
    return torch.from_numpy(canvas)


def crop_coverage(size: int, crop: int) -> torch.Tensor:
    """(size, size) fraction of the random crop positions (tops and lefts in
    [0, size - crop)) whose crop covers each texel: crops see the middle more often."""
    starts = torch.arange(max(size - crop, 1))
    line = (torch.arange(size)[:, None] >= starts) & (torch.arange(size)[:, None] < starts + crop)
    line = line.double().sum(1)
    cover = line[:, None] * line[None, :]
    return cover / cover.sum()


def _match_quantiles(value: torch.Tensor, quantiles: tuple, weight: torch.Tensor) -> torch.Tensor:
    """(3, H, W): `value` mapped through each channel's quantile function (piecewise
    linear through `quantiles` at QUANTILE_AT) by its rank weighted with `weight`, so the
    texels the crops see take that distribution while keeping the texture's pattern."""
    flat = value.flatten().double()
    order = flat.argsort()
    w = weight.flatten()[order]
    rank = torch.empty_like(flat)
    rank[order] = (w.cumsum(0) - w / 2) / w.sum()
    at = np.asarray(QUANTILE_AT)
    channels = [np.interp(rank.numpy(), at, np.asarray(q)) for q in quantiles]
    return torch.from_numpy(np.stack(channels)).float().view(3, *value.shape)


@lru_cache(maxsize=4)
def frost_textures(size: int) -> torch.Tensor:
    """(5, 3, size, size) float32 frost textures in [0, 1], fixed for a given size."""
    rs = np.random.RandomState(_TEXTURE_SEED + size)
    scale = max(1.0, size / 256)
    weight = crop_coverage(size, size - 96)  # images this size is made for (texture_size)
    out = []
    for quantiles in PHOTO_QUANTILES:
        haze = _fractal(rs, size).float()
        ice = _render(_segments(rs, size, scale), size)
        ice = (
            F.avg_pool2d(ice[None, None], 3, 1, 1, count_include_pad=False)[0, 0] * 0.5 + ice * 0.5
        )
        out.append(_match_quantiles(0.35 * haze + 0.75 * ice, quantiles, weight))
    return torch.stack(out)
