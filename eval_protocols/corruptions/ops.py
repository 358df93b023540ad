"""Batched image operations the corruptions share: padded filters, resampling, colour helpers.

All work on float images (N, C, H, W) in [0, 1]. Separable filters and resampling are
small matrix products per image; 2-D kernels are sums of shifted slices rather than
conv2d, so every image's result is the same whatever batch it is in (convolution kernels
may pick different algorithms for different batch sizes).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as OpenCV's RGB2GRAY
_DIRECT_TAPS_MAX = 121  # 2-D kernels with more taps go through conv2d


def pad_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Source index of every padded position along one axis of length n.

    mode: "nearest" (edge repeated), "reflect101" (d c b | a b c d: OpenCV's default and
    numpy's "reflect"), "symmetric" (b a | a b: scipy.ndimage's "reflect").
    """
    idx = np.arange(-before, n + after)
    if mode == "nearest":
        idx = np.clip(idx, 0, n - 1)
    elif mode == "reflect101":
        period = 2 * (n - 1) if n > 1 else 1
        idx = np.abs(idx) % period
        idx = np.where(idx >= n, period - idx, idx)
    elif mode == "symmetric":
        period = 2 * n
        idx = idx % period
        idx = np.where(idx >= n, period - 1 - idx, idx)
    else:
        raise ValueError(f"unknown pad mode {mode}")
    return torch.from_numpy(idx.astype(np.int64))


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by (pad_h, pad_w) on each side with an index-based mode."""
    h, w = x.shape[-2:]
    if pad_h:
        x = x.index_select(-2, pad_index(h, pad_h, pad_h, mode).to(x.device))
    if pad_w:
        x = x.index_select(-1, pad_index(w, pad_w, pad_w, mode).to(x.device))
    return x


@lru_cache(maxsize=256)
def _filter_matrix(n: int, weights: tuple[float, ...], mode: str) -> np.ndarray:
    """(n, n) matrix of a 1-D correlation with border handling `mode`."""
    r = len(weights) // 2
    source = pad_index(n, r, r, mode).numpy()
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for t, w in enumerate(weights):
            m[i, source[i + t]] += w
    return m


def filter_matrix(n: int, weights, mode: str, like: torch.Tensor) -> torch.Tensor:
    """The 1-D filter as a matrix on `like`'s device and dtype."""
    m = _filter_matrix(n, tuple(float(w) for w in weights), mode)
    return torch.as_tensor(m, dtype=like.dtype, device=like.device)


def left_mul(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """m @ x over the last two dims as one large GEMM ((x^T m^T)^T) rather than N*C tiny ones."""
    return (x.transpose(-1, -2) @ m.T).transpose(-1, -2)


def apply_separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows @ x @ cols^T for every image and channel (contiguous result)."""
    return left_mul(rows, x @ cols.T).contiguous()


def separable_filter(x: torch.Tensor, weights, mode: str) -> torch.Tensor:
    """Apply the same 1-D kernel along H and W, as two matrix products."""
    h, w = x.shape[-2:]
    return apply_separable(
        x, filter_matrix(h, weights, mode, x), filter_matrix(w, weights, mode, x)
    )


def gaussian_weights(sigma: float, truncate: float = 4.0) -> list[float]:
    """scipy.ndimage.gaussian_filter1d's kernel: radius int(truncate*sigma + 0.5)."""
    if sigma <= 0:
        return [1.0]
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).tolist()


