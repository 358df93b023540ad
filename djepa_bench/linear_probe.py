"""Linear probe on frozen features: a grid of (lr, wd) heads trained at once as one batched head.

Features are standardised with training statistics. All heads of the grid see the same
minibatches; their weights are one tensor (H, D, C) updated by AdamW or SGD with a per-head
learning rate and weight decay and a cosine schedule. The head is chosen on a stratified,
seeded validation split carved from train (never test), then (by default) retrained on all
of train with the chosen hyper-parameters. `fit_linear_probe` is what other protocols reuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from djepa_bench.config import LinearConfig
from djepa_bench.distributed import resolve_device
from djepa_bench.errors import UserError


def standardiser(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (std floored) of training features, float32."""
    feats = feats.float()
    return feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-6)


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, validation indices): `fraction` of each class to validation, seeded."""
    labels = labels.cpu()
    gen = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = int(round(fraction * len(idx)))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Top-k accuracies in percent; k is capped at the number of classes."""
    labels = labels.to(logits.device)
    order = logits.topk(min(max(ks), logits.shape[-1]), dim=-1).indices
    hits = order == labels.unsqueeze(-1)
    return {
        k: 100.0 * hits[..., : min(k, logits.shape[-1])].any(-1).float().mean().item() for k in ks
    }


