"""Grading rules: the verdict follows what the quality department writes, not only a score.

Rules are a plain JSON dict stored in the bundle (``calibration["grading"]``)::

    {
      "min_area_px": 10,              regions smaller are noise, dropped before grading
      "min_area_mm2": null,           the same in mm^2 (needs the pixel size)
      "ng_if_any": {"length_mm": 2.0, "area_px": 400},
                                      NG when any region reaches any of these (>=)
      "review_if_any": {"contrast_abs": 10},
                                      at least REVIEW when any region reaches any of these
      "max_regions": 3,               NG when more regions than this remain
      "score_ng_without_ng_region": "NG" | "REVIEW"
                                      what a score at or above t_ng becomes when no region
                                      meets an NG rule: "REVIEW" sends parts with only small,
                                      faint regions to a person; default "NG" (score decides)
    }

Measures a rule may name: the :class:`anomaly.regions.Region` fields ``area_px``,
``area_mm2``, ``length_px``, ``length_mm``, ``width_px``, ``width_mm``, ``feret_max_px``,
``mean_score``, ``max_score``, ``contrast_abs``. A rule on a measure a region does not
have (mm without a pixel size, contrast without an image) does not fire, and the reasons
say so.

The final verdict is the worse of the score's verdict (after the downgrade above) and
the rules' verdict. numpy-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from anomaly.errors import InvalidParameterError
from anomaly.regions import DEFAULT_MIN_AREA, Region

MEASURES = ("area_px", "area_mm2", "length_px", "length_mm", "width_px", "width_mm", "feret_max_px",
            "mean_score", "max_score", "contrast_abs")
_KEYS = {"min_area_px", "min_area_mm2", "ng_if_any", "review_if_any", "max_regions", "score_ng_without_ng_region"}
_SEVERITY = {"GOOD": 0, "REVIEW": 1, "NG": 2}

DEFAULT_RULES: dict[str, Any] = {"min_area_px": DEFAULT_MIN_AREA}


@dataclass
class Grade:
    """A graded part.

    Attributes:
        verdict: ``GOOD``, ``REVIEW`` or ``NG``.
        reasons: Why, one line per rule that fired (empty when the score alone decided GOOD).
        regions: The regions that survived the area filter, strongest first.
    """

    verdict: str
    reasons: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)


def check_rules(rules: dict[str, Any] | None) -> dict[str, Any]:
    """Validate rules (no silent typos) and fill defaults; returns a new dict."""
    out = dict(DEFAULT_RULES)
    if not rules:
        return out
    if not isinstance(rules, dict):
        raise InvalidParameterError(f"grading rules must be a JSON object, got {type(rules).__name__}")
    unknown = sorted(set(rules) - _KEYS)
    if unknown:
        raise InvalidParameterError(f"unknown grading rule key(s) {unknown}; known: {sorted(_KEYS)}")
    out.update({k: v for k, v in rules.items()})
    for key in ("ng_if_any", "review_if_any"):
        conditions = out.get(key) or {}
        if not isinstance(conditions, dict):
            raise InvalidParameterError(f"{key} must map measures to limits, got {conditions!r}")
        bad = sorted(set(conditions) - set(MEASURES))
        if bad:
            raise InvalidParameterError(f"{key}: unknown measure(s) {bad}; measures: {', '.join(MEASURES)}")
        for measure, limit in conditions.items():
            if not isinstance(limit, (int, float)) or isinstance(limit, bool):
                raise InvalidParameterError(f"{key}.{measure} must be a number, got {limit!r}")
        out[key] = dict(conditions)
    for key in ("min_area_px", "min_area_mm2", "max_regions"):
        value = out.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise InvalidParameterError(f"{key} must be a number >= 0 or null, got {value!r}")
    mode = out.get("score_ng_without_ng_region", "NG")
    if mode not in ("NG", "REVIEW"):
        raise InvalidParameterError(f"score_ng_without_ng_region must be 'NG' or 'REVIEW', got {mode!r}")
    return out


def min_area_px(rules: dict[str, Any] | None, pixel_size_mm: float | None = None) -> float:
    """Smallest region kept, in pixels, from ``min_area_px`` and ``min_area_mm2``."""
    rules = check_rules(rules)
    area = float(rules.get("min_area_px") or 0)
    if rules.get("min_area_mm2") and pixel_size_mm:
        area = max(area, float(rules["min_area_mm2"]) / pixel_size_mm**2)
    return area


def grade(score_verdict: str, regions: Sequence[Region], rules: dict[str, Any] | None) -> Grade:
    """Combine the score's verdict with region rules.

    Args:
        score_verdict: ``GOOD``/``REVIEW``/``NG`` from the image score and thresholds.
        regions: Regions of the part's map (see :func:`anomaly.regions.find_regions`).
        rules: Grading rules (see the module docstring); ``None`` keeps only the area filter.

    Returns:
        The :class:`Grade`.
    """
    if score_verdict not in _SEVERITY:
        raise InvalidParameterError(f"score verdict must be one of {list(_SEVERITY)}, got {score_verdict!r}")
    rules = check_rules(rules)
    kept = [r for r in regions if r.area_px >= (rules.get("min_area_px") or 0)
            and (not rules.get("min_area_mm2") or r.area_mm2 is None or r.area_mm2 >= rules["min_area_mm2"])]
    reasons: list[str] = []
    ng_hits = _hits(kept, rules.get("ng_if_any") or {}, "NG", reasons)
    review_hits = _hits(kept, rules.get("review_if_any") or {}, "REVIEW", reasons)
    rule_verdict = "GOOD"
    if ng_hits:
        rule_verdict = "NG"
    elif review_hits:
        rule_verdict = "REVIEW"
    if rules.get("max_regions") is not None and len(kept) > rules["max_regions"]:
        rule_verdict = "NG"
        reasons.append(f"{len(kept)} regions > max_regions {rules['max_regions']} -> NG")

    verdict = score_verdict
    if score_verdict == "NG":
        if not ng_hits and rules.get("score_ng_without_ng_region") == "REVIEW" and rule_verdict != "NG":
            verdict = "REVIEW"
            reasons.append("score at or above t_ng but no region meets an NG rule -> REVIEW")
        else:
            reasons.append("score at or above t_ng -> NG")
    elif score_verdict == "REVIEW":
        reasons.append("score between t_review and t_ng -> REVIEW")
    if _SEVERITY[rule_verdict] > _SEVERITY[verdict]:
        verdict = rule_verdict
    return Grade(verdict=verdict, reasons=reasons, regions=kept)


def _hits(regions: Sequence[Region], conditions: dict[str, float], outcome: str, reasons: list[str]) -> int:
    hits = 0
    missing: set[str] = set()
    for n, region in enumerate(regions, start=1):
        for measure, limit in conditions.items():
            value = region.measure(measure)
            if value is None:
                missing.add(measure)
                continue
            if value >= limit:
                hits += 1
                reasons.append(f"region {n}: {measure} {value:.4g} >= {limit:g} -> {outcome}")
                break
    for measure in sorted(missing):
        reasons.append(f"rule on {measure} not applied: the regions have no {measure}")
    return hits
