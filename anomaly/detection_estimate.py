"""What a threshold still catches: detection rates on synthetic defects, at calibration.

With no real defect image, a threshold's other half of the cost (how small a defect it
misses) is measured on synthetic ones (:mod:`anomaly.synthesis`): defects of every kind
and a ladder of sizes are put into good images, scored by the fitted model, and compared
with the thresholds. Each sample keeps its image score and the map's maximum inside its
mask, so the rates can be recomputed for moved thresholds without scoring again
(:func:`detection_rates`).

Rates per kind and size:

* ``ng``: share with score >= ``t_ng`` (rejected automatically);
* ``flagged``: share with score >= ``t_review`` (rejected or sent to a person);
* ``located``: share whose defect holds a map pixel >= the pixel threshold (a region
  lands on it).

``min_size_90`` is, per kind, the smallest size from which on every size in the ladder
reaches 90 % ``ng``. The base images are good images the final model was fitted on; a
max-type score sees less of their background (it has been memorised) than of a new part,
so faint defects are if anything under-detected here, not over-detected.

numpy/OpenCV only, apart from the detector itself.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import cv2
import numpy as np

from anomaly.calibration import Calibration
from anomaly.detectors.base import Detector
from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.folds import score_or_refuse
from anomaly.imageio import ImageLike, as_image

log = logging.getLogger(__name__)

#: Default ladder of defect sizes, as fractions of the base images' shorter side.
SIZE_FRACTIONS = (1 / 48, 1 / 24, 1 / 12, 1 / 6)
DETECTED_AT = 0.9


def default_sizes(shorter_side: int) -> list[float]:
    """The size ladder in pixels for images of this shorter side (at least 3 px, at most half the side)."""
    sizes = sorted({float(min(max(3, round(f * shorter_side)), shorter_side // 2)) for f in SIZE_FRACTIONS})
    return [s for s in sizes if s >= 3]


def estimate_detection(
    detector: Detector,
    images: Sequence[ImageLike],
    calibration: Calibration,
    *,
    kinds: Sequence[str] | None = None,
    sizes: Sequence[float] | None = None,
    contrast: float = 0.2,
    per_cell: int = 4,
    random_state: int = 0,
    pixel_size_mm: float | None = None,
    trained_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score synthetic defects of several kinds and sizes and rate them at the thresholds.

    Args:
        detector: The fitted detector.
        images: Good images to put defects into (a few are enough; they are cycled).
        calibration: The thresholds the samples are judged at.
        kinds: Defect kinds (default: every kind of :data:`anomaly.synthesis.KINDS`).
        sizes: Defect sizes in pixels (longest extent); default :func:`default_sizes` of
            the smallest shorter side among ``images``.
        contrast: Defect strength (see :class:`anomaly.synthesis.DefectSpec`).
        per_cell: Synthetic images per kind and size.
        random_state: Seed of every choice (base image, placement, shape).
        pixel_size_mm: Pixel side in mm, to state sizes in mm too.
        trained_on: For a model trained on synthetic defects, its record of them
            (``{"kinds": [...], "seed": int}``): stored, and its kinds are marked in the
            summary, since the estimate is optimistic for a kind the model has learnt
            (its own defects are made with other seeds, so none is a training sample).

    Returns:
        ``{"method", "kinds", "sizes_px", "sizes_mm", "contrast", "per_cell",
        "random_state", "samples": [[kind, size_px, score, mask_max], ...] (``None`` score
        and mask_max: a part the model could not align, rejected), "skipped",
        "rates", "min_size_90", "summary"}``; see :func:`detection_rates`.
    """
    from anomaly.synthesis import KINDS, DefectSpec, make_defect

    kinds = list(kinds or KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise InvalidParameterError(f"unknown defect kind(s) {unknown}; known: {', '.join(KINDS)}")
    if per_cell < 1:
        raise InvalidParameterError(f"per_cell must be >= 1, got {per_cell}")
    base = [as_image(image) for image in images]
    if not base:
        raise InvalidParameterError("the detection estimate needs at least one good image")
    shorter = [min(b.shape[:2]) for b in base]
    sizes = sorted(float(s) for s in (sizes or default_sizes(min(shorter))))
    rng = np.random.default_rng(random_state)
    samples: list[list[Any]] = []
    skipped: dict[str, int] = {}
    for kind in kinds:
        for size in sizes:
            fits = [i for i, side in enumerate(shorter) if side >= 2 * size]
            batch, masks = [], []
            for _ in range(per_cell if fits else 0):
                i = fits[int(rng.integers(len(fits)))]
                try:
                    bad, mask = make_defect(base[i], DefectSpec(kind, size, contrast),
                                            random_state=int(rng.integers(2**31)))
                except (InvalidImageError, cv2.error) as exc:
                    # A kind that cannot change this image (no structure) or fails at this
                    # size is left out of the cell and counted, not fatal.
                    log.debug("synthetic %s of %g px skipped: %s", kind, size, exc)
                    skipped[kind] = skipped.get(kind, 0) + 1
                    continue
                batch.append(bad)
                masks.append(mask)
            if not batch:
                continue
            scores, maps = score_or_refuse(detector, batch)
            for score, amap, mask in zip(scores, maps, masks):
                # A defect that keeps the part from aligning is rejected on the line
                # (ALIGNMENT_FAILED): score None, counted as NG and flagged, not located.
                samples.append([kind, size, score, None if amap is None else float(amap[mask].max())])
    out: dict[str, Any] = {
        "method": (f"{per_cell} synthetic defects (contrast {contrast:g}) per kind and size pasted into the "
                   "training images, scored by the final model"),
        "kinds": kinds,
        "sizes_px": sizes,
        "sizes_mm": [s * pixel_size_mm for s in sizes] if pixel_size_mm else None,
        "contrast": contrast,
        "per_cell": per_cell,
        "random_state": random_state,
        "samples": samples,
        "skipped": skipped,
        "trained_on": None if trained_on is None else {
            "kinds": sorted(set(trained_on.get("kinds") or []) & set(kinds)), "seed": trained_on.get("seed")},
    }
    out.update(detection_rates(out, calibration, pixel_size_mm=pixel_size_mm))
    return out


def detection_rates(detection: dict[str, Any], calibration: Calibration, *,
                    pixel_size_mm: float | None = None) -> dict[str, Any]:
    """Rates of stored synthetic samples at the calibration's thresholds.

    Returns:
        ``{"rates": {kind: {size: {"n", "ng", "flagged", "located"}}}, "min_size_90":
        {kind or "all": size_px or None}, "summary": str}``.
    """
    t_ng = float(calibration.t_ng)
    t_review = t_ng if calibration.t_review is None else float(calibration.t_review)
    pixel = calibration.pixel_threshold
    samples = detection.get("samples") or []
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for kind in list(detection.get("kinds") or []) + ["all"]:
        rows = [s for s in samples if kind == "all" or s[0] == kind]
        per_size = {}
        for size in detection.get("sizes_px") or []:
            cell = [s for s in rows if s[1] == size]
            if not cell:
                continue
            score = np.array([np.inf if s[2] is None else s[2] for s in cell], dtype=np.float64)
            inside = np.array([-np.inf if s[3] is None else s[3] for s in cell], dtype=np.float64)
            per_size[_key(size)] = {
                "n": len(cell),
                "ng": float(np.mean(score >= t_ng)),
                "flagged": float(np.mean(score >= t_review)),
                "located": float(np.mean(inside >= pixel)) if pixel is not None else None,
            }
        rates[kind] = per_size
    smallest = {kind: _smallest(per_size) for kind, per_size in rates.items()}
    trained = set((detection.get("trained_on") or {}).get("kinds") or [])
    return {"rates": rates, "min_size_90": smallest,
            "summary": _summary(rates, smallest, calibration, pixel_size_mm, trained)}


def _key(size: float) -> str:
    return f"{size:g}"


def _smallest(per_size: dict[str, dict[str, float]]) -> float | None:
    """Smallest size from which on every larger size reaches the detection rate."""
    sizes = sorted(per_size, key=float)
    best = None
    for size in reversed(sizes):
        if per_size[size]["ng"] >= DETECTED_AT:
            best = float(size)
        else:
            break
    return best


def _summary(rates, smallest, calibration: Calibration, pixel_size_mm: float | None,
             trained: set[str] = frozenset()) -> str:
    frr = calibration.expected.get("frr", calibration.target_frr)
    unit = (lambda s: f"{s * pixel_size_mm:.3g} mm") if pixel_size_mm else (lambda s: f"{s:g} px")
    head = f"at this threshold about {frr:.2%} of good parts are rejected" if frr is not None else "at this threshold"
    refused = calibration.alignment_refused
    if refused and frr is not None:
        head = (f"at this threshold about {frr:.2%} of the good parts that align are rejected, and "
                f"{refused['rate']:.1%} of good parts did not align ({refused['k']} of {refused['n']} out of fold)")
    parts = []
    for kind, size in smallest.items():
        if kind == "all":
            continue
        name = f"{kind}*" if kind in trained else kind
        if size is None:
            largest = max(rates[kind], key=float) if rates[kind] else None
            if largest is not None:
                parts.append(f"{rates[kind][largest]['ng']:.0%} of {name} at {unit(float(largest))}")
        else:
            parts.append(f"{rates[kind][_key(size)]['ng']:.0%} of {name} at {unit(size)}")
    text = head + ("; caught: " + ", ".join(parts) if parts else "")
    if trained:
        untrained = sorted(k for k in rates if k != "all" and k not in trained)
        text += (f" (* a kind the model was trained on, with other seeds: optimistic; the kinds it never saw, "
                 f"{', '.join(untrained) or 'none'}, are the fair estimate)")
    return text
