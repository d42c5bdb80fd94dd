"""From a list of good images to a fitted, calibrated detector and the facts to store with it.

1. Cross-fit (:mod:`anomaly.crossfit`): every good image gets a score and a map from a
   model that did not train on it; the model that ships is fitted on all of them.
2. Calibrate (:mod:`anomaly.calibration`): ``t_review``, ``t_ng`` and the pixel threshold
   from those scores and maps' maxima, for a target false-reject rate.
3. Estimate detection (:mod:`anomaly.detection_estimate`): synthetic defects scored at
   the thresholds, so the engineer sees what the threshold still catches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.accepted_input import AcceptedInput
from anomaly.bundle import TrainingData, fingerprint_images
from anomaly.calibration import calibrate, clopper_pearson
from anomaly.crossfit import cross_fit
from anomaly.detectors.base import Detector
from anomaly.errors import AlignmentError, DatasetError, InvalidParameterError
from anomaly.grading import check_rules
from anomaly.imageio import ImageLike, as_image

log = logging.getLogger(__name__)

#: Good images the detection estimate puts synthetic defects into (a seeded choice).
DETECTION_BASE_IMAGES = 16


@dataclass
class TrainedModel:
    """A fitted detector with its calibration and provenance.

    Attributes:
        detector: Fitted on all the good images.
        calibration: See :mod:`anomaly.calibration`.
        training: Fingerprint of the images.
        fit_seconds: Cross-fitting, the final fit included.
        calibration_seconds: Thresholds from the cross-fitted scores.
        detection_seconds: The synthetic-defect detection estimate.
        folds: ``(n,)`` fold of each image.
    """

    detector: Detector
    calibration: dict[str, Any]
    training: TrainingData
    fit_seconds: float
    calibration_seconds: float = 0.0
    detection_seconds: float = 0.0
    folds: list[int] = field(default_factory=list)


def train(
    detector_name: str,
    images: Sequence[ImageLike],
    *,
    params: dict[str, Any] | None = None,
    target_frr: float = 0.01,
    review_rate: float | None = None,
    pixel_rate: float | None = None,
    n_folds: int = 5,
    seed: int = 0,
    source: str = "",
    pixel_size_mm: float | None = None,
    grading: dict[str, Any] | None = None,
    detection: bool = True,
) -> TrainedModel:
    """Fit a detector on all good images and calibrate it on cross-fitted scores.

    Args:
        detector_name: Registry name (``patchcore``, ``padim``, ...).
        images: Good images (paths, bytes or arrays), at least 2.
        params: Detector hyper-parameters.
        target_frr: Wanted share of good parts judged NG.
        review_rate: Wanted share of good parts sent to REVIEW (default ``3 * target_frr``).
        pixel_rate: Wanted share of good parts showing a region (default
            ``target_frr + review_rate``).
        n_folds: Cross-fitting folds.
        seed: Seed of the fold split and of the detection estimate (saved).
        source: Where the images came from, for the manifest.
        pixel_size_mm: Side of one pixel in mm, for region measures (saved).
        grading: Region grading rules (see :mod:`anomaly.grading`), saved in the calibration.
        detection: Run the synthetic-defect detection estimate.

    Raises:
        DatasetError: fewer than 2 images.
        AlignmentError: fewer than 2 goods could be aligned out of fold (classical models;
            goods refused out of fold are recorded in ``calibration["alignment_refused"]``).
    """
    images = list(images)
    if len(images) < 2:
        raise DatasetError(f"training needs at least 2 good images (scores come from cross-fitting), got {len(images)}")
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise InvalidParameterError(f"pixel size must be > 0 mm, got {pixel_size_mm}")
    rules = check_rules(grading)

    start = time.perf_counter()
    detector, result, folds = cross_fit(detector_name, images, params=params, n_folds=n_folds, random_state=seed)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    # Goods that a model which had not seen them could not align (classical models) would
    # be ALIGNMENT_FAILED on the line: the thresholds come from the goods that align, and
    # the share refused is kept beside them, as a rate of its own.
    refused = [int(i) for i in result.extras.get("refused") or []]
    aligned = np.setdiff1d(np.arange(len(images)), refused)
    if len(aligned) < 2:
        raise AlignmentError(
            f"only {len(aligned)} of {len(images)} good images could be aligned by a model that had not seen "
            "them: the goods do not share one template (check the product, the framing, or the motion model)")
    maps = [result.maps[i] for i in aligned]
    maxima = np.array([float(m.max()) for m in maps])
    values = np.concatenate([m.ravel()[:: max(1, m.size // 2000)] for m in maps])
    calibration = calibrate(result.scores[aligned], target_frr=target_frr, review_rate=review_rate,
                            good_map_maxima=maxima, good_map_values=values, pixel_rate=pixel_rate,
                            n_folds=int(folds.max()) + 1, split_seed=seed)
    if refused:
        lo, hi = clopper_pearson(len(refused), len(images))
        calibration["alignment_refused"] = {
            "goods": refused, "k": len(refused), "n": len(images), "rate": len(refused) / len(images),
            "ci95": [lo, hi],
            "note": "good images a model that had not seen them could not align: on the line such parts get "
                    "ALIGNMENT_FAILED, on top of the thresholds' false rejects (computed over the goods that align)",
        }
        log.warning("%d of %d good images could not be aligned out of fold (indices %s): about %.1f %% of good "
                    "parts would be ALIGNMENT_FAILED", len(refused), len(images), refused,
                    100.0 * len(refused) / len(images))
    calibration["pixel_size_mm"] = pixel_size_mm
    calibration["grading"] = rules
    calibration_seconds = time.perf_counter() - start

    detection_seconds = 0.0
    if detection:
        from anomaly.detection_estimate import estimate_detection

        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(images), min(len(images), DETECTION_BASE_IMAGES), replace=False))
        calibration["detection"] = estimate_detection(detector, [images[i] for i in pick], calibration,
                                                      random_state=seed, pixel_size_mm=pixel_size_mm)
        detection_seconds = time.perf_counter() - start
        log.info("%s", calibration["detection"]["summary"])

    training = TrainingData(
        fingerprint=fingerprint_images(images),
        n_images=len(images),
        source=source,
        extra={"n_fit": len(images), "n_folds": int(folds.max()) + 1, "split_seed": seed,
               "accepted_input": AcceptedInput.of(as_image(image) for image in images).to_dict()},
    )
    return TrainedModel(detector, calibration, training, fit_seconds, calibration_seconds, detection_seconds,
                        [int(f) for f in folds])
