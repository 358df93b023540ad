"""Power of the paired t-test: the smallest detectable difference and the seeds needed.

For n seed pairs whose differences have standard deviation sd, the two-sided paired
t-test at level alpha rejects when |t| > t_{1-alpha/2, n-1}; under a true mean difference
delta, t follows a noncentral t with n-1 degrees of freedom and noncentrality
delta / (sd / sqrt(n)). scipy.stats.nct gives that distribution; solving for delta (the
detectable difference) and for n (the seeds needed) is done here.
"""

from __future__ import annotations

import math

from scipy import optimize, stats

from djepa_bench.reports.stats import ALPHA

POWER = 0.8
MAX_SEEDS = 1000  # beyond this "seeds needed" is reported as more than MAX_SEEDS


def paired_power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Probability that a two-sided paired t-test on n pairs resolves a true difference delta."""
    if n < 2 or not math.isfinite(sd) or sd <= 0 or not math.isfinite(delta):
        return math.nan
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(delta) / (sd / math.sqrt(n))
    upper = float(stats.nct.sf(critical, df, ncp))
    if not math.isfinite(upper):  # far tails of scipy's nct can underflow to NaN
        upper = 1.0 if ncp > critical else 0.0
    lower = float(stats.nct.cdf(-critical, df, ncp))  # the wrong-sign rejection region
    return upper + (lower if math.isfinite(lower) else 0.0)


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |delta| a paired t-test on n pairs detects with `power` (NaN if undefined)."""
    if n < 2 or not math.isfinite(sd) or sd <= 0:
        return math.nan
    high = sd
    while paired_power(high, sd, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, high,
                                 xtol=1e-10 * sd, rtol=1e-12))  # fmt: skip


def seeds_needed(
    delta: float, sd: float, alpha: float = ALPHA, power: float = POWER, max_seeds: int = MAX_SEEDS
) -> int | None:
    """Fewest seed pairs for which a true difference delta is resolved with `power`.

    None when delta is 0 (or undefined), or more than `max_seeds` pairs would be needed.
    sd = 0 with delta != 0 needs the minimum of two pairs.
    """
    if not math.isfinite(delta) or delta == 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    if paired_power(delta, sd, max_seeds, alpha) < power:
        return None
    low, high = 2, max_seeds  # power rises with n: bisect on the integers
    if paired_power(delta, sd, low, alpha) >= power:
        return low
    while high - low > 1:
        middle = (low + high) // 2
        if paired_power(delta, sd, middle, alpha) >= power:
            high = middle
        else:
            low = middle
    return high
