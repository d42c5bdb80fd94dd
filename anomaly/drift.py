"""Are the good parts drifting? Two sequential tests of a model's scores against its calibration.

New lighting, a dirty lens or a new supplier moves the scores of good parts up long before
the false rejects pile up. The calibration knows what good parts score (its cross-fitted
good scores), so every recorded part is a Bernoulli trial against two expectations:

* **above review**: ``score >= t_review``; a good part does so with the calibration's
  tail-model share ``p0`` (its expected REVIEW plus NG share). The alternative is that share
  tripled.
* **above the good median**: ``score >`` the median of the calibration's good scores; a good
  part does so half the time. The alternative is three parts in four, what a shift of the
  whole good distribution gives long before its tail crosses ``t_review``.

Each is a CUSUM of the log-likelihood ratio (Page 1954), ``S = max(0, S + log(p1/p0))`` for
a part above and ``S = max(0, S + log((1 - p1)/(1 - p0)))`` for one below, with an alarm at
``S >= h``. With ``h = log(ARL0)`` the mean run of unchanged goods to a false alarm is at
least ``ARL0`` parts (Lorden 1971), here 100,000 per test, so 2,000 unchanged goods raise
an alarm with probability at most about 4 % (measured: none in ``tests/test_drift.py``). A
shift that puts every good part above the median raises it after ``h / log(1.5)``, about
29 parts; one that puts three in four there after about 90.

Real defects count too: a run of defects above ``t_review`` is an excess the line wants to
hear about as well. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from anomaly.calibration import Calibration

#: Least mean number of unchanged parts before a false alarm, per test.
ARL0 = 100_000
#: The alarm threshold of both CUSUMs (Lorden: ARL0 >= e^h).
H = math.log(ARL0)
#: The above-review alternative: this many times the calibration's share.
REVIEW_FACTOR = 3.0
#: The above-median alternative: this share of parts above the good median.
MEDIAN_SHIFT = 0.75
#: Bounds of the above-review null share (a calibration with none or all above is not testable there).
P0_RANGE = (0.002, 0.5)


@dataclass(frozen=True)
class DriftReference:
    """What a model's calibration expects of good parts, and the two tests' log-likelihood steps.

    Attributes:
        t_review: Review threshold (raw score).
        p_review: Expected share of good parts at or above it.
        good_median: Median of the calibration's good scores (raw).
        good_calibrated: Quantiles 0.5 and 0.9 of the calibrated good scores below ``t_review``
            (what the scores of parts judged GOOD should look like).
        steps: ``(above, below)`` log-likelihood increments of each test.
    """

    t_review: float
    p_review: float
    good_median: float
    good_calibrated: dict[str, float]
    steps: dict[str, tuple[float, float]]

    @classmethod
    def from_calibration(cls, cal: Calibration) -> "DriftReference | None":
        """The reference of a calibration, or ``None`` when it lacks thresholds or good scores."""
        goods = np.asarray(cal.good_scores, dtype=np.float64)
        if cal.t_ng is None or goods.size < 2:
            return None
        t_review = float(cal.t_review if cal.t_review is not None else cal.t_ng)
        expected = cal.expected or {}
        p0 = expected.get("review_fraction")
        p0 = float(p0) + float(expected.get("frr") or 0.0) if p0 is not None else float(np.mean(goods >= t_review))
        p0 = min(max(p0, P0_RANGE[0]), P0_RANGE[1])
        p1 = min(REVIEW_FACTOR * p0, 0.95)
        below = goods[goods < t_review]
        calibrated = np.asarray([cal.calibrated(float(s)) for s in (below if below.size else goods)])
        return cls(
            t_review=t_review, p_review=p0, good_median=float(np.median(goods)),
            good_calibrated={"q50": float(np.quantile(calibrated, 0.5)), "q90": float(np.quantile(calibrated, 0.9))},
            steps={"review": (math.log(p1 / p0), math.log((1 - p1) / (1 - p0))),
                   "median": (math.log(MEDIAN_SHIFT / 0.5), math.log((1 - MEDIAN_SHIFT) / 0.5))},
        )

    def increments(self, score: float) -> dict[str, float]:
        """Each test's log-likelihood step for one part's raw score."""
        above = {"review": score >= self.t_review, "median": score > self.good_median}
        return {test: self.steps[test][0] if above[test] else self.steps[test][1] for test in self.steps}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": {k: list(v) for k, v in self.steps.items()}}


def cusum(steps: Sequence[float], start: float = 0.0) -> np.ndarray:
    """The CUSUM path ``S_i = max(0, S_{i-1} + step_i)`` from ``start``, ``(len(steps),)``."""
    out = np.empty(len(steps))
    s = float(start)
    for i, step in enumerate(steps):
        s = max(0.0, s + float(step))
        out[i] = s
    return out


def assess(ref: DriftReference, scores: Sequence[float], verdicts: Sequence[str],
           calibrated: Sequence[float]) -> dict[str, Any]:
    """Both tests over a sequence of parts (oldest first), and the window's figures beside the calibration's.

    Args:
        ref: The model's reference.
        scores: ``(n,)`` raw scores.
        verdicts: The parts' verdicts.
        calibrated: ``(n,)`` calibrated scores.

    Returns:
        ``n``; per test its CUSUM now, its largest value, and the index of the first part at
        which it reached ``H`` (``None``: no alarm); the share above review against the
        expected; the quantiles of the calibrated scores of parts judged GOOD against the
        calibration's; ``alarm``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    tests = {}
    for test in ref.steps:
        path = cusum([ref.increments(s)[test] for s in scores])
        crossed = np.flatnonzero(path >= H)
        tests[test] = {"cusum": float(path[-1]) if path.size else 0.0, "max": float(path.max()) if path.size else 0.0,
                       "alarm_at": int(crossed[0]) if crossed.size else None}
    good = np.asarray([c for c, v in zip(calibrated, verdicts) if v == "GOOD"], dtype=np.float64)
    return {
        "n": int(scores.size),
        "share_above_review": float(np.mean(scores >= ref.t_review)) if scores.size else None,
        "expected_share_above_review": ref.p_review,
        "share_above_good_median": float(np.mean(scores > ref.good_median)) if scores.size else None,
        "good_calibrated": {"q50": float(np.quantile(good, 0.5)), "q90": float(np.quantile(good, 0.9))}
        if good.size else None,
        "expected_good_calibrated": ref.good_calibrated,
        "tests": tests, "threshold": H, "arl0": ARL0,
        "alarm": any(t["alarm_at"] is not None for t in tests.values()),
    }
