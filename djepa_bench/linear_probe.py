"""Linear probe on frozen features: a grid of (lr, wd) heads trained at once as one batched head.

Features are standardised with training statistics (one streaming pass). All heads of the
grid see the same mini-batches; their weights are one tensor (H, D, C) updated by SGD with
momentum (default) or AdamW with a per-head learning rate and weight decay and a cosine
schedule. For SGD the weight decay is an L2 penalty added to the gradient (as
torch.optim.SGD does), so the head minimises mean cross-entropy + wd/2 ||W||^2: the objective
of scikit-learn's LogisticRegression with C = 1 / (wd * N). For AdamW it is decoupled. The
head is chosen on a stratified, seeded validation split carved from train (never test); a
choice on the grid's edge is logged and recorded (`grid_edge`). Then (by default) the chosen
(lr, wd) is retrained on all of train. `fit_linear_probe` is what other protocols reuse.

Features may be a tensor or any 2-D array-like with row slicing (a numpy memmap, a sharded
read view): mini-batches are streamed in chunks (djepa_bench.row_stream), so only a shuffle
buffer is ever held. Under torch.distributed each rank takes its share of every mini-batch
and the gradients are all-reduced, so all ranks hold the same heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from djepa_bench.config import LinearConfig
from djepa_bench.distributed import resolve_device
from djepa_bench.errors import UserError
from djepa_bench.row_stream import (
    FeatureArray,
    all_reduce_sum,
    check_features,
    moments,
    read_rows,
    shuffled_batches,
    world,
)

EVAL_CHUNK = 65536  # rows per read when evaluating heads


def standardiser(
    feats: FeatureArray, rows: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (std floored) of training features (`rows` of them), float32."""
    return moments(feats, rows)


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

    def _chunks(self, feats: FeatureArray):
        n = check_features(feats)[0]
        chunk = max(1, min(EVAL_CHUNK, 2**26 // self.weight.shape[1]))  # logits <= 256 MB
        for start in range(0, n, chunk):
            x = read_rows(feats, start, min(start + chunk, n), self.weight.device)
            yield start, (x - self.mean) / self.std @ self.weight + self.bias

    def logits(self, feats: FeatureArray) -> torch.Tensor:
        """Class logits (N, C) for raw (unstandardised) features."""
        return torch.cat([z for _, z in self._chunks(feats)])

    def predict(self, feats: FeatureArray) -> torch.Tensor:
        """Predicted class (N,)."""
        return torch.cat([z.argmax(1) for _, z in self._chunks(feats)])

    def accuracy(self, feats: FeatureArray, labels, ks=(1, 5)) -> dict[int, float]:
        """Top-k accuracy in percent (k capped at the number of classes), streamed in chunks."""
        labels = torch.as_tensor(labels).long()
        hits = torch.zeros(len(ks), dtype=torch.float64)
        for start, z in self._chunks(feats):
            y = labels[start : start + len(z)].to(z.device)
            order = z.topk(min(max(ks), z.shape[-1]), dim=-1).indices
            hit = order == y.unsqueeze(-1)
            for i, k in enumerate(ks):
                hits[i] += hit[:, : min(k, z.shape[-1])].any(-1).sum().item()
        return {k: 100.0 * float(h) / max(1, len(labels)) for k, h in zip(ks, hits, strict=True)}

    def score(self, feats: FeatureArray, labels) -> float:
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
    feats: FeatureArray,
    labels: torch.Tensor,
    num_classes: int,
    lrs: torch.Tensor,
    wds: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    seed: int = 0,
    rows: np.ndarray | None = None,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    chunk_rows: int = 64,
    buffer_rows: int = 262144,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train H = len(lrs) softmax heads on `rows` of `feats` at once -> W (H, D, C), b (H, C).

    Rows are standardised with `mean`/`std` (none: used as they are). Heads differ only in
    their learning rate and weight decay; every step all heads see the same mini-batch, so
    the heads (biases as an extra input row of ones) are one (D+1, H*C) matrix: a step is one
    GEMM forward, one for the gradient (softmax cross-entropy, written out) and a handful of
    element-wise optimiser ops, which keeps it cheap on a GPU where launches dominate.
    Cosine learning-rate decay to zero over all steps; no decay on biases.
    """
    n_all, dim = check_features(feats)
    rows = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
    labels = torch.as_tensor(labels).long().cpu()
    device = torch.device(device)
    heads, n = len(lrs), len(rows)
    w = torch.zeros(dim + 1, heads * num_classes, device=device)
    lr = lrs.to(device).float().repeat_interleave(num_classes)  # per column of w
    decay = wds.to(device).float().repeat_interleave(num_classes).repeat(dim + 1, 1)
    decay[-1] = 0.0  # the bias row
    if optimizer == "adamw":
        decay *= lr  # decoupled: the step shrinks w by lr * wd
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    if mean is not None:
        mean, std = mean.to(device), std.to(device)
    rng = np.random.default_rng(seed)
    # Small training sets get smaller batches: at least 10 steps per epoch.
    batch_size = max(1, min(batch_size, -(-n // 10)))
    total = epochs * max(1, n // batch_size)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    stream = dict(chunk_rows=chunk_rows, buffer_rows=buffer_rows, device=device)
    step = 0
    for _ in range(epochs):
        for x, idx in shuffled_batches(feats, rows, batch_size, rng, **stream):
            if mean is not None:
                x = (x - mean) / std
            xb = F.pad(x, (0, 1), value=1.0)
            # d(mean CE)/d logits, per head: (softmax - onehot) / B, B the global batch.
            probs = torch.softmax((xb @ w).view(-1, heads, num_classes), dim=-1)
            probs.sub_(F.one_hot(labels[idx].to(device), num_classes).unsqueeze(1))
            g = all_reduce_sum(torch.mm(xb.T, probs.view(len(xb), -1)).div_(batch_size))
            step += 1
            factor = 0.5 * (1.0 + math.cos(math.pi * (step - 1) / total))
            if optimizer == "adamw":
                w.addcmul_(w, decay, value=-factor)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = v.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
                w.addcdiv_(m * lr, denom, value=-factor / (1 - beta1**step))
            else:
                g.addcmul_(w, decay)  # L2 through the momentum, as torch.optim.SGD
                m.mul_(momentum).add_(g)
                w.addcmul_(m, lr, value=-factor)
    w = w.view(dim + 1, heads, num_classes).permute(1, 0, 2)
    return w[:, :dim].contiguous(), w[:, dim].contiguous()


def heads_top1(
    feats: FeatureArray,
    labels: torch.Tensor,
    rows: np.ndarray,
    w: torch.Tensor,
    b: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    """Top-1 (percent) of each of H heads W (H, D, C), b (H, C) on `rows` of raw features."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    labels = torch.as_tensor(labels).long().cpu()
    heads, dim, classes = w.shape
    flat = torch.cat([w.permute(1, 0, 2), b.unsqueeze(0)]).reshape(dim + 1, heads * classes)
    correct = torch.zeros(heads, dtype=torch.float64)
    rank, size = world()
    n = check_features(feats)[0]
    chunk = max(1, min(EVAL_CHUNK, 2**26 // (heads * classes)))  # logits <= 256 MB
    for start in list(range(0, n, chunk))[rank::size]:
        lo, hi = np.searchsorted(rows, [start, start + chunk])
        if hi == lo:
            continue
        sel = rows[lo:hi]
        x = read_rows(feats, start, min(start + chunk, n), w.device)
        x = (x[torch.from_numpy(sel - start).to(w.device)] - mean) / std
        pred = (F.pad(x, (0, 1), value=1.0) @ flat).view(-1, heads, classes).argmax(-1)
        y = labels[torch.from_numpy(sel)].to(w.device)
        correct += (pred == y.unsqueeze(1)).sum(0).double().cpu()
    return 100.0 * all_reduce_sum(correct) / max(1, len(rows))


def grid_edges(lr: float, wd: float, lrs: list[float], wds: list[float]) -> str | None:
    """Which edges of the grid (lr_min, lr_max, wd_min, wd_max) the choice lies on, or None.

    wd = 0 is no edge: nothing lies below no regularisation.
    """
    edges = []
    if len(set(lrs)) > 1 and lr == min(lrs):
        edges.append("lr_min")
    if len(set(lrs)) > 1 and lr == max(lrs):
        edges.append("lr_max")
    if len(set(wds)) > 1 and wd == min(wds) and wd > 0:
        edges.append("wd_min")
    if len(set(wds)) > 1 and wd == max(wds):
        edges.append("wd_max")
    return ",".join(edges) or None


def fit_linear_probe(
    train_feats: FeatureArray,
    train_labels: torch.Tensor,
    cfg: LinearConfig,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
) -> LinearProbe:
    """Select (lr, wd) on a stratified validation split of train, then return the trained head.

    `train_feats` is a tensor or a 2-D array-like with row slicing (streamed in chunks).
    `hparams` of the result holds lr, wd, optimizer, epochs, val_top1 (of the selected head on
    the validation split), grid (all heads' val_top1), grid_edge (None, or which edges of the
    grid the choice lies on: then the optimum may lie beyond) and refit.
    """
    log = log or (lambda msg: None)
    device = resolve_device(str(device))
    n, _ = check_features(train_feats, "linear-probe training features")
    labels = torch.as_tensor(train_labels).long().cpu()
    if len(labels) != n:
        raise UserError(f"{n} training features but {len(labels)} labels")
    num_classes = int(num_classes or int(labels.max()) + 1)
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    if not grid:
        raise UserError("eval.linear.lrs and eval.linear.weight_decays must not be empty")
    lrs = torch.tensor([g[0] for g in grid])
    wds = torch.tensor([g[1] for g in grid])
    fit_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.seed)
    if len(val_idx) == 0:
        raise UserError("eval.linear.val_fraction leaves no validation images; raise it")
    fit_idx, val_idx = fit_idx.numpy(), val_idx.numpy()
    mean, std = standardiser(train_feats, fit_idx)
    common = dict(
        epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
        momentum=cfg.momentum, seed=cfg.seed, chunk_rows=cfg.chunk_rows,
        buffer_rows=cfg.buffer_rows, device=device,
    )  # fmt: skip
    w, b = train_linear_heads(
        train_feats, labels, num_classes, lrs, wds, rows=fit_idx, mean=mean, std=std, **common
    )
    val_top1 = heads_top1(train_feats, labels, val_idx, w, b, mean.to(device), std.to(device))
    best = int(torch.argmax(val_top1))  # first of equals: the smaller lr / wd
    lr, wd = grid[best]
    edge = grid_edges(lr, wd, list(cfg.lrs), list(cfg.weight_decays))
    log(f"linear: {len(grid)} heads, selected lr={lr:g} wd={wd:g} (val top-1 {val_top1[best]:.2f})")
    if edge:
        log(
            f"linear: warning: the selected lr={lr:g} wd={wd:g} lies on the grid's edge ({edge}); "
            "the optimum may lie beyond it: widen eval.linear.lrs / eval.linear.weight_decays"
        )
    accs = val_top1.tolist()
    hparams = {
        "lr": lr, "wd": wd, "optimizer": cfg.optimizer, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "val_top1": float(val_top1[best]),
        "val_fraction": cfg.val_fraction,
        "grid": {f"{a:g},{w:g}": round(v, 3) for (a, w), v in zip(grid, accs, strict=True)},
        "grid_edge": edge, "refit": bool(cfg.refit),
    }  # fmt: skip
    if not cfg.refit:
        return LinearProbe(w[best], b[best], mean.to(device), std.to(device), hparams)
    mean, std = standardiser(train_feats)
    w1, b1 = train_linear_heads(
        train_feats, labels, num_classes, torch.tensor([lr]), torch.tensor([wd]),
        mean=mean, std=std, **common,
    )  # fmt: skip
    return LinearProbe(w1[0], b1[0], mean.to(device), std.to(device), hparams)
