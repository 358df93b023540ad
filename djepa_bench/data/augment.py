"""Batched tensor augmentations that run on the model's device (no per-image PIL work)."""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Random-resized-crop boxes (n, 4) as x1, y1, x2, y2 in pixels, sampled on the CPU.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio) as torchvision's
    RandomResizedCrop; sides are clipped to the image instead of re-sampled, so one draw
    per image keeps the batch vectorised.
    """
    area = height * width * torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(1, width)
    h = torch.sqrt(area / aspect).clamp(1, height)
    x1 = torch.rand(n, generator=generator) * (width - w)
    y1 = torch.rand(n, generator=generator) * (height - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def random_resized_crop(
    images: torch.Tensor,
    out_size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box from each float image and resize it to out_size (bilinear)."""
    n, _, height, width = images.shape
    boxes = sample_crop_boxes(n, height, width, scale, ratio, generator)
    # One bilinear sample per output pixel is exact when upsampling; average more points per
    # output pixel only when a crop is larger than the output (downsampling).
    largest = float((boxes[:, 2:] - boxes[:, :2]).max())
    sampling_ratio = max(1, math.ceil(largest / out_size))
    rois = torch.cat([torch.arange(n, dtype=boxes.dtype)[:, None], boxes], 1)
    rois = rois.to(device=images.device, dtype=images.dtype)
    return roi_align(images, rois, out_size, 1.0, sampling_ratio=sampling_ratio, aligned=True)


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p, in place; returns `images`."""
    flip = (torch.rand(images.shape[0], generator=generator) < p).nonzero().squeeze(1)
    flip = flip.to(images.device)
    images[flip] = images[flip].flip(-1)
    return images


def to_normalised_float(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (0-255) -> float, normalised per channel with (mean, std) given on the 0-1 scale."""
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, -1, 1, 1)
    # (x / 255 - mean) / std as one fused multiply-add.
    return torch.addcmul(-mean_t / std_t, images.float(), 1.0 / (255.0 * std_t))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float images to size x size (bilinear, antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