@dataclass
class LinearProbe:
    """A trained linear head with its standardisation: logits = ((x - mean) / std) @ W + b."""

    weight: torch.Tensor  # (D, C)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    hparams: dict[str, Any] = field(default_factory=dict)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Class logits (N, C) for raw (unstandardised) features."""
        dev = self.weight.device
        out = []
        for chunk in feats.split(65536):
            x = (chunk.to(dev).float() - self.mean) / self.std
            out.append(x @ self.weight + self.bias)
        return torch.cat(out)

    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """Predicted class (N,)."""
        return self.logits(feats).argmax(1)

    def accuracy(self, feats: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
        """Top-k accuracy in percent."""
        return topk_accuracy(self.logits(feats), labels, ks)

    def score(self, feats: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy in percent."""
        return self.accuracy(feats, labels, (1,))[1]

    def to(self, device: str | torch.device) -> LinearProbe:
        """The probe with its tensors on `device`."""
        move = {k: getattr(self, k).to(device) for k in ("weight", "bias", "mean", "std")}
        return LinearProbe(**move, hparams=dict(self.hparams))

    def state_dict(self) -> dict[str, Any]:
        """Tensors and hyper-parameters (weights_only-loadable)."""
        return {k: getattr(self, k).cpu() for k in ("weight", "bias", "mean", "std")} | {
            "hparams": dict(self.hparams)
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LinearProbe:
        """Rebuild a probe saved with state_dict()."""
        return cls(state["weight"], state["bias"], state["mean"], state["std"], state["hparams"])


def train_linear_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: torch.Tensor,
    wds: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train H = len(lrs) softmax heads on standardised `x` (N, D) at once -> W (H, D, C), b (H, C).

    Heads differ only in their learning rate and (decoupled) weight decay; every step all
    heads see the same minibatch, so the heads (biases as an extra input row of ones) are
    one (D+1, H*C) matrix: a step is one GEMM forward, one for the gradient (softmax
    cross-entropy, written out) and a handful of element-wise optimiser ops, which keeps
    it cheap on a GPU where launches dominate. Cosine learning-rate decay to zero over all
    steps; no decay on biases.
    """
    if optimizer not in ("adamw", "sgd"):
        raise UserError(f"unknown eval.linear.optimizer '{optimizer}'; use adamw or sgd")
    device = x.device
    heads, dim, n = len(lrs), x.shape[1], x.shape[0]
    w = torch.zeros(dim + 1, heads * num_classes, device=device)
    lr = lrs.to(device).float().repeat_interleave(num_classes)  # per column of w
    decay = (lr * wds.to(device).float().repeat_interleave(num_classes)).repeat(dim + 1, 1)
    decay[-1] = 0.0  # the bias row
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    gen = torch.Generator().manual_seed(seed)
    # Small training sets get smaller batches: at least 10 steps per epoch.
    batch_size = max(1, min(batch_size, -(-n // 10)))
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    onehot = F.one_hot(y.to(device).long(), num_classes).float().unsqueeze(1)  # (N, 1, C)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            xb = F.pad(x[idx], (0, 1), value=1.0)
            # d(mean CE)/d logits, per head: (softmax - onehot) / B.
            probs = torch.softmax((xb @ w).view(-1, heads, num_classes), dim=-1)
            probs.sub_(onehot[idx])
            g = torch.mm(xb.T, probs.view(xb.shape[0], -1)).div_(xb.shape[0])
            step += 1
            factor = 0.5 * (1.0 + math.cos(math.pi * (step - 1) / total))
            w.addcmul_(w, decay, value=-factor)
            if optimizer == "adamw":
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = v.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
                w.addcdiv_(m * lr, denom, value=-factor / (1 - beta1**step))
            else:
                m.mul_(momentum).add_(g)
                w.addcmul_(m, lr, value=-factor)
    w = w.view(dim + 1, heads, num_classes).permute(1, 0, 2)
    return w[:, :dim].contiguous(), w[:, dim].contiguous()


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    cfg: LinearConfig,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> LinearProbe:
    """Select (lr, wd) on a stratified validation split of train, then return the trained head.

    `hparams` of the result holds lr, wd, optimizer, epochs, val_top1 (of the selected head on
    the validation split), grid (all heads' val_top1) and refit (retrained on all of train).
    """
    log = log or (lambda msg: None)
    device = resolve_device(str(device))
    labels = train_labels.long().cpu()
    num_classes = int(num_classes or int(labels.max()) + 1)
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    if not grid:
        raise UserError("eval.linear.lrs and eval.linear.weight_decays must not be empty")
    lrs = torch.tensor([g[0] for g in grid])
    wds = torch.tensor([g[1] for g in grid])
    fit_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.seed)
    feats = train_feats.float()
    if len(val_idx) == 0:
        raise UserError("eval.linear.val_fraction leaves no validation images; raise it")
    mean, std = standardiser(feats[fit_idx])
    mean, std = mean.to(device), std.to(device)
    x_fit = (feats[fit_idx].to(device) - mean) / std
    x_val = (feats[val_idx].to(device) - mean) / std
    common = dict(
        epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
        momentum=cfg.momentum, seed=cfg.seed,
    )  # fmt: skip
    w, b = train_linear_heads(x_fit, labels[fit_idx], num_classes, lrs, wds, **common)
    val_logits = torch.matmul(x_val.unsqueeze(0), w) + b.unsqueeze(1)
    val_top1 = (val_logits.argmax(-1) == labels[val_idx].to(device)).float().mean(1) * 100
    best = int(torch.argmax(val_top1))  # first of equals: the smaller lr / wd
    lr, wd = grid[best]
    log(f"linear: {len(grid)} heads, selected lr={lr:g} wd={wd:g} (val top-1 {val_top1[best]:.2f})")
    accs = val_top1.tolist()
    hparams = {
        "lr": lr, "wd": wd, "optimizer": cfg.optimizer, "epochs": cfg.epochs,
        "val_top1": float(val_top1[best]), "val_fraction": cfg.val_fraction,
        "grid": {f"{a:g},{w:g}": round(v, 3) for (a, w), v in zip(grid, accs, strict=True)},
        "refit": bool(cfg.refit),
    }  # fmt: skip
    if not cfg.refit:
        return LinearProbe(w[best], b[best], mean, std, hparams)
    mean, std = standardiser(feats)
    mean, std = mean.to(device), std.to(device)
    x_all = (feats.to(device) - mean) / std
    w1, b1 = train_linear_heads(
        x_all, labels, num_classes, torch.tensor([lr]), torch.tensor([wd]), **common
    )
    return LinearProbe(w1[0], b1[0], mean, std, hparams)
