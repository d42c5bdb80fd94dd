"""From a list of good images to a fitted, calibrated detector and the facts to store with it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.bundle import TrainingData, fingerprint_images
from anomaly.calibration import provisional_calibration
from anomaly.detectors.base import Detector
from anomaly.detectors.registry import create_detector
from anomaly.errors import DatasetError, InvalidParameterError
from anomaly.imageio import ImageLike

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A fitted detector with its calibration and provenance."""

    detector: Detector
    calibration: dict[str, Any]
    training: TrainingData
    fit_seconds: float
    holdout: list[int]


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` image indices into (fit, held-out); at least one held out when n >= 2."""
    if not 0.0 <= fraction < 1.0:
        raise InvalidParameterError(f"holdout fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_hold = 0 if n < 2 or fraction == 0 else max(1, int(round(fraction * n)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def train(
    detector_name: str,
    images: Sequence[ImageLike],
    *,
    params: dict[str, Any] | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    source: str = "",
) -> TrainedModel:
    """Fit a detector on good images and calibrate it on a held-out fraction of them.

    Args:
        detector_name: Registry name (``patchcore``, ``padim``, ...).
        images: Good images (paths, bytes or arrays).
        params: Detector hyper-parameters.
        holdout_fraction: Fraction of the images kept out of fitting to calibrate on.
        seed: Seed of the split (saved in the manifest).
        source: Where the images came from, for the manifest.
    """
    images = list(images)
    if len(images) < 2:
        raise DatasetError(f"training needs at least 2 good images (one is held out to calibrate), got {len(images)}")
    detector = create_detector(detector_name, params)
    fit_idx, hold_idx = split_holdout(len(images), holdout_fraction, seed)
    start = time.perf_counter()
    detector.fit([images[i] for i in fit_idx])
    fit_seconds = time.perf_counter() - start
    held = detector.score([images[i] for i in hold_idx])
    values = np.concatenate([m.ravel()[:: max(1, m.size // 20000)] for m in held.maps])
    calibration = provisional_calibration(held.scores, good_map_values=values)
    calibration["holdout_fraction"] = holdout_fraction
    calibration["split_seed"] = seed
    training = TrainingData(
        fingerprint=fingerprint_images(images),
        n_images=len(images),
        source=source,
        extra={"n_fit": int(len(fit_idx)), "n_holdout": int(len(hold_idx))},
    )
    return TrainedModel(detector, calibration, training, fit_seconds, [int(i) for i in hold_idx])


def describe_source(images: Sequence[ImageLike]) -> str:
    """A short description of where training images came from."""
    paths = [Path(p) for p in images if isinstance(p, (str, Path))]
    parents = sorted({str(p.parent) for p in paths})
    return parents[0] if len(parents) == 1 else (f"{len(parents)} folders" if parents else "in-memory images")
