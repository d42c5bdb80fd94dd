"""Cross-fitting: a score for every good image from a model that did not train on it.

Calibrating on scores of the images a model was fitted on biases them low (the model has
seen those very patches) and so puts thresholds too low. Cross-fitting splits the good
images into ``k`` seeded folds and scores each fold with a model fitted on the others; the
model that ships is then fitted on all images, so no image is spent on a hold-out.

A detector MAY implement the protocol::

    cross_fit_scores(images, n_folds, random_state, *, max_map_side=None) -> AnomalyResult

which fits the detector itself on all ``images`` (as ``fit`` would) and returns the
out-of-fold scores and maps, in input order, with the folds of
:func:`anomaly.folds.assign_folds`.
PatchCore and PaDiM implement it by computing each image's features once (per-fold
memory banks from cached patch features; per-fold means and covariances from per-image
feature sums). Any other detector is refitted ``k`` times here, then once on all images.

Scores of a fold model see ``(k-1)/k`` of the images, so they are if anything slightly
higher than the final model's would be on new good parts: thresholds err on the side of
fewer false rejects, never more. The folds and the out-of-fold scoring (with the images a
fold model cannot align) are :mod:`anomaly.folds`; this module only composes them with the
registry.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from anomaly.detectors.base import AnomalyResult, Detector
from anomaly.detectors.registry import create_detector
from anomaly.folds import assign_folds, score_out_of_fold
from anomaly.imageio import ImageLike

log = logging.getLogger(__name__)


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
