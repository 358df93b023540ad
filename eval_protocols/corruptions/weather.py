"""Weather corruptions (ImageNet-C's grouping): snow, frost, fog and brightness."""

from __future__ import annotations

import math

import torch

from djepa_bench.eval_protocols.corruptions import ops
from djepa_bench.eval_protocols.corruptions.frost import (
    NUM_TEXTURES,
    SUBSTITUTE,
    frost_textures,
    texture_size,
)
from djepa_bench.eval_protocols.corruptions.registry import corruption
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


@corruption(  # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    "snow", "weather",
    cifar=[
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    imagenet=[
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ],
)  # fmt: skip
def snow(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Zoomed, thresholded noise flakes, motion-blurred, over a brightened image."""
    mean, std, zoom, threshold, radius, sigma, weight = p
    n, _, h, w = x.shape
    layer = rng.normal(0, (1, h, w), mean=mean, std=std).to(x.device)
    layer = ops.clipped_zoom(layer, float(zoom))
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # PNG round trip of the original
    angle = rng.uniform(1) * 90.0 - 135.0
    layer = torch.round(ops.motion_blur(layer, float(radius), float(sigma), angle) * 255) / 255
    lit = torch.maximum(x, ops.grey(x) * 1.5 + 0.5)
    x = weight * x + (1 - weight) * lit
    return x + layer + layer.flip(-1, -2)


@corruption(  # (image weight, frost weight)
    "frost", "weather",
    cifar=[(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    imagenet=[(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    substitute=SUBSTITUTE,
)  # fmt: skip
def frost(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """c0 x + c1 frost, the frost a random crop of one of five procedural textures."""
    n, c, h, w = x.shape
    size = texture_size(h, w)
    textures = frost_textures(size).to(x.device, x.dtype)
    if c == 1:
        textures = ops.grey(textures)
    pick = rng.integers(0, 0, NUM_TEXTURES).tolist()
    top = rng.integers(1, 0, size - h).tolist()
    left = rng.integers(2, 0, size - w).tolist()
    crop = torch.stack(
        [textures[k, :, t : t + h, c0 : c0 + w] for k, t, c0 in zip(pick, top, left, strict=True)]
    )
    return p[0] * x + p[1] * crop


def plasma_fractal(rng: KeyedRandom, mapsize: int, decay: float) -> torch.Tensor:
    """(N, mapsize, mapsize) diamond-square height maps in [0, 1], the original's algorithm
    (one keyed draw of mapsize^2 - 1 uniforms per image, consumed step by step)."""
    n = len(rng.indices)
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=rng.device)
    uniforms = rng.uniform(0, (mapsize * mapsize - 1,)).to(torch.float64)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        nonlocal used
        count = total[0].numel()
        u = uniforms[:, used : used + count].view_as(total)
        used += count
        return total / 4 + wibble * (2 * u - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + dr.roll(1, 1) + ul + ul.roll(-1, 2)
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(lt)
        tt = dr + dr.roll(1, 2) + ul + ul.roll(-1, 1)
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)
        step //= 2
        wibble /= decay
    flat = m.view(n, -1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / flat.amax(1, keepdim=True)).view(n, mapsize, mapsize)


@corruption(  # (fog strength, plasma decay)
    "fog", "weather",
    cifar=[(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    imagenet=[(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
)  # fmt: skip
def fog(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Add a plasma fractal (map size: the next power of two, 32 for CIFAR, 256 for
    224 px ImageNet as the original) and rescale by the image maximum."""
    strength, decay = float(p[0]), float(p[1])
    n, _, h, w = x.shape
    mapsize = 2 ** math.ceil(math.log2(max(h, w, 2)))
    plasma = plasma_fractal(rng, mapsize, decay)[:, None, :h, :w].to(x.dtype)
    top = x.flatten(1).amax(1).view(n, 1, 1, 1)
    return (x + strength * plasma) * top / (top + strength)


@corruption(  # added to HSV value
    "brightness", "weather",
    cifar=[0.05, 0.1, 0.15, 0.2, 0.3], imagenet=[0.1, 0.2, 0.3, 0.4, 0.5],
)  # fmt: skip
def brightness(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """Add c to the HSV value channel."""
    return ops.hsv_adjust(x, lambda v: (v + c).clamp(0, 1), lambda s: s)