def gaussian_blur(
    x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """skimage.filters.gaussian (defaults: mode 'nearest', truncate 4) on every channel."""
    return separable_filter(x, gaussian_weights(sigma, truncate), mode)


def filter2d(x: torch.Tensor, kernel: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """Correlate every channel with a 2-D kernel (OpenCV filter2D, zero rows trimmed)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    rows = np.flatnonzero(np.abs(kernel).sum(1) > 0)
    cols = np.flatnonzero(np.abs(kernel).sum(0) > 0)
    # trim symmetrically so the anchor stays at the centre
    ry = max(kernel.shape[0] // 2 - rows.min(), rows.max() - kernel.shape[0] // 2)
    rx = max(kernel.shape[1] // 2 - cols.min(), cols.max() - kernel.shape[1] // 2)
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    kernel = kernel[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1]
    h, w = x.shape[-2:]
    xp = pad2d(x, ry, rx, mode)
    if kernel.size > _DIRECT_TAPS_MAX:
        n, c = x.shape[:2]
        weight = torch.as_tensor(kernel, dtype=x.dtype, device=x.device)[None, None]
        out = F.conv2d(xp.reshape(n * c, 1, *xp.shape[-2:]), weight)
        return out.view(n, c, h, w)
    out = torch.zeros_like(x)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            if kernel[dy, dx] != 0:
                out = out + xp[..., dy : dy + h, dx : dx + w] * float(kernel[dy, dx])
    return out


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """OpenCV blur(ksize=(3, 3)): mean over 3x3, border reflect101."""
    return separable_filter(x, (1 / 3, 1 / 3, 1 / 3), "reflect101")


@lru_cache(maxsize=256)
def _zoom_matrix(n: int, factor: float) -> np.ndarray:
    """(n, n) matrix of the original clipped_zoom along one axis: centre crop of
    ceil(n / factor), scipy zoom (order 1, corner-aligned) to round(crop * factor), trim."""
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    size = int(round(crop * factor))
    trim = (size - n) // 2
    m = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        pos = (i + trim) * (crop - 1) / (size - 1) if size > 1 else 0.0
        lo = min(int(math.floor(pos)), crop - 1)
        frac = pos - lo
        m[i, top + lo] += 1.0 - frac
        if frac > 0:
            m[i, top + min(lo + 1, crop - 1)] += frac
    return m


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by `factor` keeping the size (scipy zoom order=1 + centre trim)."""
    h, w = x.shape[-2:]
    zh = torch.as_tensor(_zoom_matrix(h, float(factor)), dtype=x.dtype, device=x.device)
    zw = torch.as_tensor(_zoom_matrix(w, float(factor)), dtype=x.dtype, device=x.device)
    return apply_separable(x, zh, zw)


def motion_blur(
    x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor
) -> torch.Tensor:
    """ImageMagick's MotionBlurImage: a one-sided Gaussian-weighted line blur per image.

    Kernel width 2*ceil(radius)+1, weights exp(-i^2 / 2 sigma^2), tap i sampled at
    (ceil(i cos a - 0.5), ceil(i sin a - 0.5)) with edge pixels repeated, as the original
    code's wand call and the `imagecorruptions` re-implementation of it. Taps whose
    weight is below 1e-7 are skipped (they cannot change an 8-bit value).
    """
    n, c, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(i**2) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    reach = int(np.flatnonzero(kernel >= 1e-7).max())
    pad = reach
    padded = x.index_select(-2, pad_index(h, pad, pad, "nearest").to(x.device))
    padded = padded.index_select(-1, pad_index(w, pad, pad, "nearest").to(x.device))
    pw = w + 2 * pad
    flat = padded.reshape(n, c, -1)
    rad = torch.deg2rad(angle_deg.to(torch.float64)).cpu()
    base = ((torch.arange(h)[:, None] + pad) * pw + torch.arange(w)[None, :] + pad).view(
        1, -1
    )  # (1, H*W) positions in the padded image
    out = None
    for tap in range(reach + 1):
        ox = torch.ceil(tap * torch.cos(rad) - 0.5).to(torch.int64)
        oy = torch.ceil(tap * torch.sin(rad) - 0.5).to(torch.int64)
        index = (base + (oy * pw + ox)[:, None]).to(x.device)
        term = flat.gather(2, index[:, None, :].expand(n, c, h * w)) * float(kernel[tap])
        out = term if out is None else out.add_(term)
    return out.view(n, c, h, w)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W) of RGB images, or the image itself when it has one channel."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def colour(rgb: tuple[float, float, float], channels: int, like: torch.Tensor) -> torch.Tensor:
    """A colour as a (1, C, 1, 1) tensor; its luma for one-channel images."""
    if channels == 1:
        rgb = (sum(c * w for c, w in zip(rgb, LUMA, strict=True)),)
    return torch.tensor(rgb, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def hsv_adjust(x: torch.Tensor, value_fn, saturation_fn) -> torch.Tensor:
    """Change HSV value and saturation with hue fixed, as skimage rgb2hsv -> hsv2rgb.

    With v = max, s = (max - min) / max, each channel is v (1 - s w) where w = (v - x) /
    (v - min) depends on hue only, so the round trip reduces to recombining new v, s with
    the same w. One-channel images have s = 0 and are handled as grey RGB.
    """
    if x.shape[1] == 1:
        rgb = x.expand(-1, 3, -1, -1)
        return grey(hsv_adjust(rgb, value_fn, saturation_fn))
    v = x.amax(1, keepdim=True)
    lo = x.amin(1, keepdim=True)
    delta = v - lo
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    # grey pixels have hue 0 in skimage: (v, v(1-s), v(1-s)) once saturation is added
    grey_w = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    w = torch.where(delta > 0, (v - x) / delta.clamp_min(1e-12), grey_w)
    v2 = value_fn(v)
    s2 = saturation_fn(s)
    return v2 * (1.0 - s2 * w)


@lru_cache(maxsize=16)
def box_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """PIL's BOX resampling as a (size_out, size_in) matrix (ImagingResample's coefficients)."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    out = np.zeros((size_out, size_in), dtype=np.float64)
    for xx in range(size_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), size_in)
        for x in range(xmin, xmax):
            t = (x - center + 0.5) / filterscale
            out[xx, x] = 1.0 if -0.5 <= t < 0.5 else 0.0
        total = out[xx].sum()
        if total > 0:
            out[xx] /= total
    return out
