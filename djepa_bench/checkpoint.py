"""The checkpoint format (CONTRACT.md): saving atomically, loading safely, rebuilding models.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, loadable with
`torch.load(weights_only=True)`; it carries the resolved config, so the models can be
rebuilt without the preset that produced them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from djepa_bench.config import Config, config_from_dict
from djepa_bench.errors import UserError
from djepa_bench.io import atomic_torch_save, describe_os_error, safe_torch_load
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
# What every use of a checkpoint reads, and what resuming its training reads as well.
REQUIRED_KEYS = {"method": str, "config": dict, "data": dict, "target_encoder": dict}
RESUME_KEYS = {
    "context_encoder": dict, "predictor": dict, "optimizer": dict, "step": int,
    "train_state": dict,
}  # fmt: skip


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


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint (file or run directory) with weights_only=True and check its format.

    Beyond the format tag, the keys every use reads must be there with the right kind of
    value; a malformed file is a one-line UserError saying what is missing. `mmap` maps
    the tensors instead of reading them (for checks that look only at shapes).
    """
    file = resolve_checkpoint(path)
    try:
        ckpt = safe_torch_load(file, mmap=mmap)
    except OSError as err:
        raise UserError(describe_os_error(err, file, "read")) from None
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
    _check_keys(ckpt, file, REQUIRED_KEYS, "")
    missing = [k for k in ("image_size", "channels") if not isinstance(ckpt["data"].get(k), int)]
    if missing:
        raise UserError(f"{file} is malformed: its 'data' entry lacks {', '.join(missing)}")
    return ckpt


def check_resumable(path: str | Path) -> None:
    """Check, before any work, that a checkpoint holds all a resumed training run loads.

    Every key the trainer restores must be there, and each state dict must fit the
    models its config describes (names and shapes); anything else is a one-line UserError.
    The tensors are memory-mapped, not read.
    """
    file = resolve_checkpoint(path)
    ckpt = load_checkpoint(file, mmap=True)
    _check_keys(
        ckpt, file, RESUME_KEYS, "; it cannot be resumed (its weights can still be evaluated)"
    )
    encoder = _encoder_shell(ckpt)
    predictor = build_predictor(_config(ckpt).model, encoder, ckpt["method"])
    for key, module in (
        ("target_encoder", encoder), ("context_encoder", encoder), ("predictor", predictor),
    ):  # fmt: skip
        _check_state(ckpt, key, module)


def _check_keys(ckpt: dict[str, Any], file: Path, keys: dict[str, type], note: str) -> None:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"{file} is malformed: it has no {', '.join(missing)}{note}")
    wrong = [f"{k} is a {type(ckpt[k]).__name__}" for k, kind in keys.items()
             if not isinstance(ckpt[k], kind)]  # fmt: skip
    if wrong:
        raise UserError(f"{file} is malformed: {', '.join(wrong)}{note}")


def _config(ckpt: dict[str, Any]) -> Config:
    return config_from_dict(ckpt["config"])


def _check_state(ckpt: dict[str, Any], key: str, module: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint's state dict `key`, cleaned, after checking it fits `module`.

    A state dict whose names or shapes differ from the model the checkpoint's own config
    describes (say, model.size edited after training) is a one-line UserError naming the
    first difference.
    """
    if not isinstance(ckpt.get(key), dict):
        raise UserError(f"the checkpoint has no {key} (a state dict); it cannot be used here")
    state = clean_state_dict(ckpt[key])
    expected = module.state_dict()
    problems = [f"{name} is missing" for name in expected if name not in state]
    problems += [f"{name} is unexpected" for name in state if name not in expected]
    for name, tensor in state.items():
        if name in expected and (
            not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name].shape
        ):
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            problems.append(f"{name} is {got} in the file but {list(expected[name].shape)}")
    if problems:
        model = _config(ckpt).model
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise UserError(
            f"the checkpoint's {key} does not fit the model its config describes "
            f"(model.size={model.size}, patch_size={model.patch_size}, "
            f"{ckpt['data']['image_size']} px): {problems[0]}{more}; "
            "was the config edited after training?"
        )
    return state


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP ('module.') and torch.compile ('_orig_mod.') prefixes from parameter names."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.replace(prefix, "")
        out[key] = value
    return out


def _encoder_shell(ckpt: dict[str, Any]) -> VisionEncoder:
    data = ckpt["data"]
    return build_encoder(_config(ckpt).model, int(data["image_size"]), int(data["channels"]))


def load_encoder(ckpt: dict[str, Any], which: str = "target") -> VisionEncoder:
    """The checkpoint's target or context encoder, in eval mode on the CPU."""
    if which not in ("target", "context"):
        raise UserError(f"unknown encoder '{which}'; use target or context")
    encoder = _encoder_shell(ckpt)
    encoder.load_state_dict(_check_state(ckpt, f"{which}_encoder", encoder))
    return encoder.eval()


def load_predictor(ckpt: dict[str, Any]) -> tuple[Predictor, DiffusionSchedule | None]:
    """The predictor (eval mode, CPU) and, for D-JEPA checkpoints, its diffusion schedule."""
    cfg = _config(ckpt)
    method = ckpt["method"]
    predictor = build_predictor(cfg.model, _encoder_shell(ckpt), method)
    predictor.load_state_dict(_check_state(ckpt, "predictor", predictor))
    schedule = build_schedule(cfg.diffusion) if method == "djepa" else None
    return predictor.eval(), schedule
