"""Per-step schedules (pure functions of the step, so a resumed run continues them exactly)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from djepa_bench.config import OptimConfig


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to `final`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * min(1.0, progress)))


def cosine_ramp(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from `start` (step 0) to `end` (step total), I-JEPA's wd schedule."""
    progress = min(1.0, step / max(1, total))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def linear_ramp(step: int, total: int, start: float, end: float) -> float:
    """Linear interpolation from `start` to `end` over `total` steps (EMA momentum)."""
    return start + (end - start) * min(1.0, step / max(1, total))


@dataclass(frozen=True)
class StepValues:
    """Learning rate, weight decay and EMA momentum at one step."""

    lr: float
    wd: float
    ema: float


class Schedules:
    """The optimiser's schedules over a run of `total_steps` steps."""

    def __init__(self, optim: OptimConfig, total_steps: int, steps_per_epoch: int):
        self.optim = optim
        self.total = total_steps
        self.warmup = min(int(round(optim.warmup_epochs * steps_per_epoch)), total_steps)

    def __call__(self, step: int) -> StepValues:
        o = self.optim
        return StepValues(
            lr=warmup_cosine(step, self.total, self.warmup, o.lr, o.min_lr),
            wd=cosine_ramp(step, self.total, o.weight_decay, o.final_weight_decay),
            ema=linear_ramp(step, self.total, o.ema_start, o.ema_end),
        )
