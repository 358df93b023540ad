"""The report's statistics policy: summaries over seeds, paired differences, tests, Holm.

One policy everywhere (tables, prose and figures): a 95% t-interval and a significance
mark need at least MIN_SEEDS_FOR_INTERVAL seeds (pairs); below that only the per-seed
values are shown. Spreads are over seeds only (trials of one run are averaged first).
Holm's step-down adjustment is written here because scipy has none (statsmodels, which
has, is not a dependency); it is six lines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_SEEDS_FOR_INTERVAL = 3  # below this: no interval, no significance mark, per-seed values
CORRECTIONS = ("holm", "none")
DEFAULT_CORRECTION = "holm"


@dataclass(frozen=True)
class Summary:
    """Mean, sample sd (ddof=1; NaN for one value), count, 95% t half-width (NaN below
    MIN_SEEDS_FOR_INTERVAL values) and the values themselves (in seed order)."""

    mean: float
    std: float
    n: int
    half: float = math.nan
    values: tuple[float, ...] = ()

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.half)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of paired differences (method - baseline) with its 95% t-interval and test.

    `low`/`high`/`p` are NaN below MIN_SEEDS_FOR_INTERVAL pairs; `sd` (of the paired
    differences) needs two. `diffs` are the per-seed differences, in seed order.
    """

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan
    p: float = math.nan
    diffs: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()

    @property
    def has_interval(self) -> bool:
        return self.n >= MIN_SEEDS_FOR_INTERVAL and math.isfinite(self.low)

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def t_halfwidth(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-interval for the mean of `values` (NaN for fewer than two)."""
    array = np.asarray(values, dtype=float)
    if array.size < 2:
        return math.nan
    sem = array.std(ddof=1) / math.sqrt(array.size)
    return float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1) * sem)


def summarise(values: Sequence[float]) -> Summary:
    """Mean, sample sd (ddof=1) and, from MIN_SEEDS_FOR_INTERVAL values on, the 95%
    t half-width of the finite values."""
    array = _finite(values)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    half = t_halfwidth(array) if array.size >= MIN_SEEDS_FOR_INTERVAL else math.nan
    return Summary(float(array.mean()), std, int(array.size), half, tuple(float(v) for v in array))


def paired_difference(
    method: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedDiff:
    """Pair per-seed values by seed: mean difference, sd, t-interval and two-sided paired
    t-test p-value (interval and p only from MIN_SEEDS_FOR_INTERVAL pairs on)."""
    seeds = sorted(
        s
        for s in set(method) & set(baseline)
        if math.isfinite(method[s]) and math.isfinite(baseline[s])
    )
    diffs = np.asarray([method[s] - baseline[s] for s in seeds], dtype=float)
    if diffs.size == 0:
        return PairedDiff(math.nan, math.nan, math.nan, 0)
    mean = float(diffs.mean())
    sd = float(diffs.std(ddof=1)) if diffs.size > 1 else math.nan
    low = high = p = math.nan
    if diffs.size >= MIN_SEEDS_FOR_INTERVAL:
        half = t_halfwidth(diffs, confidence)
        low, high = mean - half, mean + half
        p = paired_p_value(diffs)
    return PairedDiff(
        mean, low, high, int(diffs.size), sd, p, tuple(float(d) for d in diffs), tuple(seeds)
    )


def paired_p_value(diffs: Sequence[float]) -> float:
    """Two-sided one-sample t-test of the paired differences against 0 (NaN below 2)."""
    array = np.asarray(diffs, dtype=float)
    if array.size < 2:
        return math.nan
    sd = array.std(ddof=1)
    if sd == 0:  # identical differences: certain unless they are all zero
        return 1.0 if array.mean() == 0 else 0.0
    return float(stats.ttest_1samp(array, 0.0).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and are not counted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))  # step-down, kept monotone
        adjusted[i] = running
    return adjusted


def adjust(p_values: Sequence[float], correction: str) -> list[float]:
    """p-values adjusted for multiple comparisons by `correction` (holm | none)."""
    if correction == "holm":
        return holm(p_values)
    if correction == "none":
        return [float(p) for p in p_values]
    raise ValueError(f"unknown correction {correction!r}")
