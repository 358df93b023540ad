"""Corrupted 32x32 images/s: batched torch corruptions vs a per-image numpy/PIL/scipy loop.

Every one of the 19 corruptions runs at severity 3 (CIFAR-10-C parameters) on CIFAR-10
test images, once through `eval_protocols.corruptions.corrupt` on whole batches and once
through a straightforward per-image implementation written below from the original
generator (github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), with
scipy/PIL standing in for OpenCV, scikit-image and ImageMagick. Both run in the same
process on the same images; the script prints per-corruption rates, the mean absolute
change each implementation makes (a consistency check: they should be close; the frost
reference uses our procedural textures too), and the ratio of overall rates. Fidelity to
the official generator itself is benchmarks/corruption_fidelity.py.

    .venv/bin/python benchmarks/corruptions.py --data-root ../shared/data [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time
from io import BytesIO

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from djepa_bench.eval_protocols.corruptions import CORRUPTIONS, REGISTRY, corrupt
from djepa_bench.eval_protocols.corruptions.frost import frost_textures, texture_size

# --- the per-image reference (float HWC images in [0, 1], numpy RandomState) -------------


def _gaussian(x, sigma, mode="nearest", truncate=4.0):
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigma=sigmas, mode=mode, truncate=truncate)


def _clipped_zoom(img, factor):
    h = img.shape[0]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    zoom = (factor, factor, 1) if img.ndim == 3 else (factor, factor)
    img = ndimage.zoom(img[top : top + ch, top : top + ch], zoom, order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


def _motion_blur(x, radius, sigma, angle):
    """ImageMagick's motion blur as the `imagecorruptions` package re-implements it."""
    width = int(2 * math.ceil(radius) + 1)
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma * sigma))
    kernel /= kernel.sum()
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    for i in range(width):
        ox = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        oy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        rows = np.clip(np.arange(h) + oy, 0, h - 1)
        cols = np.clip(np.arange(w) + ox, 0, w - 1)
        out += kernel[i] * x[rows][:, cols]
    return out


def _rgb2hsv(rgb):
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(delta > 0, delta, 1)
    h = np.where(r == v, (g - b) / safe, 0)
    h = np.where(g == v, 2 + (b - r) / safe, h)
    h = np.where(b == v, 4 + (r - g) / safe, h)
    return np.stack([np.where(delta > 0, (h / 6) % 1, 0), s, v], -1)


def _hsv2rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [
        np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    ]
    return np.choose(i[..., None], choices)


def _plasma(mapsize, decay, rs):
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rs.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, axis=0)
        sq += np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, half:mapsize:step] = wibbled(
            dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)
        )
        m[half:mapsize:step, 0:mapsize:step] = wibbled(
            dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)
        )
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def _disk(radius, alias_blur):
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-int(radius), int(radius) + 1)
    ksize = 3 if radius <= 8 else 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(t**2) / (2 * alias_blur**2))
    k /= k.sum()
    disk = ndimage.correlate1d(disk, k, axis=0, mode="mirror")
    return ndimage.correlate1d(disk, k, axis=1, mode="mirror")


def _equalize(v):
    hist = np.bincount(v.ravel(), minlength=256)
    first = np.flatnonzero(hist)[0]
    if hist[first] == v.size:
        return np.full_like(v, first)
    cum = np.cumsum(hist) - hist[: first + 1].sum()
    lut = np.clip(np.round(cum * 255.0 / (v.size - hist[first])), 0, 255)
    return lut[v]


