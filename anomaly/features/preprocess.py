"""What a backbone needs, in one place for training, scoring and evaluation.

Decode (any accepted input) -> ROI and resize policy (:class:`~anomaly.geometry.Geometry`)
-> three float channels in ``[0, 1]`` -> the backbone's normalisation -> ``(N, 3, h, w)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anomaly.geometry import Geometry, Placement
from anomaly.imageio import ImageLike, as_image, to_float_rgb


def prepare_batch(
    images: Sequence[ImageLike],
    geometry: Geometry,
    mean: np.ndarray,
    std: np.ndarray,
) -> tuple[np.ndarray, list[Placement]]:
    """Decode and shape a batch of images for a backbone.

    Args:
        images: Arrays, paths or encoded bytes.
        geometry: ROI and resize policy.
        mean: ``(3,)`` normalisation mean (RGB).
        std: ``(3,)`` normalisation std (RGB).

    Returns:
        ``(N, 3, h, w)`` float32 batch and one :class:`Placement` per image (to bring
        maps back to each image's own coordinates).
    """
    h, w = geometry.size
    batch = np.empty((len(images), h, w, 3), dtype=np.float32)
    placements = []
    for i, source in enumerate(images):
        image = as_image(source)
        resized, placement = geometry.forward(image)
        batch[i] = to_float_rgb(resized[:, :, 0] if resized.ndim == 3 and resized.shape[2] == 1 else resized)
        placements.append(placement)
    batch -= np.asarray(mean, dtype=np.float32)
    batch /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), placements
