"""From a list of good images to a fitted, calibrated detector and the facts to store with it.

1. Cross-fit (:mod:`anomaly.crossfit`): every good image gets a score and a map from a
   model that did not train on it; the model that ships is fitted on all of them.
2. Calibrate (:mod:`anomaly.calibration`): ``t_review``, ``t_ng`` and the pixel threshold
   from those scores and maps' maxima, for a target false-reject rate.
3. Estimate detection (:mod:`anomaly.detection_estimate`): synthetic defects scored at
   the thresholds, so the engineer sees what the threshold still catches.
4. Store (:func:`train_into`): the bundle becomes a new, immutable version in the model
   store. The CLI, the demo, the service's jobs and ``anomaly eval`` all train this way.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.accepted_input import AcceptedInput
from anomaly.bundle import TrainingData, fingerprint_images, save_bundle
from anomaly.calibration import Calibration, calibrate
from anomaly.crossfit import cross_fit
from anomaly.detectors.base import Detector
from anomaly.errors import AlignmentError, DatasetError, InvalidParameterError
from anomaly.grading import check_rules
from anomaly.imageio import ImageLike, as_image
from anomaly.store import ModelStore
from anomaly.tails import clopper_pearson

log = logging.getLogger(__name__)

#: Good images the detection estimate puts synthetic defects into (a seeded choice).
DETECTION_BASE_IMAGES = 16


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How a model is trained and calibrated, apart from the detector and its parameters.

    Every front end (``anomaly train``, the demo, the service's jobs, ``anomaly eval``) fills
    this one object; it is checked on construction and saved in the manifest.

    Attributes:
        target_frr: Wanted share of good parts judged NG, in ``(0, 0.5)``.
        review_rate: Wanted share of good parts sent to REVIEW (default ``3 * target_frr``;
            0 for a single cut).
        pixel_rate: Wanted share of good parts showing a region (default
            ``target_frr + review_rate``).
        n_folds: Cross-fitting folds (at least 2).
        seed: Seed of the fold split, the detection estimate and any sub-sampling (saved).
        pixel_size_mm: Side of one pixel in mm, for region measures (saved).
        grading: Region grading rules (see :mod:`anomaly.grading`), saved in the calibration.
        detection: Run the synthetic-defect detection estimate.
        max_images: Train on at most this many of the images (a seeded choice), if set.
    """

    target_frr: float = 0.01
    review_rate: float | None = None
    pixel_rate: float | None = None
    n_folds: int = 5
    seed: int = 0
    pixel_size_mm: float | None = None
    grading: dict[str, Any] | None = None
    detection: bool = True
    max_images: int | None = None

    def __post_init__(self) -> None:
        def number(name: str, value: Any, integer: bool = False) -> None:
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
                raise InvalidParameterError(f"{name} must be a {'whole ' if integer else ''}number, got {value!r}")

        number("target_frr", self.target_frr)
        if not 0.0 < self.target_frr < 0.5:
            raise InvalidParameterError(f"target false-reject rate must be in (0, 0.5), got {self.target_frr}")
        if self.review_rate is not None:
            number("review_rate", self.review_rate)
            if self.review_rate < 0 or self.target_frr + self.review_rate >= 1.0:
                raise InvalidParameterError(f"review rate must be >= 0 and target_frr + review_rate < 1, "
                                            f"got {self.review_rate}")
        if self.pixel_rate is not None:
            number("pixel_rate", self.pixel_rate)
            if not 0.0 < self.pixel_rate < 1.0:
                raise InvalidParameterError(f"pixel rate must be in (0, 1), got {self.pixel_rate}")
        number("n_folds", self.n_folds, integer=True)
        if self.n_folds < 2:
            raise InvalidParameterError(f"cross-fitting needs at least 2 folds, got {self.n_folds}")
        number("seed", self.seed, integer=True)
        if self.seed < 0:
            raise InvalidParameterError(f"seed must be >= 0, got {self.seed}")
        if self.pixel_size_mm is not None:
            number("pixel_size_mm", self.pixel_size_mm)
            if not self.pixel_size_mm > 0:
                raise InvalidParameterError(f"pixel size must be > 0 mm, got {self.pixel_size_mm}")
        if not isinstance(self.detection, bool):
            raise InvalidParameterError(f"detection must be true or false, got {self.detection!r}")
        if self.max_images is not None:
            number("max_images", self.max_images, integer=True)
            if self.max_images < 2:
                raise InvalidParameterError(f"max_images must be at least 2, got {self.max_images}")
        object.__setattr__(self, "grading", check_rules(self.grading))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainingOptions":
        """Options from JSON (the service's form fields, a manifest).

        Raises:
            InvalidParameterError: an unknown name or a bad value.
        """
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameterError(f"unknown training option(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (saved in the manifest's ``training_data``)."""
        return asdict(self)


@dataclass
class TrainedModel:
    """A fitted detector with its calibration and provenance.

    Attributes:
        detector: Fitted on all the good images.
        calibration: See :mod:`anomaly.calibration`.
        training: Fingerprint of the images, and the options.
        fit_seconds: Cross-fitting, the final fit included.
        calibration_seconds: Thresholds from the cross-fitted scores.
        detection_seconds: The synthetic-defect detection estimate.
        folds: ``(n,)`` fold of each image.
        good_examples: Out-of-fold ``(score, map (H, W))`` of a few goods, by image index: the
            lowest-, median- and highest-scoring goods that aligned (what "normal" looks
            like to a model that had not seen them), for the onboarding report.
    """

    detector: Detector
    calibration: Calibration
    training: TrainingData
    fit_seconds: float
    calibration_seconds: float = 0.0
    detection_seconds: float = 0.0
    folds: list[int] = field(default_factory=list)
    good_examples: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)

    def timings(self) -> dict[str, float]:
        """Seconds spent fitting, calibrating and estimating detection (for the manifest's notes)."""
        return {"fit_seconds": round(self.fit_seconds, 3), "calibration_seconds": round(self.calibration_seconds, 3),
                "detection_seconds": round(self.detection_seconds, 3)}


