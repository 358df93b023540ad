"""`corrupt`, the one entry point that applies a corruption, and name/severity resolution.

The corruptions register themselves with `@corruption(name, family, ...)`, one module per
family (noise.py, blur.py, weather.py, digital.py, extra.py, imported here); the tuples
below are read from that registry.
"""

from __future__ import annotations

import difflib

import torch

from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.corruptions import (  # noqa: F401 (they register)
    blur,
    digital,
    extra,
    noise,
    weather,
)
from djepa_bench.eval_protocols.corruptions.params import resolve_param_set
from djepa_bench.eval_protocols.corruptions.registry import FAMILY_ORDER, Corruption, registered
from djepa_bench.eval_protocols.corruptions.rng import KeyedRandom, corruption_key

REGISTRY: dict[str, Corruption] = registered()
CORRUPTIONS = tuple(REGISTRY)
# The 15 of the ImageNet-C / CIFAR-10-C benchmark (the mCE set), then the 4 extra ones.
COMMON = tuple(name for name, c in REGISTRY.items() if c.family != "extra")
EXTRA = tuple(name for name, c in REGISTRY.items() if c.family == "extra")
# ImageNet-C's grouping, used by `--corruptions noise,blur` and recorded as params.family.
FAMILIES: dict[str, tuple[str, ...]] = {
    family: tuple(name for name, c in REGISTRY.items() if c.family == family)
    for family in FAMILY_ORDER
}


def family_of(corruption: str) -> str:
    """The family (noise, blur, weather, digital or extra) of a corruption, as ImageNet-C
    groups them (brightness is weather)."""
    if corruption not in REGISTRY:
        raise UserError(f"unknown corruption '{corruption}'")
    return REGISTRY[corruption].family


def substitute_of(corruption: str) -> str | None:
    """What stands in for an ingredient of the original corruption, or None."""
    return REGISTRY[corruption].substitute if corruption in REGISTRY else None


def _check_name(name: str) -> str:
    if name in REGISTRY:
        return name
    choices = list(REGISTRY) + list(FAMILIES) + ["all", "common"]
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
        elif token in FAMILIES:  # including "extra"
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

    uint8 input (0-255) gives uint8 output, truncated as the original's np.uint8 of a
    float array (rounded where its last step is an 8-bit library call that rounds: motion
    blur, pixelate), as the published CIFAR-10-C arrays were made; float input is taken
    to be in [0, 1] and comes back as float in [0, 1], unquantised. `indices` are the
    images' positions in their dataset (default 0..N-1): all randomness is a function of
    (seed, corruption, severity, parameter set, index), so an image is corrupted the same
    way in any batch. param_set: "auto" (CIFAR-10-C parameters up to 64 px, ImageNet-C
    above), "cifar" or "imagenet".
    """
    name = _check_name(corruption)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(
            f"corrupt expects images (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}"
        )
    n, _, h, w = images.shape
    if not 1 <= int(severity) <= 5:
        raise UserError(f"severity must be 1..5, got {severity}")
    chosen = resolve_param_set(param_set, max(h, w))
    entry = REGISTRY[name]
    params = entry.params(severity, chosen)
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
        out = entry.apply(x, params, rng, param_set=chosen).clamp_(0.0, 1.0)
    if is_uint8:
        scaled = out * 255.0
        levels = torch.round(scaled) if entry.rounding == "round" else torch.floor(scaled)
        return levels.to(torch.uint8)
    return out.to(images.dtype)
