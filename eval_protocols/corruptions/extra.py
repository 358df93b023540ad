"""The four extra corruptions (ImageNet-C's held-out set, left out of mCE): speckle noise,
gaussian blur, spatter and saturate."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from djepa_bench.eval_protocols.corruptions import ops
from djepa_bench.eval_protocols.corruptions.registry import corruption
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


@corruption(  # multiplicative std
    "speckle_noise", "extra",
    cifar=[0.06, 0.1, 0.12, 0.16, 0.2], imagenet=[0.15, 0.2, 0.35, 0.45, 0.6],
)  # fmt: skip
def speckle_noise(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """x + x N(0, c^2): multiplicative noise."""
    return x + x * rng.normal(0, tuple(x.shape[1:])).to(x.device) * c


@corruption(  # sigma
    "gaussian_blur", "extra", cifar=[0.4, 0.6, 0.7, 0.8, 1.0], imagenet=[1, 2, 3, 4, 6]
)
def gaussian_blur(x: torch.Tensor, sigma: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """skimage gaussian(sigma), edge pixels repeated."""
    return ops.gaussian_blur(x, sigma)


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


# OpenCV's 5x5 chamfer mask for DIST_L2 (distanceTransform with maskSize 5): the cost of
# a step to an edge-, corner- and knight-neighbour.
CHAMFER_5 = (1.0, 1.4, 2.1969)


def chamfer_norm(dy: int, dx: int) -> float:
    """The cheapest path of CHAMFER_5 steps covering the offset (dy, dx)."""
    a, b, c = CHAMFER_5
    big, small = max(abs(dy), abs(dx)), min(abs(dy), abs(dx))
    if big >= 2 * small:
        return small * c + (big - 2 * small) * a
    return (big - small) * c + (2 * small - big) * b


def edge_distance(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """OpenCV's distanceTransform(DIST_L2, maskSize 5) to the nearest edge pixel, then
    THRESH_TRUNC at `cap`: the cheapest chamfer path (CHAMFER_5, within the image), found
    by relaxing over the 16 mask steps until nothing changes; distances are capped at
    `cap` throughout (min(cap, .) commutes with the relaxation), so at most cap + 1
    rounds. (N, 1, H, W) bool -> float32."""
    steps = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if {abs(dy), abs(dx)} in
             ({0, 1}, {1}, {1, 2})]  # fmt: skip
    top = float(cap)
    dist = torch.where(edges, 0.0, top)
    for _ in range(cap + 1):
        padded = torch.nn.functional.pad(dist, (2, 2, 2, 2), value=top)
        h, w = dist.shape[-2:]
        best = dist
        for dy, dx in steps:
            moved = padded[..., 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] + chamfer_norm(dy, dx)
            best = torch.minimum(best, moved)
        if torch.equal(best, dist):
            break
        dist = best
    return dist


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


@corruption(  # (mean, std, sigma, threshold, intensity, mud?)
    "spatter", "extra",
    cifar=[
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ],
    imagenet=[
        (0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ],
)  # fmt: skip
def spatter(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Water drops (pale turquoise, embossed edges) or mud (brown blobs)."""
    mean, std, sigma, threshold, intensity, mud = p
    n, c, h, w = x.shape
    liquid = rng.normal(0, (1, h, w), mean=mean, std=std).to(x.device)
    liquid = ops.gaussian_blur(liquid, float(sigma))
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if not mud:
        # the original's (liquid * 255).astype(np.uint8) wraps values of 256 and above
        liquid8 = torch.remainder(torch.floor(liquid * 255), 256)
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


@corruption(  # (scale, shift) of HSV saturation
    "saturate", "extra",
    cifar=[(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    imagenet=[(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
)  # fmt: skip
def saturate(x: torch.Tensor, p: tuple, rng: KeyedRandom, **_) -> torch.Tensor:
    """Scale and shift the HSV saturation channel."""
    return ops.hsv_adjust(x, lambda v: v, lambda s: (s * p[0] + p[1]).clamp(0, 1))
