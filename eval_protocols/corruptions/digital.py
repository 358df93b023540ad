"""Digital corruptions: contrast, elastic transform, pixelate and JPEG compression."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from djepa_bench.eval_protocols.corruptions import ops
from djepa_bench.eval_protocols.corruptions.params import ELASTIC_SCALE
from djepa_bench.eval_protocols.corruptions.registry import corruption
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom


@corruption(  # factor about the channel mean
    "contrast", "digital",
    cifar=[0.75, 0.5, 0.4, 0.3, 0.15], imagenet=[0.4, 0.3, 0.2, 0.1, 0.05],
)  # fmt: skip
def contrast(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """Shrink each channel towards its spatial mean by factor c."""
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """OpenCV getAffineTransform for batches: (N, 3, 2) point pairs -> (N, 3, 3) matrices."""
    ones = torch.ones(*src.shape[:-1], 1, dtype=src.dtype)
    a = torch.linalg.solve(torch.cat([src, ones], -1), dst)  # (N, 3, 2): [x y 1] @ a = dst
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=src.dtype).expand(src.shape[0], 1, 3)
    return torch.cat([a.transpose(1, 2), bottom], 1)


# (alpha, sigma, affine jitter) as fractions of the image size; the ImageNet original
# multiplies by 244 for 224 px images ("should have been 224"), kept (see ELASTIC_SCALE)
@corruption(
    "elastic_transform", "digital",
    cifar=[
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ],
    imagenet=[
        (2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
        (0.12, 0.01, 0.02),
    ],
)  # fmt: skip
def elastic_transform(
    x: torch.Tensor, p: tuple, rng: KeyedRandom, param_set: str = "cifar", **_
) -> torch.Tensor:
    """Random affine warp (reflect101 border) then a smoothed random displacement field
    (scipy map_coordinates, order 1, mode 'reflect'), the original's two resamplings."""
    n, c, h, w = x.shape
    scale = ELASTIC_SCALE[param_set](h)
    alpha, sigma, jitter = (float(v) * scale for v in p)
    # random affine: three points around the centre, each moved by U(-jitter, jitter)
    cx, cy, size = float(w // 2), float(h // 2), float(min(h, w) // 3)
    src = torch.tensor(
        [[cx + size, cy + size], [cx + size, cy - size], [cx - size, cy - size]],
        dtype=torch.float64,
    ).expand(n, 3, 2)
    moved = src + (rng.uniform(0, (3, 2)).to(torch.float64).cpu() * 2 - 1) * jitter
    inverse = torch.linalg.inv(_affine_from_points(src, moved))  # dst pixel -> src pixel
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    source = (points @ inverse.transpose(1, 2))[..., :2].view(n, h, w, 2)
    # align_corners=True + reflection is OpenCV's reflect101 about the edge pixel centres
    grid = source / torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=torch.float64) * 2 - 1
    warped = F.grid_sample(
        x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode="reflection",
        align_corners=True,
    )  # fmt: skip
    # displacement fields: U(-1, 1) smoothed by a Gaussian (truncate 3, mode 'reflect')
    fields = rng.uniform(1, (2, h, w)).to(x.device) * 2 - 1
    if sigma > 0:
        fields = ops.gaussian_blur(fields, sigma, mode="symmetric", truncate=3.0)
    dx, dy = fields[:, 0] * alpha, fields[:, 1] * alpha
    col = xs.to(x.device, x.dtype) + dx
    row = ys.to(x.device, x.dtype) + dy
    # align_corners=False + reflection is scipy's half-sample symmetric 'reflect'
    grid = torch.stack([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1], -1)
    return F.grid_sample(
        warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


@corruption(  # down-scale factor; PIL's resize rounds to 8 bits
    "pixelate", "digital",
    cifar=[0.95, 0.9, 0.85, 0.75, 0.65], imagenet=[0.6, 0.5, 0.4, 0.3, 0.25],
    rounding="round",
)  # fmt: skip
def pixelate(x: torch.Tensor, c: float, rng: KeyedRandom, **_) -> torch.Tensor:
    """PIL BOX resize down by c then back up, as one linear map per axis."""
    h, w = x.shape[-2:]

    def axis(size: int) -> torch.Tensor:
        small = max(int(size * c), 1)
        m = ops.box_resize_matrix(small, size) @ ops.box_resize_matrix(size, small)
        return torch.as_tensor(m, dtype=x.dtype, device=x.device)

    return ops.apply_separable(x, axis(h), axis(w))


@corruption(  # quality
    "jpeg_compression", "digital", cifar=[80, 65, 58, 50, 40], imagenet=[25, 18, 15, 10, 7]
)
def jpeg_compression(x: torch.Tensor, quality: int, rng: KeyedRandom, **_) -> torch.Tensor:
    """Encode and decode with libjpeg through torchvision (on the CPU, so every device
    gives the same bytes)."""
    images = torch.round(x.detach().clamp(0, 1) * 255).to("cpu", torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 flags its image codecs as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(images), quality=int(quality))
        decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
    return (torch.stack(decoded).to(x.device, x.dtype)) / 255.0
