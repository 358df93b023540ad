"""Representation protocol: label-free spectral metrics of test features (RankMe, alpha-ReQ)."""

from __future__ import annotations

import time

from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.registry import register
from djepa_bench.spectral import alpha_req, covariance_eigenvalues, feature_std, rankme


@register(
    "representation",
    "RankMe, alpha-ReQ power-law slope and per-dim std of test features",
    feature_splits=("test",),
)
def run(ctx: EvalContext) -> list[dict]:
    """Spectral metrics of the first `eval.representation.num_images` test features."""
    cfg = ctx.config.eval.representation
    features = ctx.features.get("test")[: cfg.num_images]
    start = time.perf_counter()
    fit = alpha_req(covariance_eigenvalues(features), tuple(cfg.alpha_fit_range))
    std = feature_std(features)
    values = {
        "rankme": rankme(features),
        "alpha_req": fit.alpha,
        "alpha_req_r2": fit.r2,
        "feature_std_mean": std["mean"],
        "feature_std_min": std["min"],
    }
    elapsed = time.perf_counter() - start
    params = {
        "num_images": int(features.shape[0]),
        "dim": int(features.shape[1]),
        "fit_range": [fit.start, fit.end],
    }
    ctx.log(
        f"representation: RankMe {values['rankme']:.1f} of {features.shape[1]} dims, "
        f"alpha-ReQ {values['alpha_req']:.2f} (R^2 {values['alpha_req_r2']:.2f})"
    )
    return [
        ctx.record("representation", metric, value, params, time_s=elapsed)
        for metric, value in values.items()
    ]
