"""Denoising protocol: the predictor's error per noise level and the quality of DDIM sampling.

On the first test images, with seeded multi-block masks, the layer-normed target-encoder
tokens at the target blocks are the clean targets z. For a grid of noise levels t the
D-JEPA predictor's x0 estimate from z_t is scored against z (MSE, cosine) beside
references at the same t: the noisy input alone, z_t / sqrt(abar_t), and its Gaussian
posterior mean sqrt(abar_t) z_t; and (once) the estimates that ignore the input, zeros
and the mean target. Any run's mask-token
prediction is scored once: for an I-JEPA run this is the deterministic reference line.
Multi-step DDIM sampling with K samples per target is scored by the error of the sample
mean, the diversity of the samples, the energy score and the spread-error correlation.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from djepa_bench.checkpoint import load_encoder, load_predictor
from djepa_bench.config import config_from_dict
from djepa_bench.data import iterate_batches
from djepa_bench.eval_protocols.base import EvalContext, ProtocolSkipped
from djepa_bench.eval_protocols.registry import register
from djepa_bench.eval_protocols.sample_scores import (
    energy_score,
    pairwise_distance_mean,
    pearson,
    spread_and_error,
    token_cosine,
)
from djepa_bench.masks import MaskBatch, MultiBlockMasker
from djepa_bench.models import ddim_sample_targets
from djepa_bench.models.common import gather_tokens
from djepa_bench.models.encoder import layer_norm_targets


@dataclass
class MaskedBatch:
    """One batch of test images reduced to what the predictor sees and must recover."""

    z_ctx: torch.Tensor  # (B, L, D) context-encoder tokens
    masks: MaskBatch
    targets: torch.Tensor  # (B, M, T, D) clean layer-normed target tokens


class ErrorMeter:
    """Running MSE (per element) and cosine (per token) of an estimator."""

    def __init__(self) -> None:
        self.squared = 0.0
        self.elements = 0
        self.cosine = 0.0
        self.distance = 0.0
        self.tokens = 0

    def add(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.squared += float((prediction.float() - target).pow(2).sum())
        self.elements += target.numel()
        self.cosine += float(token_cosine(prediction.float(), target).sum())
        self.distance += float((prediction.float() - target).norm(dim=-1).sum())
        self.tokens += target[..., 0].numel()

    @property
    def mse(self) -> float:
        return self.squared / max(1, self.elements)

    @property
    def mean_cosine(self) -> float:
        return self.cosine / max(1, self.tokens)

    @property
    def mean_distance(self) -> float:
        """Mean L2 error per token: the energy score of this deterministic estimate."""
        return self.distance / max(1, self.tokens)


def noise_levels(timesteps: int, num_levels: int) -> list[int]:
    """t = 0, `num_levels` evenly spaced interior levels, and t = T-1 (pure noise end)."""
    grid = torch.linspace(0, timesteps - 1, num_levels + 2).round().long().tolist()
    return sorted(set(grid))


def masked_batches(
    ctx: EvalContext, num_images: int, batch_size: int, seed: int
) -> Iterator[MaskedBatch]:
    """Encode seeded masked views of the first `num_images` test images."""
    ckpt = ctx.checkpoint
    cfg = config_from_dict(ckpt["config"])
    context_encoder = load_encoder(ckpt, "context").to(ctx.device)
    target_encoder = load_encoder(ckpt, "target").to(ctx.device)
    masker = MultiBlockMasker(context_encoder.grid_size, replace(cfg.mask, context_batching="pad"))
    split = ctx.splits["test"]
    split = split.subset(torch.arange(min(num_images, len(split))))
    generator = torch.Generator().manual_seed(seed)
    for images, _ in iterate_batches(
        split, batch_size, device=ctx.device, image_size=context_encoder.img_size
    ):
        masks = masker(images.shape[0], generator).to(ctx.device)
        z_ctx = context_encoder(images, masks.context_idx, masks.context_valid)
        tokens = layer_norm_targets(target_encoder(images).float())
        batch, blocks, per_block = masks.target_idx.shape
        flat = masks.target_idx.reshape(batch, -1)
        targets = gather_tokens(tokens, flat).reshape(batch, blocks, per_block, -1)
        yield MaskedBatch(z_ctx, masks, targets)


def _level_errors(ctx, predictor, schedule, cfg, method) -> list[dict]:
    """Errors per noise level (D-JEPA) and of the mask-token prediction (any run)."""
    levels = noise_levels(schedule.timesteps, cfg.num_levels) if schedule is not None else []
    meters: dict[tuple[str, int | None], ErrorMeter] = defaultdict(ErrorMeter)
    all_targets = []
    noise_gen = torch.Generator(device=ctx.device).manual_seed(cfg.seed + 1)
    start = time.perf_counter()
    for mb in masked_batches(ctx, cfg.num_images, cfg.batch_size, cfg.seed):
        m = mb.masks
        all_targets.append(mb.targets.reshape(-1, mb.targets.shape[-1]).cpu())
        masked = predictor.predict_masked(mb.z_ctx, m.context_idx, m.target_idx, m.context_valid)
        reference = "ijepa_predictor" if method == "ijepa" else "mask_token"
        meters[(reference, None)].add(masked, mb.targets)
        if schedule is None:
            continue
        eps = torch.randn(mb.targets.shape, generator=noise_gen, device=ctx.device)
        for t in levels:
            level = torch.full(mb.targets.shape[:2], t, dtype=torch.long, device=ctx.device)
            noisy = schedule.q_sample(mb.targets, level, eps)
            x0 = predictor.denoise(
                mb.z_ctx, m.context_idx, m.target_idx, noisy, level, m.context_valid
            )
            meters[("predictor", t)].add(x0, mb.targets)
            abar = float(schedule.alphas_cumprod[t])
            meters[("noisy_input", t)].add(noisy / abar**0.5, mb.targets)
            # E[z | z_t] if z were N(0, I) (layer-normed targets have unit variance): a
            # reference that, unlike z_t / sqrt(abar_t), stays bounded at high noise.
            meters[("gaussian_posterior", t)].add(noisy * abar**0.5, mb.targets)
    elapsed = time.perf_counter() - start

    targets = torch.cat(all_targets)
    mean_target = targets.mean(dim=0, keepdim=True).expand_as(targets)
    meters[("mean_target", None)].add(mean_target, targets)
    records = []
    for (estimator, t), meter in sorted(meters.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
        params = {"estimator": estimator, "num_images": cfg.num_images, "seed": cfg.seed}
        if t is not None:
            params |= {"noise_t": t, "abar": float(schedule.alphas_cumprod[t])}
        records.append(ctx.record("denoising", "mse", meter.mse, params, time_s=elapsed))
        records.append(ctx.record("denoising", "cosine", meter.mean_cosine, params, time_s=elapsed))
        if estimator in ("ijepa_predictor", "mask_token"):
            # A deterministic prediction's energy score is its L2 error: the sampling
            # curves' reference line.
            energy = params | {"samples": 1}
            records.append(
                ctx.record("denoising", "energy_score", meter.mean_distance, energy, time_s=elapsed)
            )
    # Predicting zeros scores E[z^2] (about 1 for layer-normed targets); its cosine is undefined.
    zero_params = {"estimator": "zeros", "num_images": cfg.num_images, "seed": cfg.seed}
    records.append(
        ctx.record("denoising", "mse", float(targets.pow(2).mean()), zero_params, time_s=elapsed)
    )
    return records


def _sampling_scores(ctx, predictor, schedule, cfg) -> list[dict]:
    """Error of the sample mean, diversity, energy score and calibration per DDIM step count."""
    records = []
    batches = list(masked_batches(ctx, cfg.sampling_images, cfg.batch_size, cfg.seed))
    for steps in sorted(set(cfg.steps)):
        start = time.perf_counter()
        generator = torch.Generator(device=ctx.device).manual_seed(cfg.seed * 1000 + steps)
        squared = elements = 0.0
        diversity, energy, spreads, errors = [], [], [], []
        for mb in batches:
            m = mb.masks
            samples = ddim_sample_targets(
                predictor, schedule, mb.z_ctx, m.context_idx, m.target_idx, steps,
                cfg.samples, cfg.eta, generator, m.context_valid,
            )  # (K, B, M, T, D)  # fmt: skip
            squared += float((samples.mean(0) - mb.targets).pow(2).sum())
            elements += mb.targets.numel()
            k, dim = samples.shape[0], samples.shape[-1]
            per_token = samples.reshape(k, -1, dim)
            target_tokens = mb.targets.reshape(-1, dim)
            diversity.append(pairwise_distance_mean(per_token).cpu())
            energy.append(energy_score(per_token, target_tokens).cpu())
            spread, error = spread_and_error(
                samples.flatten(1, 2), mb.targets.flatten(0, 1)
            )  # per target block
            spreads.append(spread.cpu())
            errors.append(error.cpu())
        elapsed = time.perf_counter() - start
        correlation = pearson(torch.cat(spreads), torch.cat(errors)) if cfg.samples > 1 else None
        params = {
            "steps": steps, "samples": cfg.samples, "eta": cfg.eta,
            "num_images": cfg.sampling_images, "seed": cfg.seed,
        }  # fmt: skip
        values = {
            "sample_mean_mse": squared / max(1.0, elements),
            "diversity": float(torch.cat(diversity).mean()),
            "energy_score": float(torch.cat(energy).mean()),
            "spread_error_corr": correlation,
        }
        for metric, value in values.items():
            records.append(ctx.record("denoising", metric, value, params, time_s=elapsed))
        ctx.log(
            f"denoising: {steps} DDIM steps x {cfg.samples} samples: energy "
            f"{values['energy_score']:.3f}, diversity {values['diversity']:.3f} ({elapsed:.1f}s)"
        )
    return records


@register(
    "denoising",
    "predictor error vs noise level, I-JEPA reference, DDIM sampling scores",
    feature_splits=(),
)
def run(ctx: EvalContext) -> list[dict]:
    """Denoising diagnostics of a trained run's predictor (D-JEPA: all; I-JEPA: reference)."""
    if ctx.checkpoint is None:
        raise ProtocolSkipped("denoising needs a trained djepa-bench run (it uses the predictor)")
    cfg = ctx.config.eval.denoising
    if cfg.num_images < 1 or cfg.samples < 1 or any(s < 1 for s in cfg.steps):
        raise ProtocolSkipped("eval.denoising.num_images, samples and steps must be positive")
    predictor, schedule = load_predictor(ctx.checkpoint)
    predictor = predictor.to(ctx.device)
    method = ctx.checkpoint["method"]
    with torch.inference_mode():
        records = _level_errors(ctx, predictor, schedule, cfg, method)
        if schedule is not None and cfg.sampling_images > 0 and cfg.steps:
            records += _sampling_scores(ctx, predictor, schedule, cfg)
    by_level = {
        r["params"].get("noise_t"): r["value"]
        for r in records
        if r["metric"] == "mse" and r["params"].get("estimator") == "predictor"
    }
    if by_level:
        ctx.log(
            "denoising: predictor MSE "
            + ", ".join(f"t={t}: {v:.3f}" for t, v in sorted(by_level.items()))
        )
    return records