def ref_corrupt(img: np.ndarray, name: str, severity: int, rs: np.random.RandomState, frost_tex):
    """One uint8 HWC image -> uint8 HWC corrupted image, written out per the original code."""
    c = REGISTRY[name].params(severity, "cifar")
    if name == "pixelate":
        pil = Image.fromarray(img)
        small = pil.resize((int(32 * c), int(32 * c)), Image.BOX)
        return np.asarray(small.resize((32, 32), Image.BOX))
    if name == "jpeg_compression":
        buffer = BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=c)
        return np.asarray(Image.open(buffer))
    x = img / 255.0
    if name == "gaussian_noise":
        x = x + rs.normal(size=x.shape, scale=c)
    elif name == "shot_noise":
        x = rs.poisson(x * c) / c
    elif name == "impulse_noise":
        flipped = rs.random_sample(x.shape) < c
        salt = rs.random_sample(x.shape) < 0.5
        x = np.where(flipped, salt.astype(float), x)
    elif name == "speckle_noise":
        x = x + x * rs.normal(size=x.shape, scale=c)
    elif name == "gaussian_blur":
        x = _gaussian(x, c)
    elif name == "glass_blur":
        sigma, delta, iterations = c
        x = np.uint8(_gaussian(x, sigma) * 255)
        for _ in range(iterations):
            for h in range(32 - delta, delta, -1):
                for w in range(32 - delta, delta, -1):
                    dx, dy = rs.randint(-delta, delta, size=(2,))
                    hp, wp = h + dy, w + dx
                    x[h, w], x[hp, wp] = x[hp, wp], x[h, w]
        x = _gaussian(x / 255.0, sigma)
    elif name == "defocus_blur":
        kernel = _disk(*c)
        x = np.stack([ndimage.correlate(x[..., d], kernel, mode="mirror") for d in range(3)], -1)
    elif name == "motion_blur":
        x = _motion_blur(x, c[0], c[1], rs.uniform(-45, 45))
    elif name == "zoom_blur":
        out = np.zeros_like(x)
        for factor in c:
            out += _clipped_zoom(x, factor)
        x = (x + out) / (len(c) + 1)
    elif name == "snow":
        layer = rs.normal(size=x.shape[:2], loc=c[0], scale=c[1])
        layer = _clipped_zoom(layer, c[2])
        layer[layer < c[3]] = 0
        layer = np.floor(np.clip(layer, 0, 1) * 255) / 255
        layer = _motion_blur(layer, c[4], c[5], rs.uniform(-135, -45))[..., None]
        grey = x @ np.array([0.299, 0.587, 0.114])
        x = c[6] * x + (1 - c[6]) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
        x = x + layer + np.rot90(layer, k=2)
    elif name == "frost":
        idx = rs.randint(5)
        top, left = rs.randint(0, frost_tex.shape[1] - 32), rs.randint(0, frost_tex.shape[2] - 32)
        x = c[0] * x + c[1] * frost_tex[idx, top : top + 32, left : left + 32]
    elif name == "fog":
        top = x.max()
        x = x + c[0] * _plasma(32, c[1], rs)[:32, :32, None]
        x = x * top / (top + c[0])
    elif name == "spatter":
        liquid = _gaussian(rs.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
        liquid[liquid < c[3]] = 0
        if c[5] == 0:
            liquid8 = np.clip(np.floor(liquid * 255), 0, 255).astype(np.uint8)
            inside = liquid8 > 0
            edges = inside & ~ndimage.binary_erosion(inside, border_value=1)
            dist = (
                np.minimum(ndimage.distance_transform_edt(~edges), 20)
                if edges.any()
                else np.full(edges.shape, 20.0)
            )
            dist = np.floor(ndimage.uniform_filter(dist, 3, mode="mirror")).astype(np.uint8)
            dist = _equalize(dist)
            emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=float)
            dist = np.clip(
                np.round(ndimage.correlate(dist.astype(float), emboss, mode="mirror")), 0, 255
            )
            dist = ndimage.uniform_filter(dist, 3, mode="mirror")
            m = liquid8 * dist
            m = m / max(m.max(), 1e-12) * c[4]
            x = x + m[..., None] * np.array([175, 238, 238]) / 255.0
        else:
            m = _gaussian((liquid > c[3]).astype(float), c[4])
            m[m < 0.8] = 0
            x = x * (1 - m[..., None]) + np.array([63, 42, 20]) / 255.0 * m[..., None]
    elif name == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)
        x = (x - means) * c + means
    elif name in ("brightness", "saturate"):
        hsv = _rgb2hsv(x)
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        x = _hsv2rgb(hsv)
    elif name == "elastic_transform":
        alpha, sigma, jitter = (v * 32 for v in c)
        centre, size = 16.0, 32 // 3
        src = np.array([[centre + size] * 2, [centre + size, centre - size], [centre - size] * 2])
        dst = src + rs.uniform(-jitter, jitter, size=src.shape)
        affine = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # 2x3, src -> dst
        inverse = np.linalg.inv(np.r_[affine, [[0, 0, 1]]])
        yy, xx = np.mgrid[0:32, 0:32].astype(float)
        sx = inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]
        sy = inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]
        x = np.stack(
            [
                ndimage.map_coordinates(x[..., d], [sy, sx], order=1, mode="mirror")
                for d in range(3)
            ],
            -1,
        )
        dx = _gaussian(rs.uniform(-1, 1, size=(32, 32)), sigma, "reflect", 3) * alpha
        dy = _gaussian(rs.uniform(-1, 1, size=(32, 32)), sigma, "reflect", 3) * alpha
        x = np.stack(
            [
                ndimage.map_coordinates(x[..., d], [yy + dy, xx + dx], order=1, mode="reflect")
                for d in range(3)
            ],
            -1,
        )
    else:
        raise ValueError(name)
    scaled = np.clip(x, 0, 1) * 255
    return (np.round(scaled) if REGISTRY[name].rounding == "round" else scaled).astype(np.uint8)


