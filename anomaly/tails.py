"""The upper tail of a small score sample, and binomial intervals: the statistics behind the thresholds.

Tail estimate (peaks over threshold). With the ``n`` cross-fitted good scores sorted, the
top ``m = max(5, ceil(0.2 n))`` (at most ``n - 1``) are modelled as exceedances over
``u``, the next score down, by a generalised Pareto distribution (Pickands 1975;
Davison & Smith 1990): ``P(S > u + y) = (m / n) * (1 + xi * y / sigma) ** (-1 / xi)``.
With ``m >= 20`` the shape ``xi`` is estimated by probability-weighted moments (Hosking &
Wallis, Technometrics 1987), clipped to ``[-0.5, 0.45]``; with fewer exceedances it is fixed
at 0 (an exponential tail, the Gumbel domain that maxima of patch distances fall in) and
``sigma`` is the mean excess (its maximum-likelihood estimate). A rate of at least ``m/n``
lies inside the sample and is read from the empirical quantile instead. So with 20 good
images and a 1 % target the threshold is an extrapolation, and the figures say so: the
Clopper-Pearson interval of the false-reject rate is computed from the count of
cross-fitted good scores at or above ``t_ng``, and a bootstrap interval of the tail
model's rate at ``t_ng`` is given beside it.

numpy only (scipy's incomplete beta function is imported when an interval is asked for).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from anomaly.errors import InvalidParameterError

#: Fewest exceedances the tail is fitted to, and the share of the sample they are at least.
MIN_EXCEEDANCES = 5
TAIL_FRACTION = 0.2
#: From this many exceedances on the GPD shape is estimated; below, the tail is exponential.
MIN_EXCEEDANCES_FOR_SHAPE = 20
XI_RANGE = (-0.5, 0.45)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion ``k / n``."""
    from scipy.special import betaincinv

    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise InvalidParameterError(f"k must be in [0, n={n}], got {k}")
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, a))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1.0 - a))
    return lo, hi


def fit_tail(scores: Sequence[float]) -> dict[str, Any]:
    """Fit the upper tail of a score sample (see the module docstring).

    Args:
        scores: ``(n,)`` scores, ``n >= 2``.

    Returns:
        ``{"u", "p_u", "xi", "sigma", "m", "n", "estimator"}``: exceedance level, the
        sample's share above it, GPD shape and scale, how many exceedances, sample size.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64))
    n = x.size
    if n < 2:
        raise InvalidParameterError(f"a tail needs at least 2 good scores, got {n}")
    if not np.all(np.isfinite(x)):
        raise InvalidParameterError("good scores must be finite")
    m = int(min(n - 1, max(MIN_EXCEEDANCES, math.ceil(TAIL_FRACTION * n))))
    u = float(x[n - m - 1])
    y = x[n - m:] - u
    a0 = float(y.mean())
    if m >= MIN_EXCEEDANCES_FOR_SHAPE and a0 > 0:
        # Hosking & Wallis (1987): a1 = E[Y (1 - F(Y))] with plotting positions (i - 0.35) / m.
        p = (np.arange(1, m + 1) - 0.35) / m
        a1 = float(np.mean(y * (1.0 - p)))
        xi = 2.0 - a0 / (a0 - 2.0 * a1) if a0 - 2.0 * a1 > 0 else XI_RANGE[1]
        xi = float(np.clip(xi, *XI_RANGE))
        estimator = "gpd-pwm"
    else:
        xi, estimator = 0.0, "exponential-mle"
    # The GPD mean is sigma / (1 - xi): the scale that keeps the mean excess.
    sigma = max(a0 * (1.0 - xi), 1e-12 * max(1.0, abs(u)))
    return {"u": u, "p_u": m / n, "xi": xi, "sigma": float(sigma), "m": m, "n": n, "estimator": estimator,
            "tail_fraction": TAIL_FRACTION}


def tail_quantile(scores: Sequence[float], rate: float, tail: dict[str, Any] | None = None) -> float:
    """Score above which a share ``rate`` of good parts is expected to fall.

    Inside the sample (``rate >= m / n``) the empirical quantile (Weibull plotting
    positions); in the tail the fitted GPD.
    """
    if not 0.0 < rate < 1.0:
        raise InvalidParameterError(f"rate must be in (0, 1), got {rate}")
    tail = tail or fit_tail(scores)
    if rate >= tail["p_u"]:
        return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - rate, method="weibull"))
    ratio = tail["p_u"] / rate
    xi, sigma = tail["xi"], tail["sigma"]
    excess = sigma * math.log(ratio) if abs(xi) < 1e-9 else sigma / xi * (ratio ** xi - 1.0)
    return float(tail["u"] + excess)


def tail_rate(scores: Sequence[float], t: float, tail: dict[str, Any] | None = None) -> float:
    """Expected share of good parts scoring at or above ``t`` (inverse of :func:`tail_quantile`)."""
    x = np.asarray(scores, dtype=np.float64)
    tail = tail or fit_tail(x)
    if t <= tail["u"]:
        return float(np.mean(x >= t))
    y = t - tail["u"]
    xi, sigma = tail["xi"], tail["sigma"]
    if abs(xi) < 1e-9:
        return float(tail["p_u"] * math.exp(-y / sigma))
    base = 1.0 + xi * y / sigma
    if base <= 0:  # beyond the end point of a bounded (xi < 0) tail
        return 0.0
    return float(tail["p_u"] * base ** (-1.0 / xi))


def bootstrap_rate_interval(scores: Sequence[float], t: float, *, n_boot: int = 300, level: float = 0.90,
                            random_state: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the tail model's rate at a fixed threshold ``t``."""
    x = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(random_state)
    rates = np.empty(n_boot)
    for b in range(n_boot):
        sample = x[rng.integers(0, x.size, x.size)]
        rates[b] = tail_rate(sample, t, fit_tail(sample)) if np.ptp(sample) > 0 else float(np.mean(sample >= t))
    a = (1.0 - level) / 2.0
    return float(np.quantile(rates, a)), float(np.quantile(rates, 1.0 - a))
