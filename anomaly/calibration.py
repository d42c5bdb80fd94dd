"""Thresholds from good images only, the verdict they give, and what they are expected to cost.

No defect sample is needed: the thresholds come from scores of good images that the model
did not train on (cross-fitting, see :mod:`anomaly.training`), through a tail estimate
suited to small samples.

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

A calibration is a plain JSON dict stored in the bundle manifest::

    {
      "method": str,                 how the thresholds were derived, in words
      "t_review": float,             below: GOOD
      "t_ng": float,                 at or above: NG; between: REVIEW
      "pixel_threshold": float|None, map value at or above which a pixel belongs to a region
      "map_floor": float|None,       median good-map value (bottom of the overlay's colour scale)
      "good_scores": [float],        the n cross-fitted good-image scores the thresholds came from
      "good_map_maxima": [float],    the n cross-fitted good maps' maxima (pixel threshold's source)
      "n_good": int,
      "n_folds": int, "split_seed": int,
      "target_frr": float,           wanted share of good parts judged NG
      "review_rate": float,          wanted share of good parts sent to REVIEW
      "pixel_rate": float,           wanted share of good parts that show any region
      "tail": {...}, "pixel_tail": {...},   the fitted tails (u, p_u, xi, sigma, m, n, estimator)
      "expected": {                  figures at the stored thresholds (see threshold_figures)
        "frr": float,                tail-model false-reject rate at t_ng (= target unless moved)
        "frr_interval": [lo, hi],    95 % Clopper-Pearson on the cross-fitted count >= t_ng
        "frr_interval_bootstrap": [lo, hi],  90 % bootstrap of the tail model's rate at t_ng
        "crossfit_rejects": int,     cross-fitted good scores >= t_ng
        "review_fraction": float,    tail-model share of good parts in REVIEW
        "region_rate": float         tail-model share of good parts with a pixel >= pixel_threshold
      },
      "scale": {"center": m, "ng_at": 1.0, "review_at": r},
                                     calibrated score = (s - m) / (t_ng - m): a typical good
                                     part near 0, the NG threshold always at 1.0
      "pixel_size_mm": float|None,   size of one image pixel, for region measures in mm
      "grading": {...},              region rules, see anomaly.grading
      "detection": {...},            synthetic-defect detection estimate, see anomaly.detection_estimate
      "history": [...]               threshold moves since training (anomaly.thresholds)
    }

On the calibrated scale a typical good part sits near 0 and the NG threshold is always at
1.0, whatever the model, so an integrator can compare numbers across models and versions.

numpy only (scipy's incomplete beta function is imported when an interval is asked for).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from anomaly.errors import InvalidParameterError

VERDICTS = ("GOOD", "REVIEW", "NG")
NG_AT = 1.0

#: Fewest exceedances the tail is fitted to, and the share of the sample they are at least.
MIN_EXCEEDANCES = 5
TAIL_FRACTION = 0.2
#: From this many exceedances on the GPD shape is estimated; below, the tail is exponential.
MIN_EXCEEDANCES_FOR_SHAPE = 20
XI_RANGE = (-0.5, 0.45)
#: Review rate used when none is given, as a multiple of the target false-reject rate.
DEFAULT_REVIEW_FACTOR = 3.0


def verdict(score: float, calibration: dict[str, Any]) -> str:
    """GOOD below ``t_review``, NG at or above ``t_ng``, REVIEW between."""
    if not calibration or calibration.get("t_ng") is None:
        raise InvalidParameterError("the model has no calibrated thresholds; calibrate it first")
    if score >= calibration["t_ng"]:
        return "NG"
    if score >= calibration.get("t_review", calibration["t_ng"]):
        return "REVIEW"
    return "GOOD"


def calibrated_score(score: float, calibration: dict[str, Any]) -> float:
    """The score on the calibrated scale where the NG threshold sits at 1.0."""
    scale = calibration.get("scale") or {}
    center = float(scale.get("center", 0.0))
    span = float(calibration["t_ng"]) - center
    if span <= 0:
        return float(score >= calibration["t_ng"])
    return float((score - center) / span * NG_AT)


# -- interval and tail estimates ------------------------------------------------------------
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


# -- calibration from good scores ---------------------------------------------------------------
def calibrate(
    good_scores: Sequence[float],
    *,
    target_frr: float = 0.01,
    review_rate: float | None = None,
    good_map_maxima: Sequence[float] | None = None,
    good_map_values: np.ndarray | None = None,
    pixel_rate: float | None = None,
    n_folds: int | None = None,
    split_seed: int | None = None,
) -> dict[str, Any]:
    """Thresholds from cross-fitted good scores (see the module docstring).

    Args:
        good_scores: ``(n,)`` scores of good images, each from a model that did not train
            on it; ``n >= 2``.
        target_frr: Wanted share of good parts judged NG, in ``(0, 0.5)``.
        review_rate: Wanted share of good parts sent to REVIEW (``t_review`` sits where
            ``target_frr + review_rate`` of good parts score above); default
            ``3 * target_frr``; 0 for a single cut.
        good_map_maxima: ``(n,)`` maxima of the same images' cross-fitted maps, for the
            pixel threshold.
        good_map_values: Optional sample of those maps' values, for ``map_floor``.
        pixel_rate: Wanted share of good parts showing any pixel at or above the pixel
            threshold (a region); default ``target_frr + review_rate``.
        n_folds: Number of cross-fitting folds (recorded).
        split_seed: Seed of the fold split (recorded).

    Returns:
        The calibration dict.
    """
    scores = np.asarray(good_scores, dtype=np.float64).reshape(-1)
    if scores.size < 2:
        raise InvalidParameterError(f"calibration needs at least 2 cross-fitted good scores, got {scores.size}")
    if not 0.0 < target_frr < 0.5:
        raise InvalidParameterError(f"target false-reject rate must be in (0, 0.5), got {target_frr}")
    if review_rate is None:
        review_rate = DEFAULT_REVIEW_FACTOR * target_frr
    if review_rate < 0 or target_frr + review_rate >= 1.0:
        raise InvalidParameterError(f"review rate must be >= 0 and target_frr + review_rate < 1, got {review_rate}")
    tail = fit_tail(scores)
    t_ng = tail_quantile(scores, target_frr, tail)
    t_review = tail_quantile(scores, target_frr + review_rate, tail) if review_rate > 0 else t_ng
    t_review = min(t_review, t_ng)

    pixel = pixel_tail = maxima = None
    if pixel_rate is None:
        pixel_rate = min(target_frr + review_rate, 0.5)
    if not 0.0 < pixel_rate < 1.0:
        raise InvalidParameterError(f"pixel rate must be in (0, 1), got {pixel_rate}")
    if good_map_maxima is not None and np.size(good_map_maxima) >= 2:
        maxima = np.asarray(good_map_maxima, dtype=np.float64).reshape(-1)
        pixel_tail = fit_tail(maxima)
        pixel = tail_quantile(maxima, pixel_rate, pixel_tail)
    floor = None
    if good_map_values is not None and np.size(good_map_values):
        floor = float(np.median(np.asarray(good_map_values, dtype=np.float64)))

    center = float(np.median(scores))
    cal: dict[str, Any] = {
        "method": (
            f"{'cross-fitted' if n_folds else 'held-out'} good scores"
            + (f" ({n_folds} folds)" if n_folds else "")
            + f"; t_ng at a {target_frr:.3%} tail rate, t_review at {target_frr + review_rate:.3%}, "
            f"from the {tail['estimator']} tail fit over the top {tail['m']} of {tail['n']} "
            "(empirical quantile inside the sample); pixel threshold the same way from good-map maxima"
        ),
        "t_review": float(t_review),
        "t_ng": float(t_ng),
        "pixel_threshold": pixel,
        "map_floor": floor,
        "good_scores": scores.tolist(),
        "good_map_maxima": None if maxima is None else maxima.tolist(),
        "n_good": int(scores.size),
        "n_folds": n_folds,
        "split_seed": split_seed,
        "target_frr": float(target_frr),
        "review_rate": float(review_rate),
        "pixel_rate": float(pixel_rate),
        "tail": tail,
        "pixel_tail": pixel_tail,
        "scale": {"center": center, "ng_at": NG_AT},
    }
    cal["expected"] = threshold_figures(cal)
    cal["scale"]["review_at"] = calibrated_score(t_review, cal)
    return cal


def threshold_figures(calibration: dict[str, Any]) -> dict[str, Any]:
    """What the stored thresholds are expected to cost, from the stored good sample.

    Returns:
        ``frr`` (tail-model share of good parts >= ``t_ng``), ``frr_interval`` (95 %
        Clopper-Pearson on the cross-fitted count), ``frr_interval_bootstrap`` (90 %),
        ``crossfit_rejects``, ``n_good``, ``review_fraction`` (tail-model share in
        REVIEW), ``crossfit_review``, and ``region_rate`` when there is a pixel threshold.
    """
    scores = np.asarray(calibration.get("good_scores") or [], dtype=np.float64)
    if scores.size < 2:
        return {}
    tail = calibration.get("tail") or fit_tail(scores)
    t_ng, t_review = float(calibration["t_ng"]), float(calibration.get("t_review", calibration["t_ng"]))
    k = int(np.sum(scores >= t_ng))
    frr = tail_rate(scores, t_ng, tail)
    out: dict[str, Any] = {
        "frr": frr,
        "frr_interval": list(clopper_pearson(k, scores.size)),
        "frr_interval_bootstrap": list(bootstrap_rate_interval(scores, t_ng)),
        "crossfit_rejects": k,
        "n_good": int(scores.size),
        "review_fraction": max(0.0, tail_rate(scores, t_review, tail) - frr),
        "crossfit_review": int(np.sum((scores >= t_review) & (scores < t_ng))),
    }
    maxima = calibration.get("good_map_maxima")
    if calibration.get("pixel_threshold") is not None and maxima and len(maxima) >= 2:
        out["region_rate"] = tail_rate(maxima, float(calibration["pixel_threshold"]), calibration.get("pixel_tail"))
    return out
