"""What `eval` measures: a run's frozen encoder, an official I-JEPA file, timm, pixels, random ViT.

`load_subject` resolves `--ckpt RUN_OR_FILE` or `--model SPEC` into a `Subject` (the run
identity, the resolved config, the checkpoint dict when there is one); `make_encoder` then
builds the frozen `Encoder` for a dataset's image size and channels, with pooling applied.

Model specs: `pixels` (normalised pixels, flattened: a floor for every report),
`random:SIZE` (a seeded, untrained ViT of ENCODER_SIZES; patch size from model.patch_size,
seed from djepa_bench.train.seed), `timm:NAME[,key=value...]` (a timm model, randomly initialised
(seeded) unless `pretrained=True` asks timm for its weights or `weights=FILE` names a local
state dict; key=value pairs go to timm.create_model, e.g.
`timm:vit_tiny_patch16_224,patch_size=4`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from djepa_bench.config import Config, apply_overrides, build_config, config_from_dict, to_dict
from djepa_bench.data.cache import cache_key
from djepa_bench.errors import UserError
from djepa_bench.io import safe_torch_load, sha256_file
from djepa_bench.records import RunIdentity

POOLS = ("mean", "last4")
ENCODER_CHOICES = ("target", "context")
# Heads of the official I-JEPA widths (not recoverable from the weights themselves).
IJEPA_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


@dataclass
class Subject:
    """What is being evaluated: identity, resolved config and (if any) the checkpoint dict."""

    identity: RunIdentity
    config: Config
    kind: str  # djepa | ijepa-official | pixels | random | timm
    spec: str  # the --ckpt path or --model spec as given
    checkpoint: dict[str, Any] | None = None
    checkpoint_path: Path | None = None
    run_dir: Path | None = None  # where results/ goes by default (None for --model)
    data: dict[str, Any] = field(default_factory=dict)  # the checkpoint's data block, if any
    options: dict[str, Any] = field(default_factory=dict)  # pretrained / weights for timm


@dataclass
class Encoder:
    """A frozen feature extractor: `encode(images) -> (B, D)` plus what keys its features."""

    model_id: str  # checkpoint sha256 or model spec; part of every feature-cache key
    which: str  # target | context | - (for models without a choice)
    pool: str
    encode: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module | None
    image_size: int | None  # input side the encoder expects; None: the dataset's own
    in_chans: int | None
    tokens: Callable[[torch.Tensor], torch.Tensor] | None = None  # images -> (B, T, D)

    def cache_id(self) -> str:
        """The encoder part of a feature-cache key."""
        return f"{self.model_id}|{self.which}|{self.pool}"


# --- resolving --ckpt / --model ----------------------------------------------------------


def _config_with(base: Config | dict[str, Any] | None, overrides: list[str]) -> Config:
    if base is None:
        return build_config(overrides=overrides)
    data = to_dict(base) if isinstance(base, Config) else dict(base)
    return config_from_dict(apply_overrides(data, overrides))


def _is_ijepa_official(ckpt: Any) -> bool:
    if not isinstance(ckpt, dict) or "format" in ckpt:
        return False
    states = [ckpt.get(k) for k in ("target_encoder", "encoder")]
    return any(isinstance(s, dict) and any(str(k).startswith("module.") for k in s) for s in states)


def load_subject(
    ckpt: str | Path | None = None,
    model: str | None = None,
    overrides: list[str] | None = None,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> Subject:
    """Resolve exactly one of `ckpt` (run dir or checkpoint file) or `model` (a model spec)."""
    overrides = list(overrides or [])
    if (ckpt is None) == (model is None):
        raise UserError(
            "give exactly one of --ckpt RUN_OR_FILE or --model pixels|random:SIZE|timm:NAME"
        )
    if ckpt is not None:
        return _subject_from_file(Path(ckpt).expanduser(), overrides)
    return _subject_from_spec(model, overrides, pretrained, weights)


def _subject_from_file(path: Path, overrides: list[str]) -> Subject:
    if not path.exists():
        raise UserError(f"checkpoint or run directory not found: {path}")
    if path.is_dir():
        from djepa_bench.checkpoint import resolve_checkpoint

        file = resolve_checkpoint(path)
    else:
        file = path
    try:
        raw = safe_torch_load(file)
    except Exception as err:  # not a torch file, or pickled objects weights_only refuses
        raise UserError(
            f"{file} does not load as a weights-only torch checkpoint ({type(err).__name__}); "
            "pass a djepa-bench run directory or checkpoint.pt, or an official I-JEPA .pth.tar"
        ) from None
    sha = sha256_file(file)
    # A checkpoint inside a run directory reports to that run; a loose file to its folder.
    run_dir = file.parent
    if isinstance(raw, dict) and raw.get("format") == "djepa-bench":
        from djepa_bench.checkpoint import load_checkpoint

        ckpt = load_checkpoint(file)
        identity = RunIdentity(
            run=run_dir.name, method=str(ckpt.get("method", "unknown")),
            seed=int(ckpt.get("seed", 0)), checkpoint_sha256=sha,
        )  # fmt: skip
        return Subject(
            identity=identity,
            config=_config_with(ckpt.get("config"), overrides),
            kind="djepa",
            spec=str(path),
            checkpoint=ckpt,
            checkpoint_path=file,
            run_dir=run_dir,
            data=dict(ckpt.get("data") or {}),
        )
    if _is_ijepa_official(raw):
        identity = RunIdentity(
            run=file.name.split(".")[0], method="ijepa-official", seed=0, checkpoint_sha256=sha
        )
        return Subject(
            identity=identity,
            config=_config_with(None, overrides),
            kind="ijepa-official",
            spec=str(path),
            checkpoint=raw,
            checkpoint_path=file,
            run_dir=run_dir,
        )
    raise UserError(
        f"{file} is neither a djepa-bench checkpoint nor an official I-JEPA checkpoint "
        "(a dict with encoder/target_encoder state dicts keyed 'module.*')"
    )


def _subject_from_spec(
    spec: str, overrides: list[str], pretrained: bool, weights: str | Path | None
) -> Subject:
    config = _config_with(None, overrides)
    if spec == "pixels":
        return Subject(RunIdentity("pixels", "pixels", 0, "model:pixels"), config, "pixels", spec)
    if spec.startswith("random:"):
        from djepa_bench.models import ENCODER_SIZES

        size = spec.split(":", 1)[1]
        if size not in ENCODER_SIZES:
            sizes = ", ".join(ENCODER_SIZES)
            raise UserError(f"unknown ViT size '{size}' in --model {spec}; use one of {sizes}")
        config.model.size = size
        seed = config.train.seed
        # Every model field (width/depth overrides too) keys the feature cache.
        shape = cache_key(*sorted(to_dict(config.model).items()))
        model_id = f"model:random:{size}:p{config.model.patch_size}:{shape}:seed{seed}"
        return Subject(RunIdentity(spec, "random", seed, model_id), config, "random", spec)
    if spec.startswith("timm:"):
        name, _ = parse_timm_spec(spec)
        if not name:
            raise UserError("--model timm:NAME needs a model name, e.g. timm:vit_small_patch16_224")
        if weights is not None and not Path(weights).is_file():
            raise UserError(f"--weights file not found: {weights}")
        tag = "init"
        if pretrained:
            tag = "pretrained"
        elif weights:
            tag = f"weights={sha256_file(weights)[:16]}"
        options = {"pretrained": pretrained, "weights": str(weights) if weights else None}
        model_id = f"model:timm:{spec.split(':', 1)[1]}:{tag}:seed{config.train.seed}"
        return Subject(
            RunIdentity(spec, "timm", config.train.seed, model_id), config, "timm", spec,
            options=options,
        )  # fmt: skip
    raise UserError(
        f"unknown --model '{spec}'; use pixels, random:SIZE (e.g. random:tiny) or timm:NAME"
    )


# --- building the frozen encoder --------------------------------------------------------


def _pooled(
    tokens_fn: Callable[[torch.Tensor], torch.Tensor],
    layers_fn: Callable[[torch.Tensor, int], list[torch.Tensor]] | None,
    pool: str,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Mean of the final tokens, or (last4) the concatenated means of the last 4 blocks."""
    if pool == "mean":
        return lambda x: tokens_fn(x).mean(dim=1)
    if layers_fn is None:
        raise UserError("--pool last4 needs a ViT encoder; use --pool mean for this model")
    return lambda x: torch.cat([t.mean(dim=1) for t in layers_fn(x, 4)], dim=1)


