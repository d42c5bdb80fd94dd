"""Thresholds from good images only, the verdict they give, and what they are expected to cost.

No defect sample is needed: the thresholds come from scores of good images that the model
did not train on (cross-fitting, see :mod:`anomaly.training`), through a tail estimate
suited to small samples.

The tail estimate and the intervals are in :mod:`anomaly.tails`. A :class:`Calibration` is stored in the bundle manifest as this JSON dict (``to_dict`` /
``from_manifest``)::

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
      "alignment_refused": {...},    goods not aligned out of fold (classical models), see anomaly.training
      "history": [...]               threshold moves since training (anomaly.thresholds)
    }

On the calibrated scale a typical good part sits near 0 and the NG threshold is always at
1.0, whatever the model, so an integrator can compare numbers across models and versions.

numpy only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from anomaly.errors import InvalidParameterError
from anomaly.tails import bootstrap_rate_interval, clopper_pearson, fit_tail, tail_quantile, tail_rate

VERDICTS = ("GOOD", "REVIEW", "NG")
NG_AT = 1.0
#: Review rate used when none is given, as a multiple of the target false-reject rate.
DEFAULT_REVIEW_FACTOR = 3.0


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """A model's thresholds, the good sample they came from, and what they are expected to cost.

    Immutable: a threshold move makes a new one (:func:`anomaly.thresholds.recalibrate`).
    Field meanings are in the module docstring; ``extra`` keeps manifest keys this version
    does not know, so a manifest read and written again loses nothing.
    """

    t_ng: float | None = None
    t_review: float | None = None
    pixel_threshold: float | None = None
    map_floor: float | None = None
    method: str = ""
    good_scores: list[float] = field(default_factory=list)
    good_map_maxima: list[float] | None = None
    n_good: int = 0
    n_folds: int | None = None
    split_seed: int | None = None
    target_frr: float | None = None
    review_rate: float | None = None
    pixel_rate: float | None = None
    tail: dict[str, Any] | None = None
    pixel_tail: dict[str, Any] | None = None
    scale: dict[str, float] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    pixel_size_mm: float | None = None
    grading: dict[str, Any] | None = None
    detection: dict[str, Any] | None = None
    alignment_refused: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, data: dict[str, Any] | None) -> "Calibration":
        """The calibration stored in a manifest (``manifest["calibration"]``; ``None``: uncalibrated)."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: data.pop(k) for k in list(data) if k in known}
        return cls(**{k: v for k, v in values.items() if v is not None}, extra=data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the manifest (unknown keys read earlier included)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    def replace(self, **changes: Any) -> "Calibration":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def verdict(self, score: float) -> str:
        """GOOD below ``t_review``, NG at or above ``t_ng``, REVIEW between.

        Raises:
            InvalidParameterError: the model has no thresholds.
        """
        if self.t_ng is None:
            raise InvalidParameterError("the model has no calibrated thresholds; calibrate it first")
        if score >= self.t_ng:
            return "NG"
        if score >= (self.t_ng if self.t_review is None else self.t_review):
            return "REVIEW"
        return "GOOD"

    def calibrated(self, score: float) -> float:
        """The score on the calibrated scale where the NG threshold sits at 1.0 (and a typical good part near 0)."""
        if self.t_ng is None:
            raise InvalidParameterError("the model has no calibrated thresholds; calibrate it first")
        center = float(self.scale.get("center", 0.0))
        span = float(self.t_ng) - center
        if span <= 0:
            return float(score >= self.t_ng)
        return float((score - center) / span * NG_AT)

    def colour_scale(self, amap: np.ndarray) -> tuple[float, float, float]:
        """The overlay's colour scale for a map ``(H, W)``: ``(low, high, contour)``.

        From the good-map level (``map_floor``) to twice the pixel threshold, the contour at
        the pixel threshold, so colours mean the same on every part; a model without a pixel
        threshold uses the map's own 99th percentile.
        """
        pixel = self.pixel_threshold or float(np.percentile(amap, 99))
        return float(self.map_floor or 0.0), 2.0 * float(pixel), float(pixel)


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
) -> Calibration:
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
        The calibration (no grading, pixel size or detection estimate yet: training adds them).
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
    cal = Calibration(
        method=(
            f"{'cross-fitted' if n_folds else 'held-out'} good scores"
            + (f" ({n_folds} folds)" if n_folds else "")
            + f"; t_ng at a {target_frr:.3%} tail rate, t_review at {target_frr + review_rate:.3%}, "
            f"from the {tail['estimator']} tail fit over the top {tail['m']} of {tail['n']} "
            "(empirical quantile inside the sample); pixel threshold the same way from good-map maxima"
        ),
        t_review=float(t_review),
        t_ng=float(t_ng),
        pixel_threshold=pixel,
        map_floor=floor,
        good_scores=scores.tolist(),
        good_map_maxima=None if maxima is None else maxima.tolist(),
        n_good=int(scores.size),
        n_folds=n_folds,
        split_seed=split_seed,
        target_frr=float(target_frr),
        review_rate=float(review_rate),
        pixel_rate=float(pixel_rate),
        tail=tail,
        pixel_tail=pixel_tail,
        scale={"center": center, "ng_at": NG_AT},
    )
    return with_figures(cal)


def with_figures(cal: Calibration) -> Calibration:
    """``cal`` with its expected figures and the calibrated position of ``t_review`` recomputed."""
    expected = threshold_figures(cal) if len(cal.good_scores) >= 2 else cal.expected
    scale = {"center": 0.0, "ng_at": NG_AT, **cal.scale}
    cal = cal.replace(expected=expected, scale=scale)
    return cal.replace(scale={**scale, "review_at": cal.calibrated(cal.t_review if cal.t_review is not None
                                                                   else cal.t_ng)})


def threshold_figures(cal: Calibration) -> dict[str, Any]:
    """What the stored thresholds are expected to cost, from the stored good sample.

    Returns:
        ``frr`` (tail-model share of good parts >= ``t_ng``), ``frr_interval`` (95 %
        Clopper-Pearson on the cross-fitted count), ``frr_interval_bootstrap`` (90 %),
        ``crossfit_rejects``, ``n_good``, ``review_fraction`` (tail-model share in
        REVIEW), ``crossfit_review``, and ``region_rate`` when there is a pixel threshold.
    """
    scores = np.asarray(cal.good_scores or [], dtype=np.float64)
    if scores.size < 2:
        return {}
    tail = cal.tail or fit_tail(scores)
    t_ng = float(cal.t_ng)
    t_review = t_ng if cal.t_review is None else float(cal.t_review)
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
    maxima = cal.good_map_maxima
    if cal.pixel_threshold is not None and maxima and len(maxima) >= 2:
        out["region_rate"] = tail_rate(maxima, float(cal.pixel_threshold), cal.pixel_tail)
    return out
