"""Move a model's thresholds without retraining: every move is a new, immutable version.

The new version holds the same files as the one it comes from (same detector state, same
hashes) and a manifest whose calibration carries the new thresholds, the figures they are
expected to give (recomputed from the stored good-score sample and the stored
synthetic-defect samples), and a ``history`` entry saying what moved, from where, and who
asked. The old version is left untouched; production moves only when asked.

Used by ``anomaly models set-threshold`` and by the service.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomaly.bundle import read_manifest, verify_files, write_manifest
from anomaly.calibration import Calibration, with_figures
from anomaly.errors import InvalidParameterError
from anomaly.grading import check_rules
from anomaly.store import ModelStore
from anomaly.tails import fit_tail, tail_quantile

#: Accepted range of each rate: below the lower end a tail quantile is no threshold any more
#: (a pixel rate of 1e-320 gave an infinite pixel threshold), above the upper one it rejects half
#: the good parts.
RATE_BOUNDS = {"target_frr": (1e-6, 0.5), "review_rate": (0.0, 0.5), "pixel_rate": (1e-6, 0.5)}
#: A threshold given by hand may lie at most this many times the largest stored good value from
#: zero: one far beyond every good part switches the inspection off without saying so.
THRESHOLD_SPAN = 100.0


@dataclass(frozen=True, kw_only=True)
class ThresholdChange:
    """What to move in a calibration; a field left ``None`` is not moved.

    Attributes:
        t_ng, t_review, pixel_threshold: New thresholds (raw score units).
        target_frr, review_rate, pixel_rate: New rates, turned into thresholds by the
            stored good sample (see :func:`recalibrate`).
        grading: New region grading rules.
    """

    t_ng: float | None = None
    t_review: float | None = None
    target_frr: float | None = None
    review_rate: float | None = None
    pixel_threshold: float | None = None
    pixel_rate: float | None = None
    grading: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("t_ng", "t_review", "pixel_threshold", *RATE_BOUNDS):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidParameterError(f"{name} must be a finite number, got {value!r}")
            low, high = RATE_BOUNDS.get(name, (-math.inf, math.inf))
            if not low <= value <= high:
                raise InvalidParameterError(f"{name} must be between {low:g} and {high:g}, got {value:g}")

    def asked(self) -> dict[str, Any]:
        """The fields that were given (not ``None``), in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def recalibrate(calibration: Calibration, change: ThresholdChange) -> Calibration:
    """A calibration with moved thresholds and refreshed expected figures.

    Rates are turned into thresholds through the stored good sample's tail, as at training;
    explicit thresholds win over rates. When only ``t_ng`` moves, ``t_review`` keeps its
    value unless it would end above ``t_ng``.

    Raises:
        InvalidParameterError: nothing to change, a rate without a stored good sample,
            ``t_review > t_ng``, a threshold more than :data:`THRESHOLD_SPAN` times the
            largest stored good value from zero, or a result that is not a finite number.
    """
    if not change.asked():
        raise InvalidParameterError("nothing to change: give a threshold, a rate or grading rules")
    cal = calibration
    _check_span(change.t_ng, "t_ng", cal.good_scores, "good parts' scores")
    _check_span(change.t_review, "t_review", cal.good_scores, "good parts' scores")
    _check_span(change.pixel_threshold, "pixel_threshold", cal.good_map_maxima, "good parts' map maxima")
    scores = cal.good_scores
    if (change.target_frr is not None or change.review_rate is not None) and len(scores) < 2:
        raise InvalidParameterError("this model stores no good-score sample: give thresholds, not rates")
    tail = cal.tail or (fit_tail(scores) if len(scores) >= 2 else None)
    moved: dict[str, Any] = {}
    frr = change.target_frr if change.target_frr is not None else cal.target_frr
    if change.target_frr is not None:
        moved["target_frr"] = float(change.target_frr)
        moved["t_ng"] = tail_quantile(scores, change.target_frr, tail)
    if change.review_rate is not None:
        if frr is None:
            raise InvalidParameterError("a review rate needs a target false-reject rate")
        moved["review_rate"] = float(change.review_rate)
        moved["t_review"] = (tail_quantile(scores, frr + change.review_rate, tail) if change.review_rate > 0
                             else moved.get("t_ng", cal.t_ng))
    if change.t_ng is not None:
        moved["t_ng"] = float(change.t_ng)
    if change.t_review is not None:
        moved["t_review"] = float(change.t_review)
    t_ng = moved.get("t_ng", cal.t_ng)
    if t_ng is None:
        raise InvalidParameterError("the model has no t_ng and none was given")
    t_review = moved.get("t_review", cal.t_review)
    if change.t_review is None and change.review_rate is None and (t_review is None or t_review > t_ng):
        moved["t_review"] = t_review = t_ng
    if t_review > t_ng:
        raise InvalidParameterError(f"t_review ({t_review:g}) must not be above t_ng ({t_ng:g})")
    if change.pixel_rate is not None:
        maxima = cal.good_map_maxima or []
        if len(maxima) < 2:
            raise InvalidParameterError("this model stores no good-map maxima: give a pixel threshold, not a rate")
        moved["pixel_rate"] = float(change.pixel_rate)
        moved["pixel_threshold"] = tail_quantile(maxima, change.pixel_rate, cal.pixel_tail)
    if change.pixel_threshold is not None:
        moved["pixel_threshold"] = float(change.pixel_threshold)
    if change.grading is not None:
        moved["grading"] = check_rules(change.grading)
    for key in ("t_ng", "t_review", "pixel_threshold"):
        if moved.get(key) is not None and not math.isfinite(moved[key]):
            raise InvalidParameterError(f"the move would set {key} to {moved[key]}; choose a less extreme value")
    cal = with_figures(cal.replace(**moved))
    if cal.detection:
        from anomaly.detection_estimate import detection_rates

        cal = cal.replace(detection={**cal.detection, **detection_rates(cal.detection, cal,
                                                                         pixel_size_mm=cal.pixel_size_mm)})
    return cal


