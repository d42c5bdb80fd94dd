"""Thresholds from good images, and the verdict they give (numpy only).

A calibration is a plain dict stored in the bundle manifest::

    {
      "method": "...",                 how the thresholds were derived
      "t_review": float,               below: GOOD
      "t_ng": float,                   at or above: NG; between: REVIEW
      "pixel_threshold": float|None,   map value above which a pixel belongs to a region
      "good_scores": [...],            the held-out good-image scores they came from
      "scale": {"center": m, "ng_at": 1.0}   calibrated score = (s - m) / (t_ng - m)
      ...
    }

On the calibrated scale a typical good part sits near 0 and the NG threshold is always at
1.0, whatever the model, so an integrator can compare numbers across models and versions.

This module holds the provisional rule used until a model is calibrated with
cross-fitting (a held-out fraction of the good images, thresholds from their scores).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from anomaly.errors import InvalidParameterError

VERDICTS = ("GOOD", "REVIEW", "NG")
NG_AT = 1.0


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


def provisional_calibration(
    good_scores: Sequence[float],
    *,
    good_map_values: np.ndarray | None = None,
    review_sigma: float = 2.0,
    ng_sigma: float = 3.0,
) -> dict[str, Any]:
    """Thresholds from held-out good scores: median + k * (robust sigma), and not below the max.

    The robust sigma is 1.4826 x the median absolute deviation. ``t_ng`` is never below the
    largest held-out good score, so no held-out good image is rejected.

    Args:
        good_scores: ``(n,)`` scores of good images the model did not train on.
        good_map_values: Optional sample of map values from those images; the pixel
            threshold is their 99.9th percentile.
        review_sigma: Distance of ``t_review`` from the median, in robust sigmas.
        ng_sigma: Distance of ``t_ng``.
    """
    scores = np.asarray(good_scores, dtype=np.float64)
    if scores.size == 0:
        raise InvalidParameterError("calibration needs at least one held-out good score")
    median = float(np.median(scores))
    sigma = float(1.4826 * np.median(np.abs(scores - median))) or float(scores.std()) or max(abs(median) * 0.05, 1e-6)
    t_ng = max(median + ng_sigma * sigma, float(scores.max()) * 1.0001 + 1e-12)
    t_review = min(median + review_sigma * sigma, t_ng)
    pixel = floor = None
    if good_map_values is not None and np.size(good_map_values):
        values = np.asarray(good_map_values, dtype=np.float64)
        pixel = float(np.quantile(values, 0.999))
        floor = float(np.median(values))
    return {
        "method": f"provisional: held-out good scores, median + {review_sigma:g}/{ng_sigma:g} robust sigma, t_ng >= max",
        "t_review": float(t_review),
        "t_ng": float(t_ng),
        "pixel_threshold": pixel,
        "map_floor": floor,
        "good_scores": scores.tolist(),
        "n_good": int(scores.size),
        "scale": {"center": median, "ng_at": NG_AT},
    }
