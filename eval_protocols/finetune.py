"""Fine-tuning protocol: the whole encoder plus a linear head, trained end to end, short schedule.

The recipe of MAE / BEiT fine-tuning, shortened: AdamW with layer-wise learning-rate decay
(timm's `param_groups_layer_decay`: the head and last block train at `lr`, each block below
at `layer_decay` times the one above, patch embedding lowest; no weight decay on biases,
norms, class token and positions), linear warm-up then cosine decay, label smoothing,
random resized crops and flips; bf16 autocast on CUDA. The frozen encoder of the other
protocols is deep-copied, never changed. One record per run (test top-1 and top-5 after
the last epoch; nothing is selected on test). Without mixup, cutmix, RandAugment and drop
path, which the full recipes add for 100-epoch schedules.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torch import nn

from djepa_bench.config import FinetuneConfig
from djepa_bench.data import ImageSplit, iterate_batches
from djepa_bench.encoders import FeatureNet
from djepa_bench.errors import UserError
from djepa_bench.eval_protocols.base import EvalContext, ProtocolSkipped
from djepa_bench.eval_protocols.registry import register
from djepa_bench.linear_probe import stratified_split, topk_accuracy

# Layer groups of a ViT without a group_matcher of its own (this project's VisionEncoder):
# embeddings first, then one group per block, the final norm with the last block.
VIT_GROUPS = {
    "stem": r"^(?:cls_token|reg_token|pos_embed|patch_embed)",
    "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
}


class FinetuneNet(nn.Module):
    """A FeatureNet (normalisation, backbone, pooling) followed by a linear head."""

    def __init__(self, features: FeatureNet, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)  # MAE's head init
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """Layer id per parameter name (timm's interface): backbone groups, then the head."""
        backbone = self.features.backbone
        matcher = getattr(backbone, "group_matcher", None)
        groups = matcher(coarse) if matcher else VIT_GROUPS
        layer_of = group_parameters(backbone, groups, reverse=True)
        top = max(layer_of.values(), default=0) + 1
        prefix = "features.backbone."
        return lambda name: layer_of.get(name.removeprefix(prefix), top)

    def no_weight_decay(self) -> set[str]:
        """Backbone parameters kept out of weight decay besides 1-D ones (tokens, positions)."""
        names = getattr(self.features.backbone, "no_weight_decay", lambda: set())()
        return {f"features.backbone.{n}" for n in names}


def _train_split(split: ImageSplit, max_images: int, seed: int) -> ImageSplit:
    if not max_images or max_images >= len(split):
        return split
    keep, _ = stratified_split(split.labels, 1 - max_images / len(split), seed)
    return split.subset(keep)


def _autocast(device: torch.device, precision: str):
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _batches(split, cfg, device, image_size, generator):
    batch = max(1, min(cfg.batch_size, len(split)))
    if cfg.augment == "crop_flip":
        yield from iterate_batches(
            split, batch, device=device, train=True, generator=generator,
            image_size=image_size, drop_last=True,
        )  # fmt: skip
        return
    order = torch.randperm(len(split), generator=generator)
    yield from iterate_batches(
        split.subset(order), batch, device=device, image_size=image_size, drop_last=True
    )


@torch.inference_mode()
def _test_logits(model, split, cfg, device, image_size) -> torch.Tensor:
    model.eval()
    out = []
    for images, _ in iterate_batches(split, cfg.batch_size, device=device, image_size=image_size):
        with _autocast(device, cfg.precision):
            out.append(model(images).float().cpu())
    return torch.cat(out)


def fine_tune(ctx: EvalContext, cfg: FinetuneConfig) -> tuple[FinetuneNet, dict[str, float]]:
    """A trained copy of the context's encoder with its head, and the last epoch's figures."""
    device, image_size = ctx.device, ctx.encoder.image_size
    train = _train_split(ctx.splits["train"], cfg.max_train_images, cfg.seed)
    features = copy.deepcopy(ctx.encoder.encode).requires_grad_(True)
    with torch.no_grad():
        probe_images, _ = next(iterate_batches(train, 2, device=device, image_size=image_size))
        dim = features(probe_images).shape[1]
    torch.manual_seed(cfg.seed)
    model = FinetuneNet(features, dim, ctx.num_classes).to(device)
    groups = param_groups_layer_decay(
        model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
        no_weight_decay_list=model.no_weight_decay(),
    )  # fmt: skip
    optimiser = torch.optim.AdamW(groups, lr=cfg.lr)
    steps_per_epoch = max(1, len(train) // max(1, min(cfg.batch_size, len(train))))
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    start, step = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in _batches(train, cfg, device, image_size, generator):
            factor = (step + 1) / warmup if step < warmup else 0.5 * (
                1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))
            )  # fmt: skip
            step += 1
            for group in optimiser.param_groups:
                group["lr"] = cfg.lr * factor * group["lr_scale"]
            with _autocast(device, cfg.precision):
                logits = model(images).float()
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise UserError(
                    f"fine-tuning diverged (loss {loss.item()}) in epoch {epoch + 1}; "
                    f"lower eval.finetune.lr (now {cfg.lr:g})"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        ctx.log(
            f"finetune: epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / max(1, seen):.3f} "
            f"train top-1 {100 * correct / max(1, seen):.2f} ({time.perf_counter() - start:.0f}s)"
        )
    return model, {"train_images": len(train), "train_loss": loss_sum / max(1, seen)}


@register(
    "finetune",
    "fine-tuning: encoder + linear head end to end, layer-wise lr decay (run by name, not in all)",
    in_all=False,
    feature_splits=(),
)
def run(ctx: EvalContext) -> list[dict]:
    """Fine-tune a copy of the encoder with a linear head; record test top-1/top-5."""
    cfg = ctx.config.eval.finetune
    if ctx.encoder.module is None or not isinstance(ctx.encoder.encode, FeatureNet):
        raise ProtocolSkipped(f"{ctx.identity.run} has no trainable encoder")
    start = time.perf_counter()
    model, figures = fine_tune(ctx, cfg)
    logits = _test_logits(model, ctx.splits["test"], cfg, ctx.device, ctx.encoder.image_size)
    accuracy = topk_accuracy(logits, ctx.splits["test"].labels, (1, 5))
    elapsed = time.perf_counter() - start
    # base_lr / weight_decay, not lr / wd: those name what a probe *selected* (reports treat
    # them as outcomes), while here they are settings that make a different measurement.
    params = {
        "epochs": cfg.epochs, "base_lr": cfg.lr, "layer_decay": cfg.layer_decay,
        "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
        "warmup_epochs": cfg.warmup_epochs,
        "label_smoothing": cfg.label_smoothing, "augment": cfg.augment,
        "train_images": figures["train_images"],
    }  # fmt: skip
    ctx.log(f"finetune: test top-1 {accuracy[1]:.2f} after {cfg.epochs} epochs ({elapsed:.0f}s)")
    return [
        ctx.record("finetune", f"top{k}", v, params, time_s=elapsed) for k, v in accuracy.items()
    ]