@dataclass(frozen=True)
class TrainedVersion:
    """What :func:`train_into` stored.

    Attributes:
        name: Model name in the store.
        version: The new version number.
        path: Its bundle folder.
        production: Whether it is now the production version.
        model: The fitted, calibrated model (as it was saved).
    """

    name: str
    version: int
    path: Path
    production: bool
    model: TrainedModel


def train_into(
    store: ModelStore,
    name: str,
    detector: str,
    images: Sequence[ImageLike],
    options: TrainingOptions | None = None,
    notes: dict[str, Any] | None = None,
    *,
    params: dict[str, Any] | None = None,
    source: str = "",
    promote: bool | None = None,
) -> TrainedVersion:
    """Train a detector on good images and store it as a new version of ``name``: the one way to train.

    Args:
        store: The model store.
        name: Model name (new or existing).
        detector: Registry name (``patchcore``, ``padim``, ...).
        images: Good images (paths, bytes or arrays), at least 2.
        options: Calibration and training options (default :class:`TrainingOptions`).
        notes: Free-form facts saved in the manifest (who, why); the timings are added.
        params: Detector hyper-parameters.
        source: Where the images came from, for the manifest.
        promote: Mark the new version for production; by default only a model's first version.

    Returns:
        The stored version.

    Raises:
        DatasetError: fewer than 2 images.
        AlignmentError: fewer than 2 goods could be aligned out of fold (classical models).
        InvalidParameterError: bad parameters or options.
    """
    model = fit_calibrated(detector, images, options or TrainingOptions(), params=params, source=source)
    return store_model(store, name, model, notes, promote=promote)


