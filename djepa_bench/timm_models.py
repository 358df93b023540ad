"""timm models for `eval --model timm:NAME`: random init, hub weights or a local weights file.

A local file goes through timm's own pretrained loader (`pretrained=True` with
`pretrained_cfg_overlay={"file": ...}`), so the model's `checkpoint_filter_fn` resamples
position embeddings and patch projections to the evaluation size (a 224-px state dict works
at 32 px) and timm adapts the input convolution to the dataset's channels. What timm leaves
to the caller is done here: the file is read once with `weights_only=True` first so that a
pickle, a file that is not a state dict, or weights that do not fit the model end in one
line naming what does not match, never a traceback; and the load is strict (timm loads
non-strictly whenever the classifier differs, which would leave a wrong file silently
random) by building the model with the file's own classifier size and removing it after.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from djepa_bench.errors import UserError
from djepa_bench.io import safe_torch_load

# Where training scripts keep the weights inside a checkpoint dict: timm's own order.
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (.pt/.pth/.bin or .safetensors), or a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        except Exception as err:
            raise UserError(
                f"--weights {path} is not a readable safetensors file ({err})"
            ) from None
    else:
        try:
            obj = safe_torch_load(path)
        except pickle.UnpicklingError as err:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            if not found:
                raise UserError(
                    f"--weights {path} does not load with torch.load (not a torch file?); give "
                    "a file written by torch.save(model.state_dict(), FILE) or a .safetensors"
                ) from None
            raise UserError(
                f"--weights {path} holds pickled Python objects ({found.group(1)}) that a "
                "weights-only load "
                "refuses; save the weights with torch.save(model.state_dict(), FILE)"
            ) from None
        except Exception as err:
            raise UserError(
                f"--weights {path} does not load with torch.load ({type(err).__name__}); "
                "give a file written by torch.save(model.state_dict(), FILE) or a .safetensors"
            ) from None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise UserError(
            f"--weights {path} holds {'an empty dict' if obj == {} else type(obj).__name__}, "
            "not a state dict (parameter name -> tensor)"
        )
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        keys = ", ".join(map(str, list(obj)[:4]))
        raise UserError(
            f"--weights {path} is not a state dict: '{others[0]}' holds a "
            f"{type(obj[others[0]]).__name__}, not a tensor (keys: {keys}...)"
        )
    return obj


def _classifier_names(name: str) -> tuple[str, ...]:
    from timm.models import get_pretrained_cfg_value

    names = get_pretrained_cfg_value(name, "classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _file_classes(name: str, state: dict[str, torch.Tensor]) -> int:
    """Number of classes of the file's classifier (0 when it has none)."""
    for classifier in _classifier_names(name):
        weight = state.get(f"{classifier}.weight", state.get(f"module.{classifier}.weight"))
        if weight is not None and weight.ndim >= 1:
            return int(weight.shape[0])
    return 0


def describe_load_error(err: Exception) -> str:
    """One line from torch's multi-line load_state_dict error: the first problem and a count."""
    text = str(err)
    sizes = re.findall(
        r"size mismatch for ([^:]+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
        r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)",
        text,
    )
    missing = re.search(r"Missing key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)", text)
    unexpected = re.search(r"Unexpected key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)", text)
    parts = []
    if sizes:
        key, file_shape, model_shape = sizes[0]
        more = f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""
        parts.append(f"{key} is ({file_shape}) in the file but ({model_shape}) in the model{more}")
    for label, found in (("missing", missing), ("unexpected", unexpected)):
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            if keys:
                parts.append(f"{len(keys)} {label} key(s), e.g. {keys[0]}")
    if parts:
        return "; ".join(parts)
    return text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__


def create_timm_model(
    name: str,
    kwargs: dict[str, Any],
    image_size: int,
    in_chans: int,
    *,
    seed: int,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> tuple[nn.Module, int]:
    """A timm feature model (no classifier) and the input side it takes.

    ViTs are built at `image_size` (or the spec's own img_size); models without an img_size
    argument take `image_size` too unless their pretrained config fixes the input size.
    With `weights`, the file is loaded strictly through timm's pretrained loader.
    """
    import timm

    kwargs = dict(kwargs)
    size = int(kwargs.pop("img_size", image_size))
    build: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans, **kwargs}
    if weights is not None:
        state = read_state_dict(weights)
        classes = _file_classes(name, state)
        del state
        build.update(
            num_classes=classes,
            pretrained=True,
            # source "timm" and no custom loader: read exactly this file, never the hub.
            pretrained_cfg_overlay={
                "file": str(weights), "source": "timm", "custom_load": False,
                "num_classes": classes,
            },
        )  # fmt: skip
    elif pretrained:
        build["pretrained"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model, size = _create(timm, name, build, size)
        except UserError:
            raise
        except Exception as err:
            if "Unknown model" in str(err):
                raise UserError(f"timm has no model '{name}'; see timm.list_models()") from None
            if weights is not None:
                what = describe_load_error(err)
                raise UserError(f"--weights {weights} does not fit timm {name}: {what}") from None
            if pretrained:
                raise UserError(
                    f"timm could not load pretrained weights for '{name}' ({type(err).__name__}: "
                    f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else ''}); "
                    "they come from your Hugging Face cache or the hub, or pass --weights FILE"
                ) from None
            raise UserError(f"timm could not build '{name}': {describe_load_error(err)}") from None
    if weights is not None and build["num_classes"]:
        model.reset_classifier(0)
    return model, size


def _create(timm: Any, name: str, build: dict[str, Any], size: int) -> tuple[nn.Module, int]:
    try:
        return timm.create_model(name, img_size=size, **build), size
    except TypeError as err:  # models without an img_size argument (CNNs)
        if "img_size" not in str(err):
            raise
    model = timm.create_model(name, **build)
    config = data_config(model)
    if model.pretrained_cfg.get("fixed_input_size"):
        size = int(config["input_size"][-1])
    return model, size


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's resolved data config of `model` (mean, std, input_size, interpolation, crop)."""
    from timm.data import resolve_data_config

    return resolve_data_config({}, model=model)


def class_token_count(model: nn.Module) -> int:
    """1 when `model` has a class token (timm ViT family), else 0."""
    return 1 if getattr(model, "cls_token", None) is not None else 0
