"""What a backbone needs, in one place for training, scoring and evaluation.

Decode (any accepted input) -> ROI and resize policy (:class:`~anomaly.geometry.Geometry`)
-> three float channels in ``[0, 1]`` -> the backbone's normalisation -> ``(N, 3, h, w)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from anomaly.errors import InvalidImageError
from anomaly.geometry import Geometry, Placement
from anomaly.imageio import ImageLike, as_image


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
    batch = np.empty((len(images), 3, h, w), dtype=np.float32)
    placements = []
    for i, source in enumerate(images):
        image = as_image(source)
        resized, placement = geometry.forward(image)
        if resized.ndim == 3 and resized.shape[2] == 1:
            resized = resized[:, :, 0]
        normalise_into(batch[i], resized, mean, std)
        placements.append(placement)
    return batch, placements


def normalise_into(out: np.ndarray, image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Write ``(image / full_scale - mean) / std`` channel-first into ``out``.

    Integer images go through one lookup table per channel (every possible level's
    normalised value), which writes the channel-first layout directly and costs a third
    of scaling, subtracting, dividing and transposing a float copy.

    Args:
        out: ``(3, h, w)`` float32 destination.
        image: ``(h, w)`` gray or ``(h, w, 3)`` RGB, uint8 or uint16.
        mean: ``(3,)`` normalisation mean (RGB).
        std: ``(3,)`` normalisation std (RGB).
    """
    if image.dtype not in (np.uint8, np.uint16):
        # The loader's canonical form (anomaly.imageio.canonical) is always one of the two.
        raise InvalidImageError(f"expected a uint8 or uint16 image, got {image.dtype}")
    lut = _normalisation_table(image.dtype == np.uint16, tuple(float(m) for m in mean), tuple(float(s) for s in std))
    for c in range(3):
        np.take(lut[c], image if image.ndim == 2 else image[:, :, c], out=out[c])


@functools.lru_cache(maxsize=8)
def _normalisation_table(sixteen_bit: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(3, levels)`` float32: the normalised value of every level of every channel."""
    levels = 65536 if sixteen_bit else 256
    values = np.arange(levels, dtype=np.float32) * np.float32(1.0 / (levels - 1))
    table = ((values[None, :] - np.asarray(mean, np.float32)[:, None])
             / np.asarray(std, np.float32)[:, None]).astype(np.float32)
    table.setflags(write=False)  # shared by every call through the cache
    return table