def _check_span(value: float | None, name: str, sample: list[float] | None, what: str) -> None:
    """Refuse a hand-set threshold far beyond every stored good value (see :data:`THRESHOLD_SPAN`)."""
    if value is None or not sample:
        return
    limit = THRESHOLD_SPAN * max(abs(float(v)) for v in sample)
    if abs(value) > limit:
        raise InvalidParameterError(
            f"{name} {value:g} is out of reach of this model: its {what} lie between {min(sample):g} and "
            f"{max(sample):g}; at most {limit:g} ({THRESHOLD_SPAN:g} x the largest) from zero is accepted")


def set_thresholds(
    store: ModelStore,
    name: str,
    version: int | None = None,
    *,
    change: ThresholdChange,
    promote: bool = False,
    changed_by: str | None = None,
    reason: str | None = None,
) -> int:
    """Write a new version of ``name`` with moved thresholds; the source version is untouched.

    Args:
        store: The model store.
        name: Model name.
        version: Version to start from (default: production).
        change: What to move (thresholds, rates, grading rules).
        promote: Put the new version in production.
        changed_by: Who asked (recorded).
        reason: Why (recorded).

    Returns:
        The new version number.
    """
    source = store.path(name, version)
    manifest = read_manifest(source)
    verify_files(source, manifest)
    old = Calibration.from_manifest(manifest.get("calibration"))
    new = recalibrate(old, change)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    change = {
        "at": now,
        "from_version": int(source.name),
        "by": changed_by,
        "reason": reason,
        "asked": change.asked(),
        "before": {k: getattr(old, k) for k in ("t_review", "t_ng", "pixel_threshold")},
        "after": {k: getattr(new, k) for k in ("t_review", "t_ng", "pixel_threshold")},
    }
    new = new.replace(history=[*old.history, change])
    updated = dict(manifest)
    updated["calibration"] = new.to_dict()
    updated["created"] = now
    updated["notes"] = {**(manifest.get("notes") or {}), "parent_version": int(source.name),
                        "change": "set-threshold"}

    def write(target: Path) -> None:
        target.mkdir(parents=True)
        for rel in manifest.get("files") or {}:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, dest)
        write_manifest(target, updated)
        verify_files(target, updated)

    return store.add(name, write, promote=True if promote else False)
