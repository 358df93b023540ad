"""The checkpoint format (CONTRACT.md): saving atomically, loading safely, rebuilding models.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, loadable with
`torch.load(weights_only=True)`; it carries the resolved config, so the models can be
rebuilt without the preset that produced them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from djepa_bench.config import config_from_dict
from djepa_bench.errors import UserError
from djepa_bench.io import atomic_torch_save, safe_torch_load
from djepa_bench.models import (
    DiffusionSchedule,
    Predictor,
    VisionEncoder,
    build_encoder,
    build_predictor,
    build_schedule,
)

FORMAT = "djepa-bench"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint kept after `epoch` completed epochs."""
    return f"checkpoint-ep{epoch:03d}.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its checkpoint.pt; a file -> itself; anything missing -> UserError."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / CHECKPOINT_NAME
        if not candidate.is_file():
            raise UserError(
                f"run directory {path} has no {CHECKPOINT_NAME}; train it first "
                "(djepa-bench train --out DIR) or pass a checkpoint file"
            )
        return candidate
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass a run directory or a .pt file")
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict atomically (temp file + rename)."""
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (file or run directory) with weights_only=True and check its format."""
    file = resolve_checkpoint(path)
    try:
        ckpt = safe_torch_load(file)
    except Exception as err:  # torch raises several types for foreign or corrupt files
        raise UserError(
            f"{file} is not a loadable djepa-bench checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{file} is not a djepa-bench checkpoint (missing format '{FORMAT}')")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{file} has checkpoint format {ckpt['format_version']}, newer than this "
            f"djepa-bench understands ({FORMAT_VERSION}); upgrade djepa-bench"
        )
    return ckpt


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP ('module.') and torch.compile ('_orig_mod.') prefixes from parameter names."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.replace(prefix, "")
        out[key] = value
    return out


def _encoder_shell(ckpt: dict[str, Any]) -> VisionEncoder:
    cfg = config_from_dict(ckpt["config"])
    data = ckpt["data"]
    return build_encoder(cfg.model, int(data["image_size"]), int(data["channels"]))


def load_encoder(ckpt: dict[str, Any], which: str = "target") -> VisionEncoder:
    """The checkpoint's target or context encoder, in eval mode on the CPU."""
    if which not in ("target", "context"):
        raise UserError(f"unknown encoder '{which}'; use target or context")
    encoder = _encoder_shell(ckpt)
    encoder.load_state_dict(clean_state_dict(ckpt[f"{which}_encoder"]))
    return encoder.eval()


def load_predictor(ckpt: dict[str, Any]) -> tuple[Predictor, DiffusionSchedule | None]:
    """The predictor (eval mode, CPU) and, for D-JEPA checkpoints, its diffusion schedule."""
    cfg = config_from_dict(ckpt["config"])
    method = ckpt["method"]
    predictor = build_predictor(cfg.model, _encoder_shell(ckpt), method)
    predictor.load_state_dict(clean_state_dict(ckpt["predictor"]))
    schedule = build_schedule(cfg.diffusion) if method == "djepa" else None
    return predictor.eval(), schedule