def store_model(store: ModelStore, name: str, model: TrainedModel, notes: dict[str, Any] | None = None, *,
                promote: bool | None = None, extra_files: dict[str, bytes] | None = None) -> TrainedVersion:
    """Save a fitted, calibrated model as a new version of ``name`` (the second half of :func:`train_into`).

    Used directly only where the model was fitted by :func:`fit_calibrated` already, as
    onboarding does for the candidate it chose (with its report as ``extra_files``,
    relative path to bytes, hashed in the manifest like every bundle file).
    """
    version = store.add(name, lambda target: save_bundle(
        model.detector, target, training=model.training, calibration=model.calibration,
        notes={**(notes or {}), **model.timings()}, extra_files=extra_files), promote=promote)
    return TrainedVersion(name, version, store.path(name, version), store.production(name) == version, model)


def fit_calibrated(
    detector_name: str,
    images: Sequence[ImageLike],
    options: TrainingOptions,
    *,
    params: dict[str, Any] | None = None,
    source: str = "",
) -> TrainedModel:
    """Fit a detector on all good images and calibrate it on cross-fitted scores (not stored).

    Args:
        detector_name: Registry name.
        images: Good images (paths, bytes or arrays), at least 2.
        options: Calibration and training options.
        params: Detector hyper-parameters.
        source: Where the images came from, for the manifest.

    Raises:
        DatasetError: fewer than 2 images.
        AlignmentError: fewer than 2 goods could be aligned out of fold (classical models;
            goods refused out of fold are recorded in ``calibration.alignment_refused``).
    """
    images = list(images)
    if len(images) < 2:
        raise DatasetError(f"training needs at least 2 good images (scores come from cross-fitting), got {len(images)}")
    seed = options.seed
    if options.max_images and len(images) > options.max_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(images), options.max_images, replace=False))
        images = [images[i] for i in pick]

    start = time.perf_counter()
    detector, result, folds = cross_fit(detector_name, images, params=params, n_folds=options.n_folds,
                                        random_state=seed)
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
    calibration = calibrate(result.scores[aligned], target_frr=options.target_frr, review_rate=options.review_rate,
                            good_map_maxima=maxima, good_map_values=values, pixel_rate=options.pixel_rate,
                            n_folds=int(folds.max()) + 1, split_seed=seed)
    if refused:
        lo, hi = clopper_pearson(len(refused), len(images))
        calibration = calibration.replace(alignment_refused={
            "goods": refused, "k": len(refused), "n": len(images), "rate": len(refused) / len(images),
            "ci95": [lo, hi],
            "note": "good images a model that had not seen them could not align: on the line such parts get "
                    "ALIGNMENT_FAILED, on top of the thresholds' false rejects (computed over the goods that align)",
        })
        log.warning("%d of %d good images could not be aligned out of fold (indices %s): about %.1f %% of good "
                    "parts would be ALIGNMENT_FAILED", len(refused), len(images), refused,
                    100.0 * len(refused) / len(images))
    calibration = calibration.replace(pixel_size_mm=options.pixel_size_mm, grading=options.grading)
    calibration_seconds = time.perf_counter() - start

    detection_seconds = 0.0
    if options.detection:
        from anomaly.detection_estimate import estimate_detection

        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(images), min(len(images), DETECTION_BASE_IMAGES), replace=False))
        calibration = calibration.replace(detection=estimate_detection(
            detector, [images[i] for i in pick], calibration, random_state=seed, pixel_size_mm=options.pixel_size_mm,
            trained_on=detector.training_meta().get("synthetic")))
        detection_seconds = time.perf_counter() - start
        log.info("%s", calibration.detection["summary"])

    training = TrainingData(
        fingerprint=fingerprint_images(images),
        n_images=len(images),
        source=source,
        extra={"n_fit": len(images), "n_folds": int(folds.max()) + 1, "split_seed": seed,
               "accepted_input": AcceptedInput.of(as_image(image) for image in images).to_dict(),
               "options": options.to_dict()},
    )
    order = aligned[np.argsort(np.asarray(result.scores)[aligned], kind="stable")]
    examples = {int(i): (float(result.scores[int(i)]), result.maps[int(i)])
                for i in dict.fromkeys([order[0], order[len(order) // 2], order[-1]])}
    return TrainedModel(detector, calibration, training, fit_seconds, calibration_seconds, detection_seconds,
                        [int(f) for f in folds], examples)
