"""Typed configuration: dataclasses per section, YAML presets, `--set key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from djepa_bench.errors import UserError
from djepa_bench.io import load_yaml
from djepa_bench.presets import load_preset


@dataclass
class ModelConfig:
    """ViT encoder and predictor sizes."""

    size: str = "nano"  # nano | tiny | small | base (see djepa_bench.models.ENCODER_SIZES)
    patch_size: int = 4
    embed_dim: int | None = None  # overrides the size's width when set
    depth: int | None = None  # overrides the size's depth when set
    num_heads: int | None = None  # overrides the size's heads when set
    predictor_dim: int = 128
    predictor_depth: int = 4
    predictor_heads: int = 4
    drop_path: float = 0.0
    pos_embed_scale: float = 1.0  # factor on the encoder's fixed sin-cos position embedding


@dataclass
class MaskConfig:
    """I-JEPA multi-block masking (DESIGN.md section 1)."""

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    min_keep: int = 4
    # How context sets of different lengths are batched: "pad" keeps every context token
    # (padded to the batch maximum with attention masking); "truncate" cuts to the batch
    # minimum as the official collator does.
    context_batching: str = "pad"


@dataclass
class DiffusionConfig:
    """Diffusion noise on target embeddings for D-JEPA."""

    schedule: str = "cosine"  # cosine | linear
    timesteps: int = 1000
    lambda_diff: float = 1.0
    noise_draws: int = 1  # noise levels drawn per target block
    min_snr_gamma: float = 0.0  # 0 disables min-SNR weighting
    loss: str = "mse"  # mse | smooth_l1


@dataclass
class RegularizerConfig:
    """Optional anti-collapse terms on the context encoder (VICReg's, as in C-JEPA); 0: off.

    Both act on the batch of average-pooled context-encoder features: `variance` weighs
    mean(relu(1 - std)) per feature dimension, `covariance` the sum of squared off-diagonal
    covariances divided by the width. They are added to the loss of either method.
    `projector_dim` > 0 puts VICReg's expander (Linear-BatchNorm-ReLU-Linear to that width)
    between the pooled features and the terms, so they shape the encoder without whitening
    its features directly; it is trained and checkpointed, never evaluated, and only built
    when a weight is non-zero.
    """

    variance: float = 0.0
    covariance: float = 0.0
    projector_dim: int = 0

    @property
    def enabled(self) -> bool:
        """Whether either term has a weight (otherwise nothing is pooled, built or added)."""
        return self.variance != 0 or self.covariance != 0


@dataclass
class OptimConfig:
    """Optimiser and schedules."""

    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    ema_start: float = 0.996
    ema_end: float = 1.0
    clip_grad: float = 0.0  # 0 disables clipping
    jepa_loss: str = "smooth_l1"  # smooth_l1 | mse


@dataclass
class DataConfig:
    """Which dataset, where it lives, and training augmentation."""

    dataset: str = "digits"
    root: str | None = None  # default: $DJEPA_DATA_ROOT or ~/.cache/djepa-bench/data
    download: bool = False
    cache_dir: str | None = None  # default: $DJEPA_CACHE_DIR or ~/.cache/djepa-bench
    image_size: int | None = None  # None: the dataset's native size
    crop_scale: tuple[float, float] = (0.3, 1.0)
    hflip: bool = True
    num_workers: int = 2  # DataLoader workers for large-image datasets
    train_subset: int | None = None  # use only the first N (shuffled, seeded) training images


@dataclass
class TrainConfig:
    """The training run itself."""

    method: str = "djepa"  # ijepa | djepa
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    log_every: int = 20  # steps between log.jsonl rows
    checkpoint_every: int = 1  # epochs between checkpoint-epNNN.pt files
    checkpoint_every_steps: int = 0  # also write checkpoint.pt every N steps (0: off)
    monitor: bool = True  # per-epoch kNN / RankMe / feature-std on a small held-out set
    monitor_size: int = 1000
    cpu_threads: int = 0  # torch intra-op threads when training on CPU (0: torch's default)


@dataclass
class KnnConfig:
    """k-NN protocol settings (DESIGN.md section 4)."""

    k: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07
    weighting: str = "dino"  # dino (exp(s/T)) | uniform (majority vote)
    backend: str = "auto"  # auto (FAISS when installed) | faiss | torch


@dataclass
class LinearConfig:
    """Linear-probe settings."""

    lrs: list[float] = field(default_factory=lambda: [3e-3, 1e-2, 3e-2, 1e-1])
    # Decoupled (AdamW-style) decay: lr * wd per step, so useful values are larger than L2s.
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-3, 1e-2, 1e-1])
    optimizer: str = "adamw"  # adamw | sgd
    epochs: int = 100
    batch_size: int = 2048  # capped so every epoch has at least 10 steps
    val_fraction: float = 0.1
    seed: int = 0
    momentum: float = 0.9  # SGD only
    refit: bool = True  # retrain the selected (lr, wd) on all of train before testing


@dataclass
class LowShotConfig:
    """Low-shot settings."""

    shots: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 25])
    percents: list[float] = field(default_factory=list)
    trials: int = 5
    knn: bool = True
    knn_k: int = 20  # capped at the number of labelled images
    cs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    cv_min_shots: int = 5  # pick C by stratified CV when every class has this many shots
    default_c: float = 1.0  # C used below cv_min_shots
    max_iter: int = 1000
    seed: int = 0
    n_jobs: int = 1  # parallel CV fits (scikit-learn n_jobs; -1: all cores)


@dataclass
class RobustnessConfig:
    """Robustness settings."""

    corruptions: str = "all"  # all | common | extra | noise,blur,weather,digital | names
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    params: str = "auto"  # auto | cifar | imagenet
    seed: int = 0
    baseline: str | None = None  # run dir (or robustness.jsonl) whose errors normalise CE
    test_subset: int | None = None
    classifiers: str = "linear,knn"
    knn_k: int = 20  # the k whose top-1 is recorded
    official: str | None = None  # CIFAR-10-C / ImageNet-C folder: read instead of generating


@dataclass
class DenoisingConfig:
    """Denoising-diagnostics settings."""

    num_levels: int = 10  # levels strictly inside the schedule; t=0 and t=T-1 are added
    steps: list[int] = field(default_factory=lambda: [1, 5, 10, 25])
    samples: int = 8  # DDIM samples per target block
    eta: float = 0.0  # DDIM stochasticity (0: deterministic given z_T)
    num_images: int = 1000  # test images for the per-noise-level errors
    sampling_images: int = 256  # test images for multi-step sampling (K x S predictor passes)
    batch_size: int = 128
    seed: int = 0  # fixes the masks, the noise and the sampler


@dataclass
class RepresentationConfig:
    """Label-free representation metrics settings."""

    num_images: int = 10000
    alpha_fit_range: tuple[int, int] = (1, 100)


@dataclass
class AttentiveConfig:
    """Attentive probe (V-JEPA): a learned query cross-attends to frozen patch tokens, then a
    linear head; a grid of (lr, wd) probes is trained on cached tokens and chosen on a
    stratified validation split carved from train."""

    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3])  # each > 0
    weight_decays: list[float] = field(default_factory=lambda: [1e-3, 1e-2])  # each >= 0
    epochs: int = 20  # >= 1
    batch_size: int = 256  # >= 1; capped so every epoch has at least 10 steps
    warmup_epochs: float = 0.0  # >= 0; linear warm-up, then cosine decay to 0
    num_heads: int = 0  # >= 0; 0: the encoder's own number of heads
    depth: int = 1  # >= 1; the cross-attention block plus depth-1 self-attention blocks
    val_fraction: float = 0.1  # (0, 1)
    refit: bool = False  # retrain the selected (lr, wd) on all of train before testing
    seed: int = 0


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning: encoder plus a linear head, short schedule, AdamW with
    layer-wise lr decay (MAE / BEiT recipe), label smoothing; test top-1/top-5 at the end."""

    epochs: int = 10  # >= 1
    batch_size: int = 128  # >= 1
    lr: float = 1e-3  # > 0; peak lr of the head and last block (not rescaled by batch size)
    layer_decay: float = 0.75  # (0, 1]; layer i from the top trains at lr * layer_decay**i
    weight_decay: float = 0.05  # >= 0; not on biases, norms, tokens and positions
    warmup_epochs: float = 1.0  # >= 0; linear warm-up, then cosine decay to 0
    label_smoothing: float = 0.1  # [0, 1)
    augment: Literal["crop_flip", "none"] = "crop_flip"  # random resized crop + flip, or none
    max_train_images: int = 0  # >= 0; a stratified subset of train (0: all of it)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    seed: int = 0


@dataclass
class EvalConfig:
    """Settings shared by all protocols, and each protocol's own section."""

    encoder: str = "target"  # target | context
    pool: str = "mean"  # mean | last4
    batch_size: int = 256
    device: str = "auto"
    cache: bool = True
    cache_dir: str | None = None  # feature cache; default <DJEPA_CACHE_DIR>/features
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    lowshot: LowShotConfig = field(default_factory=LowShotConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    denoising: DenoisingConfig = field(default_factory=DenoisingConfig)
    representation: RepresentationConfig = field(default_factory=RepresentationConfig)
    attentive: AttentiveConfig = field(default_factory=AttentiveConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class Config:
    """The whole resolved configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if dataclasses.is_dataclass(tp):
            keys.extend(_valid_keys(tp, full + "."))
    return keys


def _unknown_key_error(key: str, root: type) -> UserError:
    valid = _valid_keys(root)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(close)}?" if close else f"; valid sections: {_sections(root)}"
    )
    return UserError(f"unknown config key '{key}'{hint}")


def _sections(root: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(root))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to type `tp`, or raise a UserError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except UserError as err:
                errors.append(err)
        raise UserError(f"config key '{key}' expects {_describe(tp)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key '{key}' expects {_describe(tp)}, got {value!r}")
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(v, args[0], key) for v in value)
            if len(value) != len(args):
                raise UserError(
                    f"config key '{key}' expects {len(args)} values like {_describe(tp)}, "
                    f"got {value!r}"
                )
            return tuple(coerce(v, a, key) for v, a in zip(value, args, strict=True))
        return [coerce(v, args[0], key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key '{key}' expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"config key '{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"config key '{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config key '{key}' expects a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' is a section; set its fields as '{key}.FIELD'")
        return from_dict(tp, value, prefix=key + ".")
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_describe(a) for a in args) + "]"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, _type_name(tp)
    )


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, checking every key and type."""
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise _unknown_key_error(f"{prefix}{key}", Config if prefix else cls)
        kwargs[key] = coerce(value, types_[key], f"{prefix}{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain nested dict (lists, not tuples) suitable for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def parse_override(text: str) -> tuple[str, Any]:
    """Split a `key.sub=value` override; the value is parsed as YAML (`[10,20]`, `true`, `1e-3`)."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key.sub=value, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string; accept it as a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides to a nested dict, checking keys against Config."""
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        cls: Any = Config
        node = data
        for i, part in enumerate(parts):
            types_ = _field_types(cls)
            if part not in types_:
                raise _unknown_key_error(key, Config)
            tp = types_[part]
            if i == len(parts) - 1:
                node[part] = coerce(value, tp, key)
            else:
                if not dataclasses.is_dataclass(tp):
                    raise _unknown_key_error(key, Config)
                node = node.setdefault(part, {})
                cls = tp
    return data


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Resolve defaults <- preset <- config file <- overrides into a checked Config."""
    data: dict[str, Any] = {}
    if preset:
        data = merge(data, load_preset(preset))
    if config_file:
        data = merge(data, load_yaml(config_file))
    data = apply_overrides(data, overrides or [])
    return from_dict(Config, data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from the plain dict stored in a checkpoint or config.yaml."""
    return from_dict(Config, data)
