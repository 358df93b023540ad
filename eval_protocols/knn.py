"""k-NN protocol: DINO-weighted vote of the k nearest clean train features (cosine); top-1/5.

The bank is streamed from the on-disk feature shards, so its size is bounded by disk, not
memory. Records carry the k actually used: a k beyond the bank size is capped, and the
capped record says which k were asked (`k_requested`). With an approximate index
(eval.knn.index) the records also carry the index settings and its recall@k against exact
search on eval.knn.recall_sample test queries.
"""

from __future__ import annotations

import time

from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.registry import register


@register("knn", "weighted k-NN (cosine, exp(s/T)) on frozen features; top-1/top-5 per k")
def run(ctx: EvalContext) -> list[dict]:
    """One search at max(k) over the train bank; records top1/top5 for every k used."""
    cfg = ctx.config.eval.knn
    test = ctx.features.array("test")
    labels = ctx.features.labels("test")
    ctx.features.array("train")  # extraction time stays out of the search time
    start = time.perf_counter()
    classifier = ctx.knn_classifier()
    requested = sorted(set(cfg.k))
    accuracy = classifier.accuracy(test, labels, requested)
    elapsed = time.perf_counter() - start
    recall = {}
    if classifier.params:
        recall = classifier.recall(test, requested, cfg.recall_sample)
        ctx.log(
            f"knn: {classifier.params['index']} recall vs exact on "
            f"{min(cfg.recall_sample, len(test))} queries: "
            + ", ".join(f"@{k} {r:.3f}" for k, r in recall.items())
        )
    used: dict[int, list[int]] = {}
    for k in requested:
        used.setdefault(classifier.k_used(k), []).append(k)
    records = []
    for k, asked in used.items():
        params = {"k": k, "temperature": cfg.temperature, "weighting": cfg.weighting}
        if asked != [k]:
            params["k_requested"] = ",".join(map(str, asked))
            ctx.log(f"knn: k={params['k_requested']} capped at the bank's {k} images")
        if classifier.params:
            params |= classifier.params | {
                "recall": round(recall[asked[0]], 4),
                "recall_sample": min(cfg.recall_sample, len(test)),
            }
        for top, value in accuracy[asked[0]].items():
            records.append(ctx.record("knn", f"top{top}", value, params, time_s=elapsed))
    best = max(accuracy, key=lambda k: accuracy[k][1])
    ctx.log(f"knn: top-1 {accuracy[best][1]:.2f} at k={classifier.k_used(best)} ({elapsed:.1f}s)")
    return records
