"""Out-of-fold scoring: seeded folds, and every image scored by the model of its fold.

The parts :mod:`anomaly.crossfit` composes, and that a detector's own ``cross_fit_scores``
uses (PatchCore and PaDiM build their fold models from features computed once). A leaf
module: it knows the detector interface, not the registry, so a detector can use it
without an import loop.

A good image that its fold model cannot align to the template (the classical models'
:class:`~anomaly.errors.AlignmentError`) is a result, not a failure: it is what the line
would answer for that part (``ALIGNMENT_FAILED``). Its score is NaN, its map ``None``,
and ``extras["refused"]`` lists the refused indices (see :func:`score_or_refuse`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from anomaly.detectors.base import AnomalyResult, Detector, batch_or_each
from anomaly.errors import AlignmentError, InvalidParameterError
from anomaly.imageio import ImageLike
from anomaly.progress import progress


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
