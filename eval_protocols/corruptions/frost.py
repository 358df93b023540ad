"""Procedural frost textures (nothing downloaded): fractal haze plus dendritic ice needles.

The original corruption blends crops of frost photographs (it draws one of the first five
of its six files, and the second and third are the same photograph). These five
textures are a substitute, drawn from a fixed private seed so they are identical on every
machine: a fractal haze with feathery crystals (a stem with +-60 degree side branches,
the habit of window frost), rendered as anti-aliased line segments. Texture k is then
given the per-channel mean and spread of photograph k (`PHOTO_STATS`, measured once on
the originals), so the blend brightens, tints and mottles an image as much as the
original does: its mean absolute change is within 0.9-1.1 of the original's at every
severity (tests/test_corruptions.py checks it against the official generator's numbers).
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
# Per-channel (R, G, B) mean and standard deviation, in [0, 1], of frost1.png ..
# frost5.jpg of the original (github.com/hendrycks/robustness, ImageNet-C/create_c).
PHOTO_STATS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),  # green-blue ice sheet
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),  # bright rime
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),  # (the same photograph again)
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),  # grey-blue crystals
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),  # dark pane, bright feathers
)


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


@lru_cache(maxsize=4)
def frost_textures(size: int) -> torch.Tensor:
    """(5, 3, size, size) float32 frost textures in [0, 1], fixed for a given size."""
    rs = np.random.RandomState(_TEXTURE_SEED + size)
    scale = max(1.0, size / 256)
    out = []
    for mean, std in PHOTO_STATS:
        haze = _fractal(rs, size).float()
        ice = _render(_segments(rs, size, scale), size)
        ice = (
            F.avg_pool2d(ice[None, None], 3, 1, 1, count_include_pad=False)[0, 0] * 0.5 + ice * 0.5
        )
        value = 0.35 * haze + 0.75 * ice
        z = (value - value.mean()) / value.std()
        colour = torch.tensor(mean).view(3, 1, 1) + torch.tensor(std).view(3, 1, 1) * z
        out.append(colour.clamp(0, 1))
    return torch.stack(out)
