"""Typed configuration: dataclasses per section, YAML presets, `--set key.sub=value` overrides.

Every field's annotation says what it accepts (`Literal` choices, numeric ranges; see
djepa_bench.config_types), and values are checked when the config is built, so a typo or an
out-of-range number fails at once, before any data is read.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from djepa_bench.config_types import (
    Ascending,
    DeviceName,
    Fraction,
    Length,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    coerce,
    field_types,
    is_section,
)
from djepa_bench.errors import UserError
from djepa_bench.io import load_yaml
from djepa_bench.presets import load_preset

Method = Literal["ijepa", "djepa"]
# ViT sizes of model.size: (width, depth, heads); model.embed_dim/depth/num_heads override.
ENCODER_SIZES = {
    "nano": (128, 6, 4),
    "micro": (192, 6, 6),  # tiny's width at nano's depth: cifar10-cpu's encoder
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}
ScaleRange = Annotated[tuple[Fraction, Fraction], Ascending()]
AspectRange = Annotated[tuple[PositiveFloat, PositiveFloat], Ascending()]
Betas = tuple[Annotated[float, Range(ge=0, lt=1)], Annotated[float, Range(ge=0, lt=1)]]
Momentum = Annotated[float, Range(ge=0, le=1)]


@dataclass
class ModelConfig:
    """ViT encoder and predictor sizes."""

    size: Literal["nano", "micro", "tiny", "small", "base"] = "nano"  # see ENCODER_SIZES
    patch_size: PositiveInt = 4
    embed_dim: PositiveInt | None = None  # overrides the size's width when set
    depth: PositiveInt | None = None  # overrides the size's depth when set
    num_heads: PositiveInt | None = None  # overrides the size's heads when set
    predictor_dim: PositiveInt = 128
    predictor_depth: PositiveInt = 4
    predictor_heads: PositiveInt = 4
    drop_path: Annotated[float, Range(ge=0, lt=1)] = 0.0
    pos_embed_scale: NonNegativeFloat = 1.0  # factor on the encoder's fixed sin-cos positions


@dataclass
class MaskConfig:
    """I-JEPA multi-block masking (DESIGN.md section 1)."""

    num_targets: PositiveInt = 4
    target_scale: ScaleRange = (0.15, 0.2)
    target_aspect: AspectRange = (0.75, 1.5)
    context_scale: ScaleRange = (0.85, 1.0)
    context_aspect: AspectRange = (1.0, 1.0)
    min_keep: PositiveInt = 4
    # How context sets of different lengths are batched: "pad" keeps every context token
    # (padded to the batch maximum with attention masking); "truncate" cuts to the batch
    # minimum like the official collator; "subsample" draws a random subset of that size;
    # "fixed" keeps every token like "pad" but pads contexts and target blocks to the longest
    # the mask scales allow, so every shape of a step is fixed (what train.compile needs), and
    # samples the masks on the training device.
    context_batching: Literal["pad", "truncate", "subsample", "fixed"] = "pad"


@dataclass
class DiffusionConfig:
    """Diffusion noise on target embeddings for D-JEPA."""

    schedule: Literal["cosine", "linear"] = "cosine"
    timesteps: Annotated[int, Range(ge=2)] = 1000
    lambda_diff: NonNegativeFloat = 1.0
    noise_draws: PositiveInt = 1  # noise levels drawn per target block
    min_snr_gamma: NonNegativeFloat = 0.0  # 0 disables min-SNR weighting
    loss: Literal["mse", "smooth_l1"] = "mse"


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

    variance: NonNegativeFloat = 0.0
    covariance: NonNegativeFloat = 0.0
    projector_dim: NonNegativeInt = 0

    @property
    def enabled(self) -> bool:
        """Whether either term has a weight (otherwise nothing is pooled, built or added)."""
        return self.variance != 0 or self.covariance != 0


@dataclass
class OptimConfig:
    """Optimiser and schedules."""

    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    min_lr: NonNegativeFloat = 1e-6
    warmup_epochs: NonNegativeFloat = 1.0
    weight_decay: NonNegativeFloat = 0.04
    final_weight_decay: NonNegativeFloat = 0.4
    betas: Betas = (0.9, 0.999)
    ema_start: Momentum = 0.996
    ema_end: Momentum = 1.0
    clip_grad: NonNegativeFloat = 0.0  # 0 disables clipping
    jepa_loss: Literal["smooth_l1", "mse"] = "smooth_l1"


@dataclass
class DataConfig:
    """Which dataset, where it lives, and training augmentation."""

    dataset: str = "digits"  # a name from `djepa-bench list datasets` or imagefolder:PATH
    root: str | None = None  # default: $DJEPA_DATA_ROOT or ~/.cache/djepa-bench/data
    download: bool = False
    cache_dir: str | None = None  # default: $DJEPA_CACHE_DIR or ~/.cache/djepa-bench
    image_size: PositiveInt | None = None  # None: the dataset's native size
    crop_scale: ScaleRange = (0.3, 1.0)
    hflip: bool = True
    num_workers: NonNegativeInt = 2  # DataLoader workers for large-image datasets
    train_subset: PositiveInt | None = None  # only the first N (shuffled, seeded) train images


@dataclass
class TrainConfig:
    """The training run itself."""

    method: Method = "djepa"
    epochs: PositiveInt = 10
    seed: NonNegativeInt = 0
    device: DeviceName = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # torch.compile the step's forward and loss as one graph, compiled once: with
    # mask.context_batching=fixed for static shapes, otherwise with symbolic (dynamic) token
    # counts; compile_mode is torch.compile's mode ("reduce-overhead" and "max-autotune"
    # replay CUDA graphs on a GPU, which needs fixed shapes).
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    log_every: PositiveInt = 20  # steps between log.jsonl rows
    checkpoint_every: PositiveInt = 1  # epochs between checkpoint-epNNN.pt files
    checkpoint_every_steps: NonNegativeInt = 0  # also write checkpoint.pt every N steps (0: off)
    monitor: bool = True  # per-epoch kNN / RankMe / feature-std on a small held-out set
    monitor_size: PositiveInt = 1000
    cpu_threads: NonNegativeInt = 0  # torch intra-op threads on CPU (0: torch's default)
    tensorboard: bool = False  # mirror log.jsonl as TensorBoard scalars in RUN/tensorboard


@dataclass
class KnnConfig:
    """k-NN protocol settings (DESIGN.md section 4)."""

    k: Annotated[list[PositiveInt], Length(min=1)] = field(
        default_factory=lambda: [10, 20, 100, 200]
    )
    temperature: PositiveFloat = 0.07
    weighting: Literal["dino", "uniform"] = "dino"  # dino: exp(s/T); uniform: majority vote
    backend: Literal["auto", "faiss", "torch"] = "auto"  # auto: FAISS when installed
    # exact: every bank row, streamed block by block; ivf-flat / ivf-pq: FAISS inverted
    # lists (PQ: compressed codes) for banks beyond memory, recall measured against exact.
    index: Literal["exact", "ivf-flat", "ivf-pq"] = "exact"
    nlist: NonNegativeInt = 0  # inverted lists (0: about sqrt(bank rows))
    nprobe: PositiveInt = 16  # lists searched per query
    pq_m: NonNegativeInt = 0  # PQ bytes per vector (0: width / 8); must divide the width
    refine: PositiveInt = 4  # ivf-pq: k x refine candidates re-ranked by exact cosine (1: off)
    recall_sample: PositiveInt = 1000  # queries whose approximate neighbours are checked


@dataclass
class LinearConfig:
    """Linear-probe settings."""

    lrs: Annotated[list[PositiveFloat], Length(min=1)] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1]
    )
    # SGD: an L2 penalty wd/2 ||W||^2 on the mean loss (scikit-learn's C = 1 / (wd * N));
    # AdamW: decoupled, lr * wd per step.
    weight_decays: Annotated[list[NonNegativeFloat], Length(min=1)] = field(
        default_factory=lambda: [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    )
    optimizer: Literal["sgd", "adamw"] = "sgd"
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 2048  # capped so every epoch has at least 10 steps
    val_fraction: OpenFraction = 0.1
    seed: NonNegativeInt = 0
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD only
    refit: bool = True  # retrain the selected (lr, wd) on all of train before testing
    # Streaming: chunks of rows read whole, in random order, shuffled together in a buffer;
    # small chunks mix classes of a class-sorted file, a larger buffer mixes more.
    chunk_rows: PositiveInt = 64
    buffer_rows: PositiveInt = 262144


@dataclass
class LowShotConfig:
    """Low-shot settings."""

    shots: Annotated[list[PositiveInt], Length(min=0)] = field(
        default_factory=lambda: [1, 2, 5, 10, 25]
    )
    percents: list[Annotated[float, Range(gt=0, le=100)]] = field(default_factory=list)
    trials: PositiveInt = 5
    knn: bool = True
    knn_k: PositiveInt = 20  # capped at the number of labelled images
    cs: Annotated[list[PositiveFloat], Length(min=1)] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    )
    cv_min_shots: Annotated[int, Range(ge=2)] = 5  # pick C by stratified CV from this many
    default_c: PositiveFloat = 1.0  # C used below cv_min_shots
    max_iter: PositiveInt = 1000
    seed: NonNegativeInt = 0
    n_jobs: Annotated[int, Range(ge=-1)] = 1  # parallel CV fits (scikit-learn; -1: all cores)


@dataclass
class RobustnessConfig:
    """Robustness settings."""

    corruptions: str = "all"  # all | common | extra | noise,blur,weather,digital | names
    severities: Annotated[list[Annotated[int, Range(ge=1, le=5)]], Length(min=1)] = field(
        default_factory=lambda: [1, 2, 3, 4, 5]
    )
    params: Literal["auto", "cifar", "imagenet"] = "auto"
    seed: NonNegativeInt = 0
    baseline: str | None = None  # run dir (or robustness.jsonl) whose errors normalise CE
    test_subset: PositiveInt | None = None
    classifiers: str = "linear,knn"  # linear and/or knn, comma-separated
    knn_k: PositiveInt = 20  # the k whose top-1 is recorded
    official: str | None = None  # CIFAR-10-C / ImageNet-C folder: read instead of generating


@dataclass
class DenoisingConfig:
    """Denoising-diagnostics settings."""

    num_levels: PositiveInt = 10  # levels strictly inside the schedule; t=0 and T-1 added
    steps: Annotated[list[PositiveInt], Length(min=1)] = field(
        default_factory=lambda: [1, 5, 10, 25]
    )
    samples: Annotated[int, Range(ge=2)] = 8  # DDIM samples per target block (spread needs 2)
    eta: Probability = 0.0  # DDIM stochasticity (0: deterministic given z_T)
    num_images: PositiveInt = 1000  # test images for the per-noise-level errors
    sampling_images: PositiveInt = 256  # test images for multi-step sampling
    batch_size: PositiveInt = 128
    seed: NonNegativeInt = 0  # fixes the masks, the noise and the sampler


@dataclass
class RepresentationConfig:
    """Label-free representation metrics settings."""

    num_images: Annotated[int, Range(ge=2)] = 10000
    alpha_fit_range: Annotated[tuple[PositiveInt, PositiveInt], Ascending()] = (1, 100)


@dataclass
class AttentiveConfig:
    """Attentive probe (V-JEPA): a learned query cross-attends to frozen patch tokens, then a
    linear head; a grid of (lr, wd) probes is trained on cached tokens and chosen on a
    stratified validation split carved from train."""

    lrs: Annotated[list[PositiveFloat], Length(min=1)] = field(default_factory=lambda: [1e-3, 3e-3])
    weight_decays: Annotated[list[NonNegativeFloat], Length(min=1)] = field(
        default_factory=lambda: [1e-3, 1e-2]
    )
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 256  # capped so every epoch has at least 10 steps
    warmup_epochs: NonNegativeFloat = 0.0  # linear warm-up, then cosine decay to 0
    num_heads: NonNegativeInt = 0  # 0: the encoder's own number of heads
    depth: PositiveInt = 1  # the cross-attention block plus depth-1 self-attention blocks
    val_fraction: OpenFraction = 0.1
    refit: bool = False  # retrain the selected (lr, wd) on all of train before testing
    seed: NonNegativeInt = 0


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning: encoder plus a linear head, short schedule, AdamW with
    layer-wise lr decay (MAE / BEiT recipe), label smoothing; test top-1/top-5 at the end."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3  # peak lr of the head and last block (not rescaled by batch size)
    layer_decay: Fraction = 0.75  # layer i from the top trains at lr * layer_decay**i
    weight_decay: NonNegativeFloat = 0.05  # not on biases, norms, tokens and positions
    warmup_epochs: NonNegativeFloat = 1.0  # linear warm-up, then cosine decay to 0
    label_smoothing: Annotated[float, Range(ge=0, lt=1)] = 0.1
    augment: Literal["crop_flip", "none"] = "crop_flip"  # random resized crop + flip, or none
    max_train_images: NonNegativeInt = 0  # a stratified subset of train (0: all of it)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    seed: NonNegativeInt = 0


@dataclass
class EvalConfig:
    """Settings shared by all protocols, and each protocol's own section."""

    # The named evaluation preset these settings came from (djepa_bench/presets/eval), or
    # NAME+overrides when --set changed what is measured; recorded in every result record.
    preset: str | None = None
    encoder: Literal["target", "context"] = "target"
    pool: Literal["mean", "last4", "cls", "avgpool+cls"] = "mean"
    batch_size: PositiveInt = 256
    device: DeviceName = "auto"
    cache: bool = True
    cache_dir: str | None = None  # feature cache; default <DJEPA_CACHE_DIR>/features
    feature_dtype: Literal["float16", "float32"] = "float16"  # how features are stored
    shard_rows: PositiveInt = 8192  # rows per on-disk feature shard
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


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in field_types(cls).items():
        full = f"{prefix}{name}"
        keys.append(full)
        if is_section(tp):
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


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, checking every key, type and range."""
    types_ = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise _unknown_key_error(f"{prefix}{key}", Config if prefix else cls)
        kwargs[key] = coerce(value, types_[key], f"{prefix}{key}", from_dict)
    built = cls(**kwargs)
    if cls is Config:
        check_consistency(built)
    return built


def encoder_dims(model_cfg: ModelConfig) -> tuple[int, int, int]:
    """(width, depth, heads) of the configured encoder size with explicit overrides applied."""
    width, depth, heads = ENCODER_SIZES[model_cfg.size]
    return model_cfg.embed_dim or width, model_cfg.depth or depth, model_cfg.num_heads or heads


def check_consistency(cfg: Config) -> None:
    """Checks between fields (each field's own type and range are checked as it is read)."""
    m, o = cfg.model, cfg.optim
    width, _, heads = encoder_dims(m)
    if width % heads:
        raise UserError(
            f"model width {width} is not divisible by {heads} heads; set model.num_heads"
        )
    if m.predictor_dim % m.predictor_heads:
        raise UserError(
            f"model.predictor_dim {m.predictor_dim} is not divisible by model.predictor_heads "
            f"{m.predictor_heads}"
        )
    if o.min_lr > o.lr:
        raise UserError(f"optim.min_lr {o.min_lr:g} is above optim.lr {o.lr:g}; lower min_lr")
    if o.ema_start > o.ema_end:
        raise UserError(
            f"optim.ema_start {o.ema_start:g} is above optim.ema_end {o.ema_end:g}; the EMA "
            "momentum rises during training"
        )
    t = cfg.train
    if t.compile and t.compile_mode != "default" and cfg.mask.context_batching != "fixed":
        raise UserError(
            f"train.compile_mode={t.compile_mode} needs mask.context_batching=fixed (CUDA "
            f"graphs replay static shapes; with {cfg.mask.context_batching} the token counts "
            "change every step); set mask.context_batching=fixed or train.compile_mode=default"
        )
    if not cfg.eval.lowshot.shots and not cfg.eval.lowshot.percents:
        raise UserError("eval.lowshot needs shots or percents; e.g. eval.lowshot.shots=[1,5]")


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
            types_ = field_types(cls)
            if part not in types_:
                raise _unknown_key_error(key, Config)
            tp = types_[part]
            if i == len(parts) - 1:
                checked = coerce(value, tp, key, from_dict)
                node[part] = to_dict(checked) if is_section(tp) else checked
            else:
                if not is_section(tp):
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