def _check(pool: str, which: str) -> None:
    if pool not in POOLS:
        raise UserError(f"unknown --pool '{pool}'; use {' or '.join(POOLS)}")
    if which not in ENCODER_CHOICES:
        raise UserError(f"unknown --encoder '{which}'; use {' or '.join(ENCODER_CHOICES)}")


def make_encoder(
    subject: Subject,
    image_size: int,
    in_chans: int,
    which: str = "target",
    pool: str = "mean",
    device: str | torch.device = "cpu",
) -> Encoder:
    """The frozen encoder of `subject` for images of `in_chans` channels (eval mode, on device)."""
    _check(pool, which)
    device = torch.device(device)
    build = {
        "djepa": _djepa_encoder,
        "ijepa-official": _ijepa_official_encoder,
        "pixels": _pixel_encoder,
        "random": _random_encoder,
        "timm": _timm_encoder,
    }[subject.kind]
    encoder = build(subject, image_size, in_chans, which, pool)
    if encoder.module is not None:
        encoder.module.to(device).eval().requires_grad_(False)
    if encoder.in_chans is not None and encoder.in_chans != in_chans:
        raise UserError(
            f"{subject.spec} takes {encoder.in_chans}-channel images but the dataset has "
            f"{in_chans}; evaluate on a dataset with {encoder.in_chans} channels"
        )
    return encoder


