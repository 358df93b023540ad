"""The protocol interface: one `EvalContext` in, a list of result records out.

A protocol is a module in eval_protocols/ with one entry point registered by name:

    from djepa_bench.eval_protocols.base import EvalContext, ProtocolSkipped
    from djepa_bench.eval_protocols.registry import register

    @register("knn", "weighted k-NN on frozen features")
    def run(ctx: EvalContext) -> list[dict]:
        train = ctx.features.get("train")            # (N, D) float32, cached on disk
        test = ctx.features.get("test")
        ...
        return [ctx.record("knn", "top1", 71.3, {"k": 20, ...}, time_s=...)]

What the context gives a protocol:
- `identity` (RunIdentity), `config` (the resolved Config: read your own section, e.g.
  `ctx.config.eval.knn`), `device`, `dataset`, `splits` {"train", "test"} (ImageSplit),
  `num_classes`, `log(msg)`.
- `features` (FeatureSource): `get(split)` clean features as a float32 tensor (for sets
  that fit); `array(split)` the same features as a read-only 2-D array over the on-disk
  shards (`.shape`, `x[a:b]` -> numpy; for streaming at any size; djepa_bench.shards);
  `tokens(split)` patch tokens (N, T, D) likewise; `get(split, transform=NAME,
  batch_transform=fn)` features of transformed images, fn(images, start_index) -> images on
  the device, deterministic; NAME is part of the cache key. `labels(split)`.
- `encoder` (djepa_bench.encoders.Encoder): `.encode(images) -> (B, D)` (a FeatureNet: the
  model's own normalisation, then pooling), `.module` (the frozen backbone or None for
  pixels), `.image_size`, `.tokens` (final patch tokens, None for pixels).
- `tokens(split)`: the final patch tokens (N, T, D) float16 of a split, on disk and
  memory-mapped (row slicing returns numpy arrays); for token-level protocols.
- `checkpoint`: the loaded checkpoint dict (None for --model pixels/random/timm); a D-JEPA /
  I-JEPA run's predictor and schedule: `djepa_bench.checkpoint.load_predictor(ctx.checkpoint)`.
- Shared, memoised within one `eval` (so protocols reuse each other's work):
  `linear_probe()` -> LinearProbe fitted on clean train features with config.eval.linear
  (`.logits/.predict/.accuracy/.score` on raw features, `.hparams`);
  `knn_classifier()` -> KnnClassifier over the clean train features with config.eval.knn
  (`.scores(queries, ks)`, `.accuracy(queries, labels, ks)`, `.k_used(k)`, `.params`).
- `record(protocol, metric, value, params, split="test", time_s=0.0)` -> a DESIGN section-3
  record with the run identity and dataset filled in; params also name the encoder
  (target/context) and pool the features came from.

Outside the CLI (tests, notebooks): `build_context(load_subject(model="pixels",
overrides=["data.dataset=digits"]))` gives the same context `djepa-bench eval` builds.

A protocol that does not apply (e.g. denoising on --model pixels) raises ProtocolSkipped
with a one-line reason; `eval --protocol all` logs it and goes on. Bad settings raise
UserError. Protocols must not write files: the eval command appends the returned records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from djepa_bench.config import Config
from djepa_bench.data import ImageSplit
from djepa_bench.encoders import Encoder, Subject, make_encoder
from djepa_bench.feature_cache import FeatureSource
from djepa_bench.knn import KnnClassifier
from djepa_bench.linear_probe import LinearProbe, fit_linear_probe
from djepa_bench.records import RunIdentity, make_record

__all__ = [
    "EvalContext",
    "KnnClassifier",
    "LinearProbe",
    "ProtocolSkipped",
    "build_context",
    "fit_linear_probe",
]


class ProtocolSkipped(Exception):
    """The protocol does not apply to this subject; the message says why (one line)."""


@dataclass
class EvalContext:
    """Everything a protocol needs about the encoder under evaluation and its data."""

    identity: RunIdentity
    config: Config
    device: torch.device
    dataset: str
    splits: dict[str, ImageSplit]
    features: FeatureSource
    encoder: Encoder
    checkpoint: dict[str, Any] | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)
    shared: dict[str, Any] = field(default_factory=dict)  # memo across protocols

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset."""
        return self.splits["train"].num_classes

    def record(
        self,
        protocol: str,
        metric: str,
        value: float,
        params: dict[str, Any] | None = None,
        split: str = "test",
        time_s: float = 0.0,
    ) -> dict[str, Any]:
        """One result record for this run and dataset (params name the encoder and pool)."""
        params = {"encoder": self.encoder.which, "pool": self.encoder.pool, **(params or {})}
        return make_record(
            self.identity, dataset=self.dataset, split=split, protocol=protocol,
            metric=metric, value=value, params=params, time_s=time_s,
            eval_preset=self.config.eval.preset,
        )  # fmt: skip

    def tokens(self, split: str):
        """Final patch tokens (N, T, D) of `split` as a read-only array over on-disk shards
        (row slicing returns numpy arrays); extracted once per (encoder, split)."""
        return self.features.tokens(split)

    def linear_probe(self) -> LinearProbe:
        """The linear head on clean train features (config.eval.linear), fitted once per eval."""
        if "linear_probe" not in self.shared:
            self.shared["linear_probe"] = fit_linear_probe(
                self.features.array("train"),  # streamed from the shards, never all in memory
                self.features.labels("train"),
                self.config.eval.linear,
                num_classes=self.num_classes,
                device=self.device,
                log=self.log,
            )
        return self.shared["linear_probe"]

    def knn_classifier(self) -> KnnClassifier:
        """A kNN classifier whose bank is the clean train features (config.eval.knn),
        streamed from the on-disk shards."""
        if "knn_classifier" not in self.shared:
            self.shared["knn_classifier"] = KnnClassifier.from_config(
                self.features.array("train"),
                self.features.labels("train"),
                self.num_classes,
                self.config.eval.knn,
                device=self.device,
            )
        return self.shared["knn_classifier"]


