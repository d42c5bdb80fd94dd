"""Score parts with a bundle and turn scores into answers: verdict, calibrated score, map stats.

Shared by ``anomaly score`` and the service, so both give the same answer for a part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from anomaly.accepted_input import AcceptedInput
from anomaly.bundle import Bundle
from anomaly.detectors.base import AnomalyResult
from anomaly.grading import grade, min_area_px
from anomaly.imageio import ImageLike, as_image
from anomaly.overlay import overlay
from anomaly.regions import find_regions


@dataclass
class Inspection:
    """The answer for one part."""

    verdict: str
    score: float
    calibrated_score: float
    map: np.ndarray
    map_stats: dict[str, float]
    regions: list[dict[str, Any]] = field(default_factory=list)
    score_verdict: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "score": self.score,
            "calibrated_score": self.calibrated_score,
            "map_stats": self.map_stats,
            "regions": self.regions,
            "score_verdict": self.score_verdict,
            "reasons": self.reasons,
        }


def map_stats(amap: np.ndarray, pixel_threshold: float | None) -> dict[str, float]:
    """Max, mean, 99th percentile, and the fraction of pixels above the pixel threshold."""
    stats = {
        "max": float(amap.max()),
        "mean": float(amap.mean()),
        "p99": float(np.percentile(amap, 99)),
        "height": int(amap.shape[0]),
        "width": int(amap.shape[1]),
    }
    if pixel_threshold is not None:
        stats["area_fraction_above_pixel_threshold"] = float((amap >= pixel_threshold).mean())
    return stats


def inspect(bundle: Bundle, images: Sequence[ImageLike]) -> list[Inspection]:
    """Score images with a bundle and judge them against its calibration: :func:`accepted`, score, :func:`judge`."""
    arrays = accepted(bundle, images)
    return judge(bundle, arrays, bundle.detector.score(arrays))


def accepted(bundle: Bundle, images: Sequence[ImageLike]) -> list[np.ndarray]:
    """Decode images and refuse those unlike the training images (size, aspect ratio, colour).

    Raises:
        InputGeometryError: an image the model does not accept (see :mod:`anomaly.accepted_input`).
    """
    arrays = [as_image(image) for image in images]
    geometry = (bundle.manifest.get("training_data") or {}).get("accepted_input")
    if geometry:
        check = AcceptedInput.from_dict(geometry)
        for i, image in enumerate(arrays):
            check.check(image, label="image" if len(arrays) == 1 else f"image {i}")
    return arrays


def judge(bundle: Bundle, images: Sequence[np.ndarray], result: AnomalyResult) -> list[Inspection]:
    """Turn the detector's scores and maps into answers.

    The score gives a first verdict (``score_verdict``); when the calibration has a pixel
    threshold, the map's regions are measured (:func:`anomaly.regions.find_regions`) and
    the bundle's grading rules (:func:`anomaly.grading.grade`) give the final verdict and
    the reasons for it.

    Args:
        bundle: The model.
        images: The decoded images, ``(H, W)`` or ``(H, W, 3)`` each.
        result: ``bundle.detector.score(images)``.
    """
    cal = bundle.calibration
    pixel, pixel_size, rules = cal.pixel_threshold, cal.pixel_size_mm, cal.grading
    out = []
    for image, score, amap in zip(images, result.scores, result.maps):
        first = cal.verdict(float(score))
        final, reasons, regions = first, [], []
        if pixel is not None:
            found = find_regions(amap, float(pixel), image=image, min_area=min_area_px(rules, pixel_size),
                                 pixel_size_mm=pixel_size)
            graded = grade(first, found, rules)
            final, reasons, regions = graded.verdict, graded.reasons, [r.to_dict() for r in graded.regions]
        out.append(
            Inspection(
                verdict=final,
                score=float(score),
                calibrated_score=cal.calibrated(float(score)),
                map=amap,
                map_stats=map_stats(amap, pixel),
                regions=regions,
                score_verdict=first,
                reasons=reasons,
            )
        )
    return out


def render_overlay(bundle: Bundle, image: np.ndarray, inspection: Inspection) -> np.ndarray:
    """Overlay with a colour scale fixed by the calibration (good-map level to twice the pixel threshold)."""
    low, high, contour = bundle.calibration.colour_scale(inspection.map)
    return overlay(image, inspection.map, vmin=low, vmax=high, contour_at=contour,
                   label=f"{inspection.verdict} {inspection.calibrated_score:.2f}")