def _pixel_encoder(subject, image_size, in_chans, which, pool) -> Encoder:
    if pool != "mean":
        raise UserError("--model pixels has no layers to pool; use --pool mean")
    return Encoder(subject.identity.checkpoint_sha256, "-", "mean", lambda x: x.flatten(1).float(),
                   None, None, None)  # fmt: skip


def _vit_encoder(subject, module, which, pool) -> Encoder:
    return Encoder(
        subject.identity.checkpoint_sha256, which, pool,
        _pooled(module, module.intermediate_tokens, pool), module, module.img_size,
        module.in_chans, tokens=module,
    )  # fmt: skip


def _djepa_encoder(subject, image_size, in_chans, which, pool) -> Encoder:
    from djepa_bench.checkpoint import load_encoder

    return _vit_encoder(subject, load_encoder(subject.checkpoint, which), which, pool)


def _random_encoder(subject, image_size, in_chans, which, pool) -> Encoder:
    from djepa_bench.models import build_encoder

    if image_size % subject.config.model.patch_size:
        raise UserError(
            f"image size {image_size} is not a multiple of model.patch_size="
            f"{subject.config.model.patch_size}; set --set model.patch_size=..."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(subject.identity.seed)
        module = build_encoder(subject.config.model, image_size, in_chans)
    encoder = _vit_encoder(subject, module, "-", pool)
    return encoder


def parse_timm_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`timm:NAME,key=value,...` -> (NAME, {key: YAML-parsed value})."""
    import yaml

    name, *pairs = spec.split(":", 1)[1].split(",")
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--model {spec}: '{pair}' must look like key=value")
        kwargs[key.strip()] = yaml.safe_load(value)
    return name.strip(), kwargs


def _timm_tokens(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """timm features as tokens (B, N, D): patch tokens of a ViT, spatial cells of a CNN."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))

    def tokens(x: torch.Tensor) -> torch.Tensor:
        out = model.forward_features(x)
        if out.ndim == 4:  # CNN: (B, C, H, W)
            return out.flatten(2).transpose(1, 2)
        return out[:, prefix:] if out.shape[1] > prefix else out

    return tokens


def _timm_layers(model: nn.Module):
    if not hasattr(model, "get_intermediate_layers"):
        return None

    def layers(x: torch.Tensor, n: int) -> list[torch.Tensor]:
        depth = len(getattr(model, "blocks", [])) or n
        return list(model.get_intermediate_layers(x, n=min(n, depth), norm=True))

    return layers


def _timm_encoder(subject, image_size, in_chans, which, pool) -> Encoder:
    import timm

    name, extra = parse_timm_spec(subject.spec)
    pretrained = bool(subject.options.get("pretrained"))
    kwargs: dict[str, Any] = {"pretrained": pretrained, "num_classes": 0, "in_chans": in_chans}
    kwargs.update(extra)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(subject.identity.seed)
        try:
            try:
                model = timm.create_model(name, img_size=image_size, **kwargs)
            except TypeError:  # models without an img_size argument (CNNs)
                model = timm.create_model(name, **kwargs)
        except RuntimeError as err:
            if "Unknown model" in str(err):
                raise UserError(f"timm has no model '{name}'; see timm.list_models()") from None
            raise UserError(f"timm could not build '{name}': {err}") from None
    if subject.options.get("weights"):
        state = safe_torch_load(subject.options["weights"])
        state = (
            state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        )
        missing, unexpected = model.load_state_dict(_strip_prefix(state), strict=False)
        if missing:
            raise UserError(f"--weights lacks {len(missing)} keys of {name}, e.g. {missing[0]}")
    layers = _timm_layers(model) if pool == "last4" else None
    if pool == "last4" and layers is None:
        raise UserError(f"--pool last4 needs a ViT; timm model {name} has no intermediate layers")
    tokens = _timm_tokens(model)
    return Encoder(
        subject.identity.checkpoint_sha256, "-", pool,
        _pooled(tokens, layers, pool), model, image_size, in_chans, tokens=tokens,
    )  # fmt: skip


def _strip_prefix(
    state: dict[str, torch.Tensor], prefix: str = "module."
) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def ijepa_official_vit(state: dict[str, torch.Tensor], num_heads: int | None = None) -> nn.Module:
    """A timm VisionTransformer (no class token) holding an official I-JEPA encoder state dict.

    The official encoder uses timm-compatible names (patch_embed.proj, pos_embed, blocks.N.*,
    norm); widths, depth, patch and image size are read from the weights, heads from the
    official table (or `num_heads`).
    """
    from timm.models.vision_transformer import VisionTransformer

    state = _strip_prefix(state)
    try:
        proj = state["patch_embed.proj.weight"]
        pos = state["pos_embed"]
    except KeyError as err:
        raise UserError(
            f"I-JEPA encoder state lacks {err.args[0]}; is this an I-JEPA checkpoint?"
        ) from None
    dim, chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    grid = int(round(pos.shape[1] ** 0.5))
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / dim
    heads = num_heads or IJEPA_HEADS.get(dim, max(1, dim // 64))
    model = VisionTransformer(
        img_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias="blocks.0.attn.qkv.bias" in state,
        class_token=False, global_pool="avg", fc_norm=False, num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"I-JEPA encoder weights do not fit a ViT ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]})"
        )
    return model


def _ijepa_official_encoder(subject, image_size, in_chans, which, pool) -> Encoder:
    key = "target_encoder" if which == "target" else "encoder"
    state = subject.checkpoint.get(key)
    if not isinstance(state, dict):
        raise UserError(f"{subject.spec} has no '{key}' weights; try --encoder target or context")
    explicit = subject.config.model.num_heads
    model = ijepa_official_vit(state, num_heads=explicit)
    layers = _timm_layers(model) if pool == "last4" else None
    tokens = _timm_tokens(model)
    return Encoder(
        subject.identity.checkpoint_sha256, which, pool,
        _pooled(tokens, layers, pool), model, model.patch_embed.img_size[0],
        model.patch_embed.proj.in_channels, tokens=tokens,
    )  # fmt: skip
