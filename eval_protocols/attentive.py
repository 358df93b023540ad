"""Attentive probe (V-JEPA's frozen evaluation): a learned query pools patch tokens, then a head.

The classifier follows V-JEPA's `AttentiveClassifier` (src/models/attentive_pooler.py):
one learned query token, a cross-attention block `q + xattn(q, norm(x))`, `q + mlp(norm(q))`
(plus depth-1 self-attention blocks on the query), then a linear layer; truncated-normal
init (std 0.02) with the residual output layers rescaled; AdamW without decay on biases and
norms, gradient clipping at 1, warm-up and cosine schedule. timm's AttentionPoolLatent is
close but has no pre-norm on the tokens and no residual on the query, so the block is
written here (timm gives the Mlp and the extra Blocks).

Probes train on cached frozen tokens (an (N, T, D) array-like whose row slicing returns
numpy arrays: the float16 memory-mapped token cache), so the encoder runs once per split.
A grid of (lr, weight decay) probes sees the same minibatches; the one with the best top-1
on a stratified validation split carved from train (never test) is reported on test,
optionally retrained on all of train first (eval.attentive.refit).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from djepa_bench.config import AttentiveConfig
from djepa_bench.eval_protocols.base import EvalContext, ProtocolSkipped
from djepa_bench.eval_protocols.registry import register
from djepa_bench.linear_probe import stratified_split, topk_accuracy


class CrossAttention(nn.Module):
    """Multi-head attention of a few queries (B, n, D) over many tokens (B, N, D).

    The same function and parameters (q, kv, proj) as V-JEPA's CrossAttention, computed in
    an order that never projects the tokens: a query's scores are q_h . (W_k,h x + b) =
    (W_k,h^T q_h) . x + const, and its output sum_i a_i (W_v,h x_i + b) = W_v,h (sum_i a_i x_i)
    + b because the weights sum to one. That costs O(n H N D) per image instead of
    O(N D^2): with one query, tens of times less, which makes the probe cheap on a CPU.
    `reference_forward` is the direct computation (the tests check they agree).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Attend from q (B or 1, n, D) to x (B, N, D); a q shared by the batch (1, n, D) is
        the cheap case: its scores are one matrix product over all tokens."""
        b, tokens, d = x.shape
        n, heads, width = q.shape[1], self.num_heads, d // self.num_heads
        w_k, w_v = self.kv.weight.view(2, heads, width, d)
        q = self.q(q).view(q.shape[0], n, heads, width)
        # Each query mapped into token space; scores are then dot products with the tokens
        # (the key bias adds the same amount to every token's score: softmax ignores it).
        keys = torch.einsum("qnhc,hcd->qhnd", q, w_k).flatten(1, 2) * width**-0.5
        if keys.shape[0] == 1:
            scores = (x.reshape(b * tokens, d) @ keys[0].T).view(b, tokens, heads * n)
        else:
            scores = torch.bmm(x, keys.transpose(1, 2))
        attn = scores.softmax(dim=1)  # over the tokens
        pooled = torch.bmm(attn.transpose(1, 2), x).view(b, heads, n, d)
        out = torch.einsum("bhnd,hcd->bnhc", pooled, w_v).reshape(b, n, d)
        if self.kv.bias is not None:
            out = out + self.kv.bias[d:]
        return self.proj(out)

    def reference_forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """V-JEPA's computation: project every token to keys and values, then attend."""
        q = q.expand(x.shape[0], -1, -1)
        b, n, d = q.shape
        heads = self.num_heads
        q = self.q(q).reshape(b, n, heads, d // heads).transpose(1, 2)
        k, v = self.kv(x).reshape(b, x.shape[1], 2, heads, d // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossAttentionBlock(nn.Module):
    """V-JEPA's block: q + xattn(q, norm1(x)), then q + mlp(norm2(q))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))  # a shared (1, n, D) query broadcasts to (B, n, D)
        return q + self.mlp(self.norm2(q))


class AttentiveClassifier(nn.Module):
    """Learned-query attentive pooling of (B, T, D) tokens, then a linear head to classes."""

    def __init__(
        self, dim: int, num_heads: int, num_classes: int, depth: int = 1, init_std: float = 0.02
    ):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross = CrossAttentionBlock(dim, num_heads)
        self.blocks = nn.ModuleList(Block(dim, num_heads, qkv_bias=True) for _ in range(depth - 1))
        self.linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.query, std=init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():  # residual branches scaled down by depth, as V-JEPA does
            for layer_id, (proj, fc2) in enumerate(
                [(self.cross.xattn.proj, self.cross.mlp.fc2)]
                + [(blk.attn.proj, blk.mlp.fc2) for blk in self.blocks],
                start=1,
            ):
                proj.weight.div_(math.sqrt(2.0 * layer_id))
                fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.cross(self.query, tokens)
        for block in self.blocks:
            q = block(q)
        return self.linear(q[:, 0])


def encoder_heads(module: nn.Module | None, dim: int) -> int:
    """The encoder's own number of attention heads, else one per 64 dimensions (dividing dim)."""
    heads = getattr(module, "num_heads", None)
    if heads is None and hasattr(module, "blocks") and len(module.blocks):
        heads = getattr(getattr(module.blocks[0], "attn", None), "num_heads", None)
    if heads and dim % int(heads) == 0:
        return int(heads)
    return next(h for h in (dim // 64, 16, 12, 8, 6, 4, 3, 2, 1) if h >= 1 and dim % h == 0)


def _rows(tokens: Any, index: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 tokens of rows `index` (sorted first: memory-mapped reads stay sequential)."""
    return torch.from_numpy(np.asarray(tokens[np.sort(index)])).to(device).float()


def _autocast(device: torch.device):
    enabled = device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_probes(
    tokens: Any,
    rows: np.ndarray,
    labels: torch.Tensor,
    num_classes: int,
    grid: Sequence[tuple[float, float]],
    cfg: AttentiveConfig,
    *,
    num_heads: int,
    device: torch.device,
    log: Callable[[str], None] = lambda msg: None,
) -> list[AttentiveClassifier]:
    """Train one probe per (lr, wd) of `grid` on tokens[rows] with the same minibatches."""
    dim = int(tokens.shape[-1])
    probes, optimisers = [], []
    for lr, wd in grid:
        torch.manual_seed(cfg.seed)  # every probe starts from the same initialisation
        probe = AttentiveClassifier(dim, num_heads, num_classes, cfg.depth).to(device)
        decays = {n: p.ndim > 1 and not n.endswith("bias") for n, p in probe.named_parameters()}
        groups = [
            {"params": [p for n, p in probe.named_parameters() if decays[n]], "weight_decay": wd},
            {"params": [p for n, p in probe.named_parameters() if not decays[n]],
             "weight_decay": 0.0},
        ]  # fmt: skip
        probes.append(probe.train())
        optimisers.append(torch.optim.AdamW(groups, lr=lr))
    n = len(rows)
    batch = max(1, min(cfg.batch_size, -(-n // 10)))
    steps_per_epoch = max(1, n // batch)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = labels.to(device)
    step, last_log, start = 0, time.perf_counter(), time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).numpy()
        losses = torch.zeros(len(probes))
        for s in range(steps_per_epoch):
            index = np.sort(rows[order[s * batch : (s + 1) * batch]])
            x = torch.from_numpy(np.asarray(tokens[index])).to(device).float()
            y = labels[torch.from_numpy(np.searchsorted(rows, index)).to(device)]
            factor = (
                (step + 1) / warmup
                if step < warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            )
            step += 1
            for i, (probe, opt) in enumerate(zip(probes, optimisers, strict=True)):
                for group in opt.param_groups:
                    group["lr"] = grid[i][0] * factor
                with _autocast(device):
                    loss = F.cross_entropy(probe(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
                opt.step()
                losses[i] += loss.detach().cpu()
        now = time.perf_counter()
        if now - last_log > 30 or epoch + 1 == cfg.epochs:
            mean = (losses / steps_per_epoch).min().item()
            log(
                f"attentive: epoch {epoch + 1}/{cfg.epochs}, {len(probes)} probe(s), "
                f"lowest train loss {mean:.3f} ({now - start:.0f}s)"
            )
            last_log = now
    return [p.eval() for p in probes]


@torch.inference_mode()
def probe_logits(
    probes: Sequence[nn.Module], tokens: Any, rows: np.ndarray, device: torch.device, batch: int
) -> torch.Tensor:
    """Logits (P, len(rows), C) of every probe on tokens[rows] (rows sorted ascending)."""
    out = []
    for s in range(0, len(rows), batch):
        x = _rows(tokens, rows[s : s + batch], device)
        with _autocast(device):
            out.append(torch.stack([p(x).float() for p in probes]).cpu())
    return torch.cat(out, dim=1)


@register(
    "attentive",
    "attentive probe (V-JEPA): learned-query cross-attention over frozen patch tokens + linear",
    feature_splits=(),
)
def run(ctx: EvalContext) -> list[dict]:
    """Train the (lr x wd) grid of attentive probes, select on validation, record test top-1/5."""
    cfg = ctx.config.eval.attentive
    if ctx.encoder.tokens is None:
        raise ProtocolSkipped(f"{ctx.identity.run} has no patch tokens")
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    train_tokens, test_tokens = ctx.tokens("train"), ctx.tokens("test")
    start = time.perf_counter()
    labels = ctx.features.labels("train").long().cpu()
    test_labels = ctx.features.labels("test").long()
    fit, val = (i.numpy() for i in stratified_split(labels, cfg.val_fraction, cfg.seed))
    dim = int(train_tokens.shape[-1])
    heads = cfg.num_heads or encoder_heads(ctx.encoder.module, dim)
    common = dict(num_heads=heads, device=ctx.device, log=ctx.log)
    probes = train_probes(train_tokens, fit, labels[fit], ctx.num_classes, grid, cfg, **common)
    val_logits = probe_logits(probes, train_tokens, val, ctx.device, cfg.batch_size)
    val_top1 = (val_logits.argmax(-1) == labels[val]).float().mean(1) * 100
    best = int(torch.argmax(val_top1))  # first of equals: the smaller lr / wd
    lr, wd = grid[best]
    edge = [
        f"the grid's {side} {name}"
        for name, values, chosen in (("lr", cfg.lrs, lr), ("wd", cfg.weight_decays, wd))
        if len(set(values)) > 2
        for side, bound in (("smallest", min(values)), ("largest", max(values)))
        if chosen == bound
    ]
    note = f"; {' and '.join(edge)}: consider widening the grid" if edge else ""
    ctx.log(
        f"attentive: {len(grid)} probes, selected lr={lr:g} wd={wd:g} "
        f"(val top-1 {val_top1[best]:.2f}){note}"
    )
    probe = probes[best]
    if cfg.refit:
        every = np.arange(len(labels))
        (probe,) = train_probes(train_tokens, every, labels, ctx.num_classes, [(lr, wd)], cfg,
                                **common)  # fmt: skip
    test_rows = np.arange(len(test_labels))
    logits = probe_logits([probe], test_tokens, test_rows, ctx.device, cfg.batch_size)[0]
    accuracy = topk_accuracy(logits, test_labels, (1, 5))
    elapsed = time.perf_counter() - start
    params = {
        "lr": lr, "wd": wd, "epochs": cfg.epochs, "val_top1": float(val_top1[best]),
        "val_fraction": cfg.val_fraction, "refit": cfg.refit, "grid_size": len(grid),
        "num_heads": heads, "depth": cfg.depth, "tokens": int(train_tokens.shape[1]),
    }  # fmt: skip
    ctx.log(f"attentive: test top-1 {accuracy[1]:.2f} (lr={lr:g}, wd={wd:g}, {elapsed:.0f}s)")
    return [
        ctx.record("attentive", f"top{k}", v, params, time_s=elapsed) for k, v in accuracy.items()
    ]
