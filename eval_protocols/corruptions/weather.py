"""Weather corruptions: snow, frost, fog and spatter."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from djepa_bench.eval_protocols.corruptions import ops
from djepa_bench.eval_protocols.corruptions.frost import NUM_TEXTURES, frost_textures, texture_size
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


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


def fog(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Add a plasma fractal (map size: the next power of two, 32 for CIFAR, 256 for
    224 px ImageNet as the original) and rescale by the image maximum."""
    strength, decay = float(p[0]), float(p[1])
    n, _, h, w = x.shape
    mapsize = 2 ** math.ceil(math.log2(max(h, w, 2)))
    plasma = plasma_fractal(rng, mapsize, decay)[:, None, :h, :w].to(x.dtype)
    top = x.flatten(1).amax(1).view(n, 1, 1, 1)
    return (x + strength * plasma) * top / (top + strength)


# --- spatter ---------------------------------------------------------------------------

_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """out[y, x] = x[y + dy, x + dx], `fill` outside the image."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenCV's Canny (aperture 3, L1 gradient) on integer-valued (N, 1, H, W) floats.

    Sobel derivatives with replicated borders, non-maximum suppression along the gradient
    direction quantised as OpenCV does (tan 22.5 / 67.5 sectors, its strict/non-strict
    comparisons), then hysteresis: weak pixels (> low) joined to strong ones (> high)
    through 8-connected chains.
    """
    p = ops.pad2d(image, 1, 1, "nearest")
    h, w = image.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    mag = gx.abs() + gy.abs()
    ax, ay = gx.abs(), gy.abs()
    tg22 = ax * 0.4142135623730951
    tg67 = tg22 + 2 * ax
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg67)
    sign = torch.where((gx * gy) < 0, -1, 1)
    keep_h = (mag > _shift(mag, 0, -1, 0)) & (mag >= _shift(mag, 0, 1, 0))
    keep_v = (mag > _shift(mag, -1, 0, 0)) & (mag >= _shift(mag, 1, 0, 0))
    # diagonal: previous row at x - s, next row at x + s
    keep_d = torch.where(
        sign < 0,
        (mag > _shift(mag, -1, 1, 0)) & (mag > _shift(mag, 1, -1, 0)),
        (mag > _shift(mag, -1, -1, 0)) & (mag > _shift(mag, 1, 1, 0)),
    )
    keep = torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d)) & (mag > low)
    strong = keep & (mag > high)
    weak = keep & ~strong
    while True:
        grown = F.max_pool2d(strong.float(), 3, 1, 1) > 0
        grown = strong | (grown & weak)
        if torch.equal(grown, strong):
            return strong
        strong = grown


def edge_distance(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance to the nearest edge pixel, capped at `cap` (OpenCV's
    distanceTransform + THRESH_TRUNC); (N, 1, H, W) bool -> float, two separable passes."""
    h, w = edges.shape[-2:]
    big = float(cap + 1)
    col = torch.where(edges, 0.0, big)  # vertical distance to an edge in the same column
    for d in range(1, min(cap, h - 1) + 1):
        hit = torch.zeros_like(edges)
        hit[..., :-d, :] |= edges[..., d:, :]
        hit[..., d:, :] |= edges[..., :-d, :]
        col = torch.where(hit & (col == big), float(d), col)
    col2 = col * col
    dist2 = col2.clone()
    for d in range(1, min(cap, w - 1) + 1):
        dist2[..., :, :-d] = torch.minimum(dist2[..., :, :-d], col2[..., :, d:] + d * d)
        dist2[..., :, d:] = torch.minimum(dist2[..., :, d:], col2[..., :, :-d] + d * d)
    return dist2.sqrt().clamp(max=float(cap))


def _equalize_hist(v: torch.Tensor) -> torch.Tensor:
    """OpenCV equalizeHist on integer-valued (N, 1, H, W) floats in 0..255, per image."""
    n = v.shape[0]
    flat = v.reshape(n, -1).long()
    total = flat.shape[1]
    hist = torch.zeros(n, 256, dtype=torch.float64, device=v.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    first = (hist > 0).float().argmax(1, keepdim=True)
    cum = hist.cumsum(1)
    base = cum.gather(1, first)
    scale = 255.0 / (total - hist.gather(1, first)).clamp_min(1)
    lut = torch.round((cum - base) * scale).clamp(0, 255)
    single = hist.gather(1, first) == total  # one grey level: OpenCV fills with it
    lut = torch.where(single, first.to(lut.dtype).expand_as(lut), lut)
    return lut.gather(1, flat).view_as(v).to(v.dtype)


def spatter(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Water drops (pale turquoise, embossed edges) or mud (brown blobs)."""
    mean, std, sigma, threshold, intensity, mud = p
    n, c, h, w = x.shape
    liquid = rng.normal(0, (1, h, w), mean=mean, std=std).to(x.device)
    liquid = ops.gaussian_blur(liquid, float(sigma))
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if not mud:
        liquid8 = torch.floor(liquid * 255).clamp(0, 255)
        edges = canny(liquid8, 50, 150)
        dist = edge_distance(edges, 20)
        dist = torch.floor(ops.box_blur3(dist))
        dist = _equalize_hist(dist)
        dist = torch.round(ops.filter2d(dist, _EMBOSS, "reflect101")).clamp(0, 255)
        dist = ops.box_blur3(dist)
        m = liquid8 * dist
        top = m.flatten(1).amax(1).clamp_min(1e-12).view(n, 1, 1, 1)
        m = m / top * intensity
        water = ops.colour((175 / 255, 238 / 255, 238 / 255), c, x)
        return x + m * water
    m = (liquid > threshold).to(x.dtype)
    m = ops.gaussian_blur(m, float(intensity))
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    brown = ops.colour((63 / 255, 42 / 255, 20 / 255), c, x)
    return x * (1 - m) + brown * m
