"""What a backbone needs, in one place for training, scoring and evaluation.

Decode (any accepted input) -> ROI and resize policy (:class:`~anomaly.geometry.Geometry`)
-> three float channels in ``[0, 1]`` -> the backbone's normalisation -> ``(N, 3, h, w)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import cv2
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
        ``(N, 3, h, w)`` float32 batch, stored channels-last (a transposed view of an
        ``(N, h, w, 3)`` array, the layout the backbone runs in: ``torch.from_numpy`` of it
        is channels-last contiguous), and one :class:`Placement` per image (to bring maps
        back to each image's own coordinates).
    """
    h, w = geometry.size
    batch = np.empty((len(images), h, w, 3), dtype=np.float32).transpose(0, 3, 1, 2)
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
    """Write ``(image / full_scale - mean) / std`` into ``out``, seen channel-first.

    Integer images go through a lookup table (every possible level's normalised value, per
    channel), which costs a third of scaling, subtracting, dividing and transposing a float
    copy. Into a channels-last ``out`` (as :func:`prepare_batch` makes), 8-bit images take
    one ``cv2.LUT`` call over the interleaved pixels, cheaper than three per-channel
    lookups and a reorder of their planes for the backbone.

    Args:
        out: ``(3, h, w)`` float32 destination, channel-first or a transposed view of an
            ``(h, w, 3)`` array.
        image: ``(h, w)`` gray or ``(h, w, 3)`` RGB, uint8 or uint16.
        mean: ``(3,)`` normalisation mean (RGB).
        std: ``(3,)`` normalisation std (RGB).
    """
    if image.dtype not in (np.uint8, np.uint16):
        # The loader's canonical form (anomaly.imageio.canonical) is always one of the two.
        raise InvalidImageError(f"expected a uint8 or uint16 image, got {image.dtype}")
    key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    interleaved = out.transpose(1, 2, 0)
    if image.dtype == np.uint8 and interleaved.flags.c_contiguous:
        rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        cv2.LUT(rgb, _interleaved_table(*key), dst=interleaved)
        return
    lut = _normalisation_table(image.dtype == np.uint16, *key)
    for c in range(3):
        np.take(lut[c], image if image.ndim == 2 else image[:, :, c], out=out[c])


@functools.lru_cache(maxsize=8)
def _interleaved_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(256, 1, 3)`` float32: :func:`_normalisation_table` of 8-bit levels as ``cv2.LUT`` wants it."""
    table = np.ascontiguousarray(_normalisation_table(False, mean, std).T.reshape(256, 1, 3))
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=8)
def _normalisation_table(sixteen_bit: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(3, levels)`` float32: the normalised value of every level of every channel."""
    levels = 65536 if sixteen_bit else 256
    values = np.arange(levels, dtype=np.float32) * np.float32(1.0 / (levels - 1))
    table = ((values[None, :] - np.asarray(mean, np.float32)[:, None])
             / np.asarray(std, np.float32)[:, None]).astype(np.float32)
    table.setflags(write=False)  # shared by every call through the cache
    return table