def load_splits(cfg: Config) -> dict[str, ImageSplit]:
    """The train and test splits of config.data.dataset (decoded once, then from the cache)."""
    from djepa_bench.data import load_dataset

    data = cfg.data
    return {
        s: load_dataset(data.dataset, s, data.root, data.download, data.cache_dir)
        for s in ("train", "test")
    }


def build_context(
    subject: Subject,
    *,
    device: str | torch.device = "cpu",
    splits: dict[str, ImageSplit] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    distributed: bool = False,
) -> EvalContext:
    """The context `djepa-bench eval` builds for `subject` (see djepa_bench.encoders.load_subject).

    Loads the train/test splits of config.data.dataset unless `splits` is given, builds the
    frozen encoder at the checkpoint's image size (else data.image_size, else the dataset's)
    and a FeatureSource honouring eval.cache / eval.cache_dir / eval.batch_size.
    """
    cfg = subject.config
    device = torch.device(device)
    dataset = cfg.data.dataset if splits is None else next(iter(splits.values())).name
    if splits is None:
        splits = load_splits(cfg)
    first = splits["train"]
    size = subject.data.get("image_size") or cfg.data.image_size or first.image_size
    encoder = make_encoder(
        subject, int(size), first.channels, cfg.eval.encoder, cfg.eval.pool, device,
        data_norm=(first.mean, first.std),
    )  # fmt: skip
    features = FeatureSource(
        encoder, splits, cache_dir=cfg.eval.cache_dir, use_cache=cfg.eval.cache,
        batch_size=cfg.eval.batch_size, device=device, distributed=distributed,
        progress=progress, log=log, feature_dtype=cfg.eval.feature_dtype,
        shard_rows=cfg.eval.shard_rows,
    )  # fmt: skip
    return EvalContext(
        identity=subject.identity, config=cfg, device=device, dataset=dataset,
        splits=splits, features=features, encoder=encoder, checkpoint=subject.checkpoint,
        log=log or (lambda msg: None),
    )  # fmt: skip
