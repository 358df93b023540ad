"""Linear protocol: a batched grid of linear heads on standardised frozen features, test top-1/5."""

from __future__ import annotations

import time

from djepa_bench.eval_protocols.base import EvalContext
from djepa_bench.eval_protocols.registry import register


@register("linear", "linear probe: (lr x wd) grid of heads trained at once, chosen on a val split")
def run(ctx: EvalContext) -> list[dict]:
    """Fit (or reuse) the context's linear probe and record its test top-1/top-5."""
    start = time.perf_counter()
    probe = ctx.linear_probe()
    accuracy = probe.accuracy(ctx.features.get("test"), ctx.features.labels("test"), (1, 5))
    elapsed = time.perf_counter() - start
    hp = probe.hparams
    params = {
        "lr": hp["lr"], "wd": hp["wd"], "optimizer": hp["optimizer"], "epochs": hp["epochs"],
        "val_top1": hp["val_top1"], "val_fraction": hp["val_fraction"], "refit": hp["refit"],
        "grid_size": len(hp["grid"]), "grid_edge": hp.get("grid_edge"),
    }  # fmt: skip
    ctx.log(f"linear: test top-1 {accuracy[1]:.2f} (lr={hp['lr']:g}, wd={hp['wd']:g})")
    return [ctx.record("linear", f"top{k}", v, params, time_s=elapsed) for k, v in accuracy.items()]
