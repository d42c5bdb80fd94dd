"""Exposure checks: a blank, uniform or saturated image is refused before it is scored.

A lens cap, a dropped frame or a blown-out exposure would otherwise be "aligned" to
something and given a score that means nothing. The limits are learned from the good
images, because what counts as too bright depends on the product (a binarised PCB scan
is three quarters pure white).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from anomaly.errors import InvalidImageError

# Pixel levels counted as clipped, as fractions of full scale.
_DARK_LEVEL = 0.01
_BRIGHT_LEVEL = 0.99
# How far beyond the good images an image may go before it is refused.
_CONTRAST_FACTOR = 0.2
_CLIP_MARGIN = 0.25


@dataclass(frozen=True)
class ExposureStats:
    """Exposure of one gray image, all as fractions of full scale.

    Attributes:
        mean: Mean level.
        std: Standard deviation of the levels (contrast).
        dark: Fraction of pixels at or below 1 % of full scale.
        bright: Fraction of pixels at or above 99 % of full scale.
    """

    mean: float
    std: float
    dark: float
    bright: float


@dataclass(frozen=True)
class ExposureLimits:
    """What an image may look like before it is refused.

    Attributes:
        min_std: Least contrast accepted.
        max_dark: Largest fraction of black pixels accepted.
        max_bright: Largest fraction of saturated pixels accepted.
        good_min_std: Least contrast among the good images (for messages).
        good_max_dark: Most black pixels among the good images.
        good_max_bright: Most saturated pixels among the good images.
    """

    min_std: float
    max_dark: float
    max_bright: float
    good_min_std: float
    good_max_dark: float
    good_max_bright: float

    @classmethod
    def learn(cls, grays: Sequence[np.ndarray]) -> "ExposureLimits":
        """Limits from good gray images (``(H, W)`` uint8/uint16/float in ``[0, 1]``)."""
        stats = [exposure_stats(g) for g in grays]
        good_min_std = min(s.std for s in stats)
        good_max_dark = max(s.dark for s in stats)
        good_max_bright = max(s.bright for s in stats)
        return cls(
            min_std=max(_CONTRAST_FACTOR * good_min_std, 1.0 / 1024.0),
            # Capped below 100 % unless a good image itself was (nearly) all clipped.
            max_dark=max(min(good_max_dark + _CLIP_MARGIN, 0.995), good_max_dark),
            max_bright=max(min(good_max_bright + _CLIP_MARGIN, 0.995), good_max_bright),
            good_min_std=good_min_std,
            good_max_dark=good_max_dark,
            good_max_bright=good_max_bright,
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> "ExposureLimits":
        return cls(**{k: float(values[k]) for k in cls.__dataclass_fields__})


def exposure_stats(gray: np.ndarray) -> ExposureStats:
    """Exposure of a ``(H, W)`` gray image (uint8, uint16, or float in ``[0, 1]``)."""
    unit = 65535.0 if gray.dtype == np.uint16 else 255.0 if gray.dtype == np.uint8 else 1.0
    # A regular subsample of about 64k pixels estimates these fractions to well under 1 %.
    step = max(1, int(np.sqrt(gray.size / 65536.0)))
    data = np.ascontiguousarray(gray[::step, ::step])
    data = data if data.dtype != np.float64 else data.astype(np.float32)
    mean, std = cv2.meanStdDev(data)
    n = data.size
    dark = np.count_nonzero(data <= _DARK_LEVEL * unit) / n
    bright = np.count_nonzero(data >= _BRIGHT_LEVEL * unit) / n
    return ExposureStats(float(mean[0, 0]) / unit, float(std[0, 0]) / unit, float(dark), float(bright))


def check_exposure(gray: np.ndarray, limits: ExposureLimits) -> ExposureStats:
    """Refuse a blank, uniform, black or saturated image.

    Args:
        gray: ``(H, W)`` gray image.
        limits: Learned from the good images.

    Returns:
        The image's :class:`ExposureStats` when it passes.

    Raises:
        InvalidImageError: saying which limit was crossed, by how much, and what good
            images showed.
    """
    stats = exposure_stats(gray)
    if stats.std < limits.min_std:
        kind = "saturated (uniformly bright)" if stats.mean > 0.9 else "blank (uniformly dark)" if stats.mean < 0.1 else "uniform"
        raise InvalidImageError(
            f"image is {kind}: contrast (std) {stats.std:.4f} of full scale at mean level {stats.mean:.2f}; "
            f"good images had at least {limits.good_min_std:.4f}, the limit is {limits.min_std:.4f}"
        )
    if stats.bright > limits.max_bright:
        raise InvalidImageError(
            f"image is saturated: {stats.bright:.1%} of pixels at full scale; good images had at most "
            f"{limits.good_max_bright:.1%}, the limit is {limits.max_bright:.1%}"
        )
    if stats.dark > limits.max_dark:
        raise InvalidImageError(
            f"image is blank or underexposed: {stats.dark:.1%} of pixels black; good images had at most "
            f"{limits.good_max_dark:.1%}, the limit is {limits.max_dark:.1%}"
        )
    return stats
