"""Across-seed uncertainty: t-intervals of a mean and the verdict rule of the claims.

A seed redraws the data split, every initialisation and every shuffle, so per-seed
values are independent replicates of the whole pipeline. The interval of their mean
is Student's t-interval (``scipy.stats.t``): mean +- t_{0.975, n-1} * sd / sqrt(n),
sd the sample standard deviation (ddof 1). ``docs/statistics.md`` says why this
interval and how to read an inconclusive verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
VERDICTS = ("holds", "refuted", "inconclusive", "no data")
POWER = 0.8
"""The power the "seeds needed" figure is for: the usual 80%."""
BORDERLINE_SHARE = 0.1
"""An interval end closer to the margin than this share of the half-width is borderline:
a hair of noise would flip the verdict."""
MAX_SEEDS_NEEDED = 100_000
"""Above this, "seeds needed" is reported as more than it (a negligible effect)."""


@dataclass(frozen=True)
class SeedInterval:
    """The mean of per-seed values and its t-interval."""

    mean: float
    low: float
    high: float
    n: int
    """How many seeds (independent values) the interval rests on."""
    sd: float

    @property
    def half_width(self) -> float:
        """t_{0.975, n-1} * sd / sqrt(n): also the smallest mean effect this run could
        have told from 0 (an observed mean this far from 0 puts 0 on the interval's edge).
        NaN with fewer than two seeds."""
        return (self.high - self.low) / 2.0


def t_interval(values, level: float = LEVEL) -> SeedInterval:
    """Mean and t-interval of ``values`` (NaNs dropped); bounds are NaN below two values.

    With a zero standard deviation the interval is the point itself.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return SeedInterval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n < 2:
        return SeedInterval(mean, math.nan, math.nan, n, math.nan)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return SeedInterval(mean, mean, mean, n, 0.0)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return SeedInterval(mean, float(low), float(high), n, sd)


def verdict(interval: SeedInterval, direction: int) -> tuple[str, str]:
    """(verdict, reason) for an effect the paper predicts has sign ``direction`` (+1 / -1).

    holds: the interval excludes 0 on the paper's side; refuted: it excludes 0 on the
    other side; inconclusive otherwise, or with fewer than two seeds ("one seed").
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if interval.n == 0:
        return "no data", "no seed has a value"
    if interval.n < 2:
        return "inconclusive", "one seed"
    low, high = interval.low * direction, interval.high * direction
    if direction < 0:
        low, high = high, low
    if low > 0:
        return "holds", "the 95% interval excludes 0 in the paper's direction"
    if high < 0:
        return "refuted", "the 95% interval excludes 0 against the paper's direction"
    return "inconclusive", (f"the 95% interval contains 0; with {interval.n} seeds the "
                            f"smallest detectable mean effect is {interval.half_width:.3f}")


def direction(interval: SeedInterval, above: str, below: str) -> str:
    """``above`` when the whole interval is above 0, ``below`` when it is below,
    "inconclusive" when it straddles 0 (or rests on one seed)."""
    if interval.n < 2:
        return "inconclusive (one seed)"
    if interval.low > 0:
        return above
    if interval.high < 0:
        return below
    return "inconclusive"


def format_interval(interval: SeedInterval, digits: int = 3) -> str:
    """"0.563 [0.551, 0.575]"; a bare mean with "(1 seed)" when no interval exists."""
    if interval.n == 0:
        return "n/a"
    if interval.n < 2:
        return f"{interval.mean:.{digits}f} (1 seed)"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def seed_intervals(df: pd.DataFrame, keys: list[str], metric: str) -> dict[tuple, SeedInterval]:
    """Per ``keys`` tuple: the t-interval over seeds of ``metric``, after averaging
    everything else (sparsities, methods, cells) within each seed."""
    per_seed = df.groupby(keys + ["seed"])[metric].mean()
    return {k: t_interval(v.to_numpy()) for k, v in per_seed.groupby(level=keys)}


def format_pm(interval: SeedInterval, digits: int = 3) -> str:
    """"0.563 ± 0.012" (mean ± the 95% t-interval's half-width); a bare mean for one seed."""
    if interval.n == 0:
        return ""
    if interval.n < 2:
        return f"{interval.mean:.{digits}f}"
    return f"{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}"


def paired_t_power(effect_size: float, n: int, level: float = LEVEL) -> float:
    """Power of the two-sided paired (one-sample) t-test at ``level`` with ``n`` seeds
    against a true standardised effect ``effect_size`` = mean / sd.

    The test statistic follows a noncentral t with n - 1 degrees of freedom and
    noncentrality effect_size * sqrt(n); power = P(T > c) + P(T < -c), c = t_{(1+level)/2,
    n-1} (``scipy.stats.nct``)."""
    if n < 2:
        return math.nan
    df, nc = n - 1, abs(effect_size) * math.sqrt(n)
    crit = stats.t.ppf(0.5 + level / 2.0, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(effect: float, sd: float, power: float = POWER,
                 level: float = LEVEL) -> int | None:
    """The fewest seeds (>= 2) whose paired t-test detects a true mean ``effect`` with
    per-seed standard deviation ``sd`` with probability ``power``.

    Starts from the normal approximation n ~ ((z_{(1+level)/2} + z_power) * sd / effect)^2
    and steps to the exact noncentral-t answer (:func:`paired_t_power` is increasing in
    n). None when it cannot be computed (no spread, no effect, NaN) or exceeds
    ``MAX_SEEDS_NEEDED``."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd <= 0 or effect == 0:
        return None
    d = abs(effect) / sd
    z = stats.norm.ppf(0.5 + level / 2.0) + stats.norm.ppf(power)
    n = max(2, math.ceil((z / d) ** 2))
    if n > MAX_SEEDS_NEEDED:
        return None
    while paired_t_power(d, n, level) < power:
        n += 1
    while n > 2 and paired_t_power(d, n - 1, level) >= power:
        n -= 1
    return n


def borderline(interval: SeedInterval, margin: float = 0.0) -> bool:
    """Whether the interval end nearest ``margin`` lies within ``BORDERLINE_SHARE`` of the
    half-width of it, on either side: the verdict would flip on a hair of noise."""
    if interval.n < 2 or not math.isfinite(interval.half_width) or interval.half_width == 0:
        return False
    nearest = min(abs(interval.low - margin), abs(interval.high - margin))
    return nearest < BORDERLINE_SHARE * interval.half_width
