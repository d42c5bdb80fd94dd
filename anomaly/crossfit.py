"""Cross-fitting: a score for every good image from a model that did not train on it.

Calibrating on scores of the images a model was fitted on biases them low (the model has
seen those very patches) and so puts thresholds too low. Cross-fitting splits the good
images into ``k`` seeded folds and scores each fold with a model fitted on the others; the
model that ships is then fitted on all images, so no image is spent on a hold-out.

A detector MAY implement the protocol::

    cross_fit_scores(images, n_folds, random_state, *, max_map_side=None) -> AnomalyResult

which fits the detector itself on all ``images`` (as ``fit`` would) and returns the
out-of-fold scores and maps, in input order, with the folds of :func:`assign_folds`.
PatchCore and PaDiM implement it by computing each image's features once (per-fold
memory banks from cached patch features; per-fold means and covariances from per-image
feature sums). Any other detector is refitted ``k`` times here, then once on all images.

Scores of a fold model see ``(k-1)/k`` of the images, so they are if anything slightly
higher than the final model's would be on new good parts: thresholds err on the side of
fewer false rejects, never more.

A good image that its fold model cannot align to the template (the classical models'
:class:`~anomaly.errors.AlignmentError`) is a result, not a failure: it is what the line
would answer for that part (``ALIGNMENT_FAILED``). Its score is NaN, its map ``None``,
and ``extras["refused"]`` lists the refused indices (see :func:`score_or_refuse`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from anomaly.detectors.base import AnomalyResult, Detector, batch_or_each
from anomaly.detectors.registry import create_detector
from anomaly.errors import AlignmentError, InvalidParameterError
from anomaly.imageio import ImageLike
from anomaly.progress import progress

log = logging.getLogger(__name__)


def assign_folds(n: int, n_folds: int, random_state: int) -> np.ndarray:
    """Seeded fold of each of ``n`` images, ``(n,)`` int64 in ``[0, min(n_folds, n))``, sizes within one."""
    if n < 2:
        raise InvalidParameterError(f"cross-fitting needs at least 2 images, got {n}")
    if int(n_folds) < 2:
        raise InvalidParameterError(f"n_folds must be >= 2, got {n_folds}")
    k = min(int(n_folds), n)
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(random_state).permutation(n)] = np.arange(n) % k
    return folds


def shrink_map(amap: np.ndarray, max_side: int | None) -> np.ndarray:
    """A map with its long side brought to at most ``max_side`` by nearest-neighbour sampling.

    Nearest sampling keeps actual map values (so maxima and quantiles stay map values);
    the maps being smooth, little of their maximum is lost.
    """
    if max_side is None or max(amap.shape) <= max_side:
        return amap
    f = max_side / max(amap.shape)
    size = (max(1, int(round(amap.shape[1] * f))), max(1, int(round(amap.shape[0] * f))))
    return cv2.resize(amap, size, interpolation=cv2.INTER_NEAREST)


def score_or_refuse(detector: Detector, images: Sequence[ImageLike]) -> tuple[list[float | None],
                                                                            list[np.ndarray | None]]:
    """Score a batch; where the detector cannot align an image, ``None`` for its score and map.

    The batch is scored in one call, and one by one only if that raises
    :class:`AlignmentError` (:func:`~anomaly.detectors.base.batch_or_each`).

    Returns:
        ``(scores, maps)``, one per image, ``None`` for each image refused.
    """
    def score(batch: list[ImageLike]) -> list[tuple[float, np.ndarray]]:
        result = detector.score(batch)
        return [(float(s), m) for s, m in zip(result.scores, result.maps)]

    results = batch_or_each(score, images)
    return ([None if isinstance(r, AlignmentError) else r[0] for r in results],
            [None if isinstance(r, AlignmentError) else r[1] for r in results])


def score_out_of_fold(
    images: Sequence[ImageLike],
    folds: np.ndarray,
    fold_model: Callable[[int, np.ndarray], Detector],
    max_map_side: int | None,
    desc: str = "out-of-fold scores",
) -> AnomalyResult:
    """Score every image with the model of its fold.

    Args:
        images: The images, in the order of ``folds``.
        folds: ``(n,)`` fold of each image (:func:`assign_folds`).
        fold_model: ``fold_model(j, inside)`` returns a fitted detector that did not see
            the images ``inside`` (the indices of fold ``j``).
        max_map_side: Shrink the maps to this long side (:func:`shrink_map`).
        desc: Progress-bar label.

    Returns:
        Out-of-fold scores ``(n,)`` and maps, in input order; an image its fold model
        could not align has a NaN score and no map, and is listed (indices, increasing)
        in ``extras["refused"]``.
    """
    scores = np.zeros(len(images))
    maps: list[np.ndarray | None] = [None] * len(images)
    refused: list[int] = []
    for j in progress(range(int(folds.max()) + 1), desc=desc):
        inside = np.flatnonzero(folds == j)
        fold_scores, fold_maps = score_or_refuse(fold_model(j, inside), [images[i] for i in inside])
        for i, s, m in zip(inside, fold_scores, fold_maps):
            if s is None:
                scores[i] = np.nan
                refused.append(int(i))
            else:
                scores[i], maps[i] = s, shrink_map(m, max_map_side)
    return AnomalyResult(scores=scores, maps=maps, extras={"refused": sorted(refused)})


def cross_fit(
    detector_name: str,
    images: Sequence[ImageLike],
    *,
    params: dict[str, Any] | None = None,
    n_folds: int = 5,
    random_state: int = 0,
    max_map_side: int | None = 256,
) -> tuple[Detector, AnomalyResult, np.ndarray]:
    """Fit a detector on all images and score each image out of fold.

    Args:
        detector_name: Registry name.
        images: Good images (arrays, paths or bytes).
        params: Detector hyper-parameters.
        n_folds: Number of folds (at most the number of images).
        random_state: Seed of the fold split.
        max_map_side: Returned maps are shrunk to this long side (memory); ``None`` keeps
            them at the images' resolution.

    Returns:
        ``(detector fitted on all images, out-of-fold AnomalyResult, (n,) folds)``.
    """
    images = list(images)
    folds = assign_folds(len(images), n_folds, random_state)
    detector = create_detector(detector_name, params)
    protocol = getattr(detector, "cross_fit_scores", None)
    if callable(protocol):
        result = protocol(images, n_folds=n_folds, random_state=random_state, max_map_side=max_map_side)
        return detector, result, folds
    log.info("%s has no cross_fit_scores: refitting it %d times", detector_name, int(folds.max()) + 1)
    result = score_out_of_fold(
        images, folds,
        lambda j, inside: create_detector(detector_name, params).fit(
            [images[i] for i in np.flatnonzero(folds != j)]),
        max_map_side)
    detector.fit(images)
    return detector, result, folds