# --- timing ------------------------------------------------------------------------------


def load_images(data_root: str, n: int) -> tuple[torch.Tensor, str]:
    try:
        from djepa_bench.data import load_dataset

        split = load_dataset("cifar10", "test", data_root)
        return split.images[:n], "CIFAR-10 test"
    except Exception as err:  # noqa: BLE001 - fall back to synthetic images, say so
        print(f"(CIFAR-10 not available: {err}; using smooth random 32x32 images)")
        g = torch.Generator().manual_seed(0)
        small = torch.rand(n, 3, 8, 8, generator=g)
        images = torch.nn.functional.interpolate(small, size=32, mode="bilinear")
        return (images * 255).round().to(torch.uint8), "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with CIFAR-10")
    parser.add_argument("--images", type=int, default=1024, help="images per corruption, batched")
    parser.add_argument(
        "--ref-images", type=int, default=128, help="images per corruption, per-image loop"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (numpy runs on one)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the batched path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, source = load_images(args.data_root, max(args.images, args.ref_images))
    device = torch.device(args.device)
    batched_in = images[: args.images].to(device)
    ref_in = images[: args.ref_images].permute(0, 2, 3, 1).numpy()
    frost_tex = frost_textures(texture_size(32, 32)).permute(0, 2, 3, 1).numpy().astype(np.float64)
    print(
        f"{source}: severity {args.severity}, batched {args.images} images (batch "
        f"{args.batch_size}, {device}, {args.threads} torch thread(s)) vs per-image loop "
        f"on {args.ref_images} images"
    )
    print(
        f"{'corruption':18s} {'batched/s':>10s} {'per-image/s':>11s} {'ratio':>7s}   "
        "change(batched / per-image)"
    )
    total_batched = total_ref = 0.0
    for name in CORRUPTIONS:
        corrupt(batched_in[:8], name, args.severity)  # warm caches (frost textures, tables)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outs = []
        for i in range(0, args.images, args.batch_size):
            batch = batched_in[i : i + args.batch_size]
            index = torch.arange(i, i + batch.shape[0])
            outs.append(corrupt(batch, name, args.severity, indices=index))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_batched = time.perf_counter() - start
        ours = torch.cat(outs).cpu()
        rs = np.random.RandomState(0)
        start = time.perf_counter()
        ref = np.stack([ref_corrupt(img, name, args.severity, rs, frost_tex) for img in ref_in])
        t_ref = time.perf_counter() - start
        total_batched += t_batched / args.images
        total_ref += t_ref / args.ref_images
        same = slice(0, min(args.images, args.ref_images))  # the same images for both
        change_ours = (ours[same].float() - images[same].float()).abs().mean().item()
        change_ref = np.abs(ref[same].astype(float) - ref_in[same].astype(float)).mean()
        rate_b, rate_r = args.images / t_batched, args.ref_images / t_ref
        print(
            f"{name:18s} {rate_b:10.0f} {rate_r:11.0f} {rate_b / rate_r:7.1f}x   "
            f"{change_ours:5.2f} / {change_ref:5.2f}"
        )
    overall_b, overall_r = 1 / total_batched, 1 / total_ref
    print(
        f"all 19 at severity {args.severity}: batched {overall_b:.0f} images/s, per-image "
        f"{overall_r:.0f} images/s, ratio {overall_b / overall_r:.1f}x"
    )


if __name__ == "__main__":
    main()
