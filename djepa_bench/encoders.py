"""What `eval` measures: a run's frozen encoder, an official I-JEPA file, timm, pixels, random ViT.

`load_subject` resolves `--ckpt RUN_OR_FILE` or `--model SPEC` into a `Subject` (the run
identity, the resolved config, the checkpoint dict when there is one); `make_encoder` then
builds the frozen `Encoder` for a dataset's image size and channels, with pooling applied.
Every kind of subject is one row of MODEL_KINDS, keyed by the spec's prefix (timm's
parse_model_name idea): how a `--model PREFIX:ARG` resolves and how its encoder is built.

Model specs: `pixels` (normalised pixels, flattened: a floor for every report),
`random:SIZE` (a seeded, untrained ViT of ENCODER_SIZES; patch size from model.patch_size,
seed from train.seed), `timm:NAME[,key=value...]` (a timm model, randomly initialised
(seeded) unless `pretrained=true` asks timm for its weights or `weights=FILE` names a local
state dict; other key=value pairs go to timm.create_model, e.g.
`timm:vit_tiny_patch16_224,patch_size=4`).

Normalisation: batches arrive normalised with the dataset's mean/std. A model trained with
its own (timm weights: timm's resolved data config; official I-JEPA: ImageNet's) gets the
images re-normalised from the raw [0, 1] scale with its own mean/std first. Runs of this
project and randomly initialised models keep the dataset's.

Pooling (`--pool`): mean (of the final patch tokens), last4 (concatenated means of the last
4 blocks), cls (the class token) and avgpool+cls (DINOv2's linear-eval feature: the class
token concatenated with the mean of the patch tokens); the last two need a class token.
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

POOLS = ("mean", "last4", "cls", "avgpool+cls")
CLASS_TOKEN_POOLS = ("cls", "avgpool+cls")
# Heads of the official I-JEPA widths (not recoverable from the weights themselves).
IJEPA_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
# The official I-JEPA code normalises images with ImageNet's statistics.
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
Norm = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class Subject:
    """What is being evaluated: identity, resolved config and (if any) the checkpoint dict."""

    identity: RunIdentity
    config: Config
    kind: str  # a key of MODEL_KINDS: djepa | ijepa-official | pixels | random | timm
    spec: str  # the --ckpt path or --model spec as given
    checkpoint: dict[str, Any] | None = None
    checkpoint_path: Path | None = None
    run_dir: Path | None = None  # where results/ goes by default (None for --model)
    data: dict[str, Any] = field(default_factory=dict)  # the checkpoint's data block, if any
    options: dict[str, Any] = field(default_factory=dict)  # pretrained / weights for timm


class FeatureNet(nn.Module):
    """Dataset-normalised images -> the model's own normalisation -> pooled features or tokens.

    `forward` pools (POOLS), `tokens` gives the final patch tokens (B, T, D) without class or
    register tokens (a CNN's spatial cells). `backbone_kind` says how tokens are read: `vit`
    (this project's VisionEncoder), `timm` (forward_features / get_intermediate_layers) or
    `pixels` (no module: the flattened image). A deep copy is an independent network, which
    the fine-tuning protocol trains.
    """

    def __init__(
        self,
        backbone: nn.Module | None,
        backbone_kind: str,
        pool: str,
        channels: int,
        input_norm: Norm | None = None,
        data_norm: Norm | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.backbone_kind = backbone_kind
        self.pool = pool
        self.renormalise = input_norm is not None and data_norm is not None
        if self.renormalise:
            # raw = x * std_data + mean_data; model input = (raw - mean_model) / std_model
            data_mean, data_std = (_channel_tensor(v, channels) for v in data_norm)
            mean, std = (_channel_tensor(v, channels) for v in input_norm)
            self.register_buffer("scale", data_std / std, persistent=False)
            self.register_buffer("shift", (data_mean - mean) / std, persistent=False)

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patch tokens (class and register tokens) in the final output."""
        if self.backbone_kind != "timm":
            return 0
        return int(getattr(self.backbone, "num_prefix_tokens", 0))

    @property
    def has_class_token(self) -> bool:
        """Whether the final output starts with a class token (timm ViTs with a cls_token)."""
        cls_token = getattr(self.backbone, "cls_token", None)
        return self.backbone_kind == "timm" and cls_token is not None

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the model's own normalisation (unchanged when it has none)."""
        if not self.renormalise:
            return images
        return images * self.scale.to(images.dtype) + self.shift.to(images.dtype)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Final patch tokens (B, T, D)."""
        return self._final(self.prepare(images))[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D') of a batch of dataset-normalised images."""
        if self.backbone_kind == "pixels":
            return images.flatten(1).float()
        x = self.prepare(images)
        if self.pool == "last4":
            return torch.cat([t.mean(dim=1) for t in self._last(x, 4)], dim=1)
        prefix, patches = self._final(x)
        if self.pool == "mean":
            return patches.mean(dim=1)
        cls = prefix[:, 0]
        if self.pool == "cls":
            return cls
        return torch.cat([cls, patches.mean(dim=1)], dim=1)  # avgpool+cls (DINOv2)

    def _final(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if self.backbone_kind == "vit":
            return None, self.backbone(x)
        out = self.backbone.forward_features(x)
        if out.ndim == 4:  # CNN: (B, C, H, W)
            return None, out.flatten(2).transpose(1, 2)
        prefix = self.prefix_tokens if out.shape[1] > self.prefix_tokens else 0
        return out[:, :prefix], out[:, prefix:]

    def _last(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        if self.backbone_kind == "vit":
            return self.backbone.intermediate_tokens(x, n)
        depth = len(getattr(self.backbone, "blocks", [])) or n
        return list(self.backbone.get_intermediate_layers(x, n=min(n, depth), norm=True))


def _channel_tensor(values: tuple[float, ...], channels: int) -> torch.Tensor:
    """Per-channel statistics as (1, C, 1, 1); a 3-value statistic on grey images averages."""
    values = tuple(float(v) for v in values)
    if len(values) != channels:
        values = (sum(values) / len(values),) * channels
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


@dataclass
class Encoder:
    """A frozen feature extractor: `encode(images) -> (B, D)` plus what keys its features.

    `encode` is a FeatureNet for the models built here (any callable in tests); `tokens`,
    when the model has them, gives the final patch tokens (B, T, D) for token-level
    protocols (attentive probe).
    """

    model_id: str  # checkpoint sha256 or model spec; part of every feature-cache key
    which: str  # target | context | - (for models without a choice)
    pool: str
    encode: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module | None
    image_size: int | None  # input side the encoder expects; None: the dataset's own
    in_chans: int | None
    tokens: Callable[[torch.Tensor], torch.Tensor] | None = None
    input_norm: Norm | None = None  # the model's own mean/std (0-1 scale) when it has one

    def cache_id(self) -> str:
        """The encoder part of a feature-cache key."""
        base = f"{self.model_id}|{self.which}|{self.pool}"
        return f"{base}|norm={self.input_norm}" if self.input_norm else base


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


def parse_model_name(spec: str) -> tuple[str, str]:
    """`PREFIX:ARG` -> (PREFIX, ARG); a spec without a colon is a prefix alone (`pixels`)."""
    prefix, _, arg = spec.partition(":")
    return prefix.strip(), arg.strip()


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
    prefix, arg = parse_model_name(model)
    kind = MODEL_KINDS.get(prefix)
    if kind is None or kind.resolve is None:
        usages = ", ".join(k.usage for k in MODEL_KINDS.values() if k.resolve is not None)
        raise UserError(f"unknown --model '{model}'; use {usages}")
    options = {"pretrained": pretrained, "weights": str(weights) if weights else None}
    return kind.resolve(arg, model, _config_with(None, overrides), options)


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


def _pixels_subject(arg: str, spec: str, config: Config, options: dict[str, Any]) -> Subject:
    if arg:
        raise UserError(f"--model {spec}: pixels takes no argument; use --model pixels")
    return Subject(RunIdentity("pixels", "pixels", 0, "model:pixels"), config, "pixels", spec)


def _random_subject(size: str, spec: str, config: Config, options: dict[str, Any]) -> Subject:
    from djepa_bench.models import ENCODER_SIZES

    if size not in ENCODER_SIZES:
        sizes = ", ".join(ENCODER_SIZES)
        raise UserError(f"unknown ViT size '{size}' in --model {spec}; use one of {sizes}")
    config.model.size = size
    seed = config.train.seed
    # Every model field (width/depth overrides too) keys the feature cache.
    shape = cache_key(*sorted(to_dict(config.model).items()))
    model_id = f"model:random:{size}:p{config.model.patch_size}:{shape}:seed{seed}"
    return Subject(RunIdentity(spec, "random", seed, model_id), config, "random", spec)


TIMM_OPTIONS = ("pretrained", "weights")  # spec keys that choose weights, not model kwargs


def parse_timm_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`timm:NAME,key=value,...` -> (NAME, {key: YAML-parsed value}) (weights options included)."""
    import yaml

    name, *pairs = spec.split(":", 1)[1].split(",")
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--model {spec}: '{pair}' must look like key=value")
        key = key.strip()
        kwargs[key] = value.strip() if key == "weights" else yaml.safe_load(value)
    return name.strip(), kwargs


def _timm_subject(arg: str, spec: str, config: Config, options: dict[str, Any]) -> Subject:
    name, kwargs = parse_timm_spec(spec)
    if not name:
        raise UserError("--model timm:NAME needs a model name, e.g. timm:vit_small_patch16_224")
    pretrained = bool(options.get("pretrained") or kwargs.get("pretrained"))
    weights = options.get("weights") or kwargs.get("weights")
    if pretrained and weights:
        raise UserError(f"--model {spec}: give either pretrained weights or a weights file")
    if weights is not None:
        from djepa_bench.timm_models import read_state_dict

        read_state_dict(weights)  # a file that is no state dict fails here, before any data
    tag = "init"
    if pretrained:
        tag = "pretrained"
    elif weights:
        tag = f"weights={sha256_file(weights)[:16]}"
    shape = ",".join(
        [name] + [p for p in arg.split(",")[1:] if p.partition("=")[0].strip() not in TIMM_OPTIONS]
    )
    model_id = f"model:timm:{shape}:{tag}:seed{config.train.seed}"
    options = {"pretrained": pretrained, "weights": str(weights) if weights else None}
    return Subject(
        RunIdentity(spec, "timm", config.train.seed, model_id), config, "timm", spec,
        options=options,
    )  # fmt: skip


# --- building the frozen encoder --------------------------------------------------------


def check_pool(subject: Subject, pool: str) -> None:
    """Fail early (before data is read) for a pool the subject's kind can never provide (the
    pool names themselves are eval.pool's type)."""
    kind = MODEL_KINDS[subject.kind]
    if pool in CLASS_TOKEN_POOLS and kind.class_token is False:
        raise UserError(
            f"--pool {pool} needs a class token; {subject.spec} ({subject.kind}) has none, "
            "use --pool mean or last4"
        )
    if pool != "mean" and subject.kind == "pixels":
        raise UserError("--model pixels has no layers to pool; use --pool mean")


def make_encoder(
    subject: Subject,
    image_size: int,
    in_chans: int,
    which: str = "target",
    pool: str = "mean",
    device: str | torch.device = "cpu",
    data_norm: Norm | None = None,
) -> Encoder:
    """The frozen encoder of `subject` for images of `in_chans` channels (eval mode, on device).

    `data_norm` is the dataset's (mean, std) the images arrive normalised with; a model
    with its own normalisation needs it (None: images are already in the model's).
    """
    check_pool(subject, pool)
    built = MODEL_KINDS[subject.kind].build(subject, image_size, in_chans, which)
    if built.in_chans is not None and built.in_chans != in_chans:
        raise UserError(
            f"{subject.spec} takes {built.in_chans}-channel images but the dataset has "
            f"{in_chans}; evaluate on a dataset with {built.in_chans} channels"
        )
    net = FeatureNet(built.module, built.backbone_kind, pool, in_chans, built.norm, data_norm)
    if pool in CLASS_TOKEN_POOLS and not net.has_class_token:
        raise UserError(f"--pool {pool} needs a class token; {subject.spec} has none, use mean")
    layers = hasattr(built.module, "get_intermediate_layers")
    if pool == "last4" and built.backbone_kind == "timm" and not layers:
        raise UserError(f"--pool last4 needs a ViT; {subject.spec} has no intermediate layers")
    net.to(torch.device(device)).eval().requires_grad_(False)
    return Encoder(
        subject.identity.checkpoint_sha256, built.which, pool, net, built.module,
        built.image_size, built.in_chans, None if built.module is None else net.tokens,
        built.norm,
    )  # fmt: skip


@dataclass
class _Built:
    """What a kind's builder returns: the backbone and what the encoder needs to know of it."""

    module: nn.Module | None
    backbone_kind: str  # vit | timm | pixels (see FeatureNet)
    which: str
    image_size: int | None
    in_chans: int | None
    norm: Norm | None = None


def _pixel_encoder(subject, image_size, in_chans, which) -> _Built:
    return _Built(None, "pixels", "-", None, None)


def _djepa_encoder(subject, image_size, in_chans, which) -> _Built:
    from djepa_bench.checkpoint import load_encoder

    module = load_encoder(subject.checkpoint, which)
    return _Built(module, "vit", which, module.img_size, module.in_chans)


def _random_encoder(subject, image_size, in_chans, which) -> _Built:
    from djepa_bench.models import build_encoder

    if image_size % subject.config.model.patch_size:
        raise UserError(
            f"image size {image_size} is not a multiple of model.patch_size="
            f"{subject.config.model.patch_size}; set --set model.patch_size=..."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(subject.identity.seed)
        module = build_encoder(subject.config.model, image_size, in_chans)
    return _Built(module, "vit", "-", module.img_size, module.in_chans)


def _timm_encoder(subject, image_size, in_chans, which) -> _Built:
    from djepa_bench.timm_models import create_timm_model, data_config

    name, kwargs = parse_timm_spec(subject.spec)
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_OPTIONS}
    pretrained, weights = subject.options.get("pretrained"), subject.options.get("weights")
    model, size = create_timm_model(
        name, kwargs, image_size, in_chans, seed=subject.identity.seed,
        pretrained=bool(pretrained), weights=weights,
    )  # fmt: skip
    norm = None
    if pretrained or weights:  # trained weights expect their own normalisation
        config = data_config(model)
        norm = (tuple(config["mean"]), tuple(config["std"]))
    return _Built(model, "timm", "-", size, in_chans, norm)


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


def _ijepa_official_encoder(subject, image_size, in_chans, which) -> _Built:
    key = "target_encoder" if which == "target" else "encoder"
    state = subject.checkpoint.get(key)
    if not isinstance(state, dict):
        raise UserError(f"{subject.spec} has no '{key}' weights; try --encoder target or context")
    model = ijepa_official_vit(state, num_heads=subject.config.model.num_heads)
    size, chans = model.patch_embed.img_size[0], model.patch_embed.proj.in_channels
    return _Built(model, "timm", which, size, chans, IMAGENET_NORM)


@dataclass(frozen=True)
class ModelKind:
    """One kind of subject: how a `--model PREFIX:ARG` resolves and how its encoder is built."""

    name: str
    usage: str  # how a user names it, for messages
    build: Callable[..., _Built]  # (subject, image_size, in_chans, which) -> backbone
    resolve: Callable[..., Subject] | None = None  # (arg, spec, config, options); None: --ckpt
    class_token: bool | None = False  # None: depends on the model (timm)


MODEL_KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind("djepa", "--ckpt RUN", _djepa_encoder),
        ModelKind("ijepa-official", "--ckpt I-JEPA.pth.tar", _ijepa_official_encoder),
        ModelKind("pixels", "pixels", _pixel_encoder, _pixels_subject),
        ModelKind("random", "random:SIZE (e.g. random:tiny)", _random_encoder, _random_subject),
        ModelKind("timm", "timm:NAME", _timm_encoder, _timm_subject, class_token=None),
    )
}
