"""How close each corruption comes to the official generator: fixed images, mean change.

The yardstick is the mean absolute change (grey levels, 0-255) a corruption makes to 8-bit
images, per corruption and severity, against the official CIFAR-10-C / ImageNet-C
generator (github.com/hendrycks/robustness, ImageNet-C/create_c/make_{cifar,imagenet}_c.py)
run on the same images. The official numbers are in tests/data/corruption_reference.json
(its "about" says how they were made); `compare` recomputes ours and divides.

Image sets (nothing downloaded):
- photos32 / photos224: six 224 px crops of each of the two photographs scikit-learn ships,
  as they are (ImageNet-C parameters) or box-reduced to 32 px (CIFAR-10-C parameters;
  CIFAR's images are reduced photographs too);
- cifar10_test: every 20th CIFAR-10 test image (500, 50 per class), where the data is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from djepa_bench.eval_protocols.corruptions.core import corrupt

PHOTOS = ("china.jpg", "flower.jpg")  # scikit-learn's sample images, 427 x 640
CROP = 224
_TOPS = (0, 203)
_LEFTS = (0, 208, 416)
CIFAR_STRIDE = 20
BOUNDS = (0.9, 1.1)  # ours / official, required at every severity


def sample_photos(size: int = CROP) -> torch.Tensor:
    """(12, 3, size, size) uint8: six 224 px crops of each photo, box-reduced to `size`."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    crops = []
    for name in PHOTOS:
        photo = load_sample_image(name)
        for top in _TOPS:
            for left in _LEFTS:
                crop = Image.fromarray(photo[top : top + CROP, left : left + CROP])
                if size != CROP:
                    crop = crop.resize((size, size), Image.BOX)
                crops.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1))
    return torch.stack(crops)


def cifar10_test(data_root: str | Path | None) -> torch.Tensor:
    """Every 20th CIFAR-10 test image (500, uint8); UserError when the data is absent."""
    from djepa_bench.data import load_dataset

    return load_dataset("cifar10", "test", data_root).images[::CIFAR_STRIDE]


def image_set(name: str, data_root: str | Path | None = None) -> torch.Tensor:
    """The uint8 images (N, 3, H, W) of a reference image set by name."""
    if name == "photos32":
        return sample_photos(32)
    if name == "photos224":
        return sample_photos(CROP)
    if name == "cifar10_test":
        return cifar10_test(data_root)
    raise ValueError(f"unknown image set '{name}'")


def mean_change(
    images: torch.Tensor,
    corruption: str,
    severity: int,
    param_set: str,
    draws: int = 1,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> float:
    """Mean |corrupted - clean| in grey levels over `draws` independent draws per image
    (draw r of image i has dataset index r * N + i)."""
    tiled = images.repeat(draws, 1, 1, 1)
    total = 0.0
    for start in range(0, tiled.shape[0], batch_size):
        batch = tiled[start : start + batch_size].to(device)
        index = torch.arange(start, start + batch.shape[0])
        out = corrupt(batch, corruption, severity, seed=seed, indices=index, param_set=param_set)
        total += (out.float() - batch.float()).abs().sum().item()
    return total / tiled.numel()


def load_reference(path: str | Path) -> dict:
    """The reference file: {"about": ..., "sets": {name: {"param_set", "draws_per_image"
    (a number or {corruption: number}), "mean_change": {corruption: [severity 1..5]}}}}."""
    return json.loads(Path(path).read_text())


def same_trend(ours: list[float], official: list[float], tolerance: float = 0.03) -> bool:
    """Whether ours rises and falls with severity where the official does: each step the
    official takes by more than `tolerance` (relative) ours takes in the same direction."""
    for k in range(len(official) - 1):
        step, ours_step = official[k + 1] - official[k], ours[k + 1] - ours[k]
        if abs(step) > tolerance * max(official[k], official[k + 1]) and ours_step * step <= 0:
            return False
    return True


def trend_marks(values: list[float], tolerance: float = 0.03) -> str:
    """'+', '-' or '=' (within `tolerance`, relative) between consecutive severities."""
    marks = ""
    for a, b in zip(values, values[1:], strict=False):
        marks += "=" if abs(b - a) <= tolerance * max(a, b) else ("+" if b > a else "-")
    return marks


@dataclass(frozen=True)
class Fidelity:
    """One corruption on one image set: ours and the official mean change per severity."""

    corruption: str
    ours: list[float]
    official: list[float]

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours, self.official, strict=True)]

    @property
    def within(self) -> bool:
        return all(BOUNDS[0] <= r <= BOUNDS[1] for r in self.ratios)

    @property
    def trend_ok(self) -> bool:
        return same_trend(self.ours, self.official)


def reference_draws(reference: dict, corruption: str) -> int:
    """Draws per image the reference used for `corruption` (a number, or one per name)."""
    draws = reference["draws_per_image"]
    return int(draws[corruption] if isinstance(draws, dict) else draws)


def compare(
    images: torch.Tensor,
    reference: dict,
    corruptions: list[str] | None = None,
    draws: int | None = None,
    device: str | torch.device = "cpu",
) -> list[Fidelity]:
    """Ours against one reference set (`reference["sets"][name]`) on its images; `draws`
    defaults to the reference's draws per image."""
    official = reference["mean_change"]
    rows = []
    for name in corruptions or list(official):
        n = draws or reference_draws(reference, name)
        ours = [
            mean_change(images, name, s, reference["param_set"], n, device=device)
            for s in range(1, 6)
        ]
        rows.append(Fidelity(name, ours, [float(v) for v in official[name]]))
    return rows
