"""On-disk cache of decoded uint8 image tensors, and the default data/cache folders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from djepa_bench.io import atomic_torch_save, safe_torch_load


def default_cache_dir() -> Path:
    """$DJEPA_CACHE_DIR, else ~/.cache/djepa-bench."""
    return Path(os.environ.get("DJEPA_CACHE_DIR", Path.home() / ".cache" / "djepa-bench"))


def default_data_root() -> Path:
    """$DJEPA_DATA_ROOT, else <cache dir>/data."""
    env = os.environ.get("DJEPA_DATA_ROOT")
    return Path(env) if env else default_cache_dir() / "data"


def cache_key(*parts: object) -> str:
    """A short stable hash of the parts (file lists, sizes, settings)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def tensor_cache_path(cache_dir: Path, name: str, split: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cache_dir / "tensors" / f"{safe}-{split}-{key}.pt"


def load_cached(path: Path) -> dict | None:
    """Return the cached dict at `path`, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        data = safe_torch_load(path)
    except Exception:  # a truncated or stale file is simply rebuilt
        return None
    return data if isinstance(data, dict) and "images" in data else None


def save_cached(path: Path, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
    """Write decoded images atomically so a killed process never leaves a half file."""
    try:
        atomic_torch_save(
            {"images": images.contiguous(), "labels": labels, "classes": list(classes)}, path
        )
    except OSError:
        pass  # a read-only cache location only costs a re-decode next time
