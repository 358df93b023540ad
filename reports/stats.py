"""Small statistics for reports: mean/std over seeds and t-intervals of paired differences."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class PairedDiff:
    """Mean of paired differences (method - baseline) with its t-interval.

    `low`/`high` are NaN when fewer than two pairs exist: one pair gives no interval.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)


def summarise(values: Sequence[float]) -> Summary:
    """Mean and sample std (ddof=1) of the finite values."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Summary(float(array.mean()), std, int(array.size))


def t_halfwidth(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-interval for the mean of `values` (NaN for fewer than two)."""
    array = np.asarray(values, dtype=float)
    if array.size < 2:
        return math.nan
    sem = array.std(ddof=1) / math.sqrt(array.size)
    return float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1) * sem)


def paired_difference(
    method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedDiff:
    """Pair per-seed values by seed and give the mean difference with its t-interval."""
    seeds = sorted(
        s
        for s in set(method) & set(baseline)
        if math.isfinite(method[s]) and math.isfinite(baseline[s])
    )
    diffs = [method[s] - baseline[s] for s in seeds]
    if not diffs:
        return PairedDiff(math.nan, math.nan, math.nan, 0)
    mean = float(np.mean(diffs))
    half = t_halfwidth(diffs, confidence)
    return PairedDiff(mean, mean - half, mean + half, len(diffs))
