"""The corruption registry and `corrupt`, the one entry point that applies a corruption."""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.corruptions import blur, digital, noise, weather
from djepa_bench.eval_protocols.corruptions.params import resolve_param_set, severity_params
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom, corruption_key

# The 15 of the ImageNet-C / CIFAR-10-C benchmark (the mCE set), then the 4 extra ones.
COMMON = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON + EXTRA

# Families used by `--corruptions noise,blur`. The paper counts brightness as weather; here
# weather is the four outdoor effects and brightness/saturate sit with the digital ones.
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "spatter"),
    "digital": (
        "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate",
    ),
}  # fmt: skip

_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "spatter": weather.spatter,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "saturate": digital.saturate,
}


def family_of(corruption: str) -> str:
    """The family (noise, blur, weather, digital) a corruption belongs to."""
    for family, names in FAMILIES.items():
        if corruption in names:
            return family
    raise UserError(f"unknown corruption '{corruption}'")


def _check_name(name: str) -> str:
    if name in _FUNCTIONS:
        return name
    choices = list(_FUNCTIONS) + list(FAMILIES) + ["all", "common", "extra"]
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `djepa-bench corruptions-grid -h`"
    raise UserError(f"unknown corruption '{name}'; {hint}")


def resolve_corruptions(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Corruption names from 'all', 'common' (the 15), 'extra', family names and names,
    comma-separated; returned in the canonical order, each once."""
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    wanted: set[str] = set()
    for token in (t.strip() for t in tokens):
        if not token:
            continue
        if token == "all":
            wanted.update(CORRUPTIONS)
        elif token == "common":
            wanted.update(COMMON)
        elif token == "extra":
            wanted.update(EXTRA)
        elif token in FAMILIES:
            wanted.update(FAMILIES[token])
        else:
            wanted.add(_check_name(token))
    if not wanted:
        raise UserError("no corruptions selected; give names, families or 'all'")
    return [name for name in CORRUPTIONS if name in wanted]


def resolve_severities(spec: str | list[int] | tuple[int, ...]) -> list[int]:
    """Severities from '1,3,5' or a list; each must be 1..5."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.isdigit() or not 1 <= int(text) <= 5:
            raise UserError(f"severity '{text}' is not one of 1, 2, 3, 4, 5")
        if int(text) not in out:
            out.append(int(text))
    if not out:
        raise UserError("no severities selected; give e.g. 1,3,5")
    return sorted(out)


def corrupt(
    images: torch.Tensor,
    corruption: str,
    severity: int,
    *,
    seed: int = 0,
    indices: torch.Tensor | None = None,
    param_set: str = "auto",
) -> torch.Tensor:
    """Apply one corruption at one severity (1..5) to a batch (N, C, H, W), C = 1 or 3.

    uint8 input (0-255) gives uint8 output (rounded); float input is taken to be in [0, 1]
    and comes back as float in [0, 1]. `indices` are the images' positions in their dataset
    (default 0..N-1): all randomness is a function of (seed, corruption, severity,
    parameter set, index), so an image is corrupted the same way in any batch. param_set:
    "auto" (CIFAR-10-C parameters up to 64 px, ImageNet-C above), "cifar" or "imagenet".
    """
    name = _check_name(corruption)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(
            f"corrupt expects images (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}"
        )
    n, _, h, w = images.shape
    chosen = resolve_param_set(param_set, max(h, w))
    params = severity_params(name, severity, chosen)
    if indices is None:
        indices = torch.arange(n)
    indices = torch.as_tensor(indices, dtype=torch.int64)
    if indices.shape != (n,):
        raise UserError(f"indices must have shape ({n},), got {tuple(indices.shape)}")
    if n == 0:
        return images.clone()
    is_uint8 = images.dtype == torch.uint8
    x = images.float() / 255.0 if is_uint8 else images.float()
    rng = KeyedRandom(corruption_key(seed, name, severity, chosen), indices, images.device)
    with torch.no_grad():
        out = _FUNCTIONS[name](x, params, rng, param_set=chosen).clamp_(0.0, 1.0)
    if is_uint8:
        return torch.round(out * 255.0).to(torch.uint8)
    return out.to(images.dtype)
