"""k-NN protocol: DINO-weighted vote of the k nearest clean train features (cosine); top-1/5."""

from __future__ import annotations

import time

from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.registry import register


@register("knn", "weighted k-NN (cosine, exp(s/T)) on frozen features; top-1/top-5 per k")
def run(ctx: EvalContext) -> list[dict]:
    """One search at max(k) over the train bank; records top1/top5 for every k."""
    cfg = ctx.config.eval.knn
    test = ctx.features.get("test")
    ctx.features.get("train")  # extraction time stays out of the search time
    start = time.perf_counter()
    classifier = ctx.knn_classifier()
    accuracy = classifier.accuracy(test, ctx.features.labels("test"), sorted(set(cfg.k)))
    elapsed = time.perf_counter() - start
    records = []
    for k, acc in accuracy.items():
        params = {"k": k, "temperature": cfg.temperature, "weighting": cfg.weighting}
        for top, value in acc.items():
            records.append(ctx.record("knn", f"top{top}", value, params, time_s=elapsed))
    best = max(accuracy, key=lambda k: accuracy[k][1])
    ctx.log(f"knn: top-1 {accuracy[best][1]:.2f} at k={best} ({elapsed:.1f}s)")
    return records
