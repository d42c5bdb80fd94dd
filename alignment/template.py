"""Golden template from good images, the goods aligned to it, and the alignment-quality threshold.

The template starts as one chosen good image (by default the one closest to the
pixel-wise median of all goods, so an odd one out is never the reference), and is then
refined by averaging the goods aligned to it, which removes that image's own noise and
small blemishes. The goods are finally aligned to the refined template; their ECC
qualities set the threshold below which a scored image counts as "part not found / could
not align" (see :func:`quality_threshold`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from alignment.pyramid import TemplatePyramid
from alignment.registration import Registration, RegistrationOptions, register
from alignment.warp import to_unit_float, warp_to_template
from anomaly.errors import AlignmentError, InvalidParameterError

# ECC quality of an exact copy is 1; real goods lose a little to noise and blur. The
# margin multiplies the worst good's shortfall, but that shortfall is taken as at least
# this much, so near-perfect synthetic goods do not make a missing component (which costs
# a few hundredths of correlation) fail alignment instead of being scored.
_MIN_SHORTFALL = 0.02
# The template is refined from at most this many goods, spread evenly over the training
# set: averaging more lowers its noise by little and costs a registration each.
_TEMPLATE_SAMPLE = 48


@dataclass(frozen=True)
class AlignedGoods:
    """The outcome of :func:`build_template`.

    Attributes:
        template: ``(h, w)`` float32 gray golden template in ``[0, 1]``.
        pyramid: Its registration pyramid (``None`` without registration).
        stack: ``(N, h, w, C)`` float32 good images in the template frame, in ``[0, 1]``,
            NaN where a good image did not cover the template.
        matrices: ``(N, 3, 3)`` transforms from template to each good image.
        qualities: ``(N,)`` ECC quality of each good against the final template (all 1.0
            without registration).
        reference_index: Index of the good image the template was started from.
    """

    template: np.ndarray
    pyramid: TemplatePyramid | None
    stack: np.ndarray
    matrices: np.ndarray
    qualities: np.ndarray
    reference_index: int


def choose_reference(grays: Sequence[np.ndarray], *, side: int = 64) -> int:
    """Index of the good image closest (mean squared difference) to the pixel-wise median.

    Args:
        grays: ``(H, W)`` gray float images of one size.
        side: Images are compared at this longest side (speed; the choice is coarse).

    Returns:
        An index into ``grays``.
    """
    h, w = grays[0].shape[:2]
    f = min(1.0, side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = np.stack([cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grays])
    median = np.median(small, axis=0)
    return int(np.argmin(((small - median) ** 2).mean(axis=(1, 2))))


def build_template(
    frames: Sequence[np.ndarray],
    grays: Sequence[np.ndarray],
    *,
    color: bool,
    options: RegistrationOptions | None,
    reference_index: int | None = None,
    refine_iterations: int = 1,
    names: Sequence[str] | None = None,
) -> AlignedGoods:
    """Build the golden template and align the goods to it.

    Args:
        frames: N good images as the model sees them, ``(H, W)`` or ``(H, W, 3)``
            uint8/uint16 (kept in their own dtype: a float copy of 200 large images
            would cost gigabytes), all of one size.
        grays: The same N images as ``(H, W)`` gray in their own dtype, for registration.
        color: Keep three channels in the aligned stack (only for colour frames).
        options: How to register; ``None`` means the images are taken as aligned.
        reference_index: Good image to start from; ``None`` chooses the one closest to
            the median (:func:`choose_reference`).
        refine_iterations: Rounds of "align to the template, average" before the final
            alignment (each over at most 48 goods spread evenly over ``frames``).
        names: How errors name each good (e.g. its file); default ``good image {index}``.

    Returns:
        :class:`AlignedGoods`.

    Raises:
        InvalidParameterError: ``reference_index`` out of range, negative refinement.
        AlignmentError: a good image could not be aligned (it says which).
    """
    n = len(frames)
    if reference_index is None:
        reference_index = choose_reference(grays)
    elif not 0 <= int(reference_index) < n:
        raise InvalidParameterError(f"reference_index must be in [0, {n - 1}], got {reference_index}")
    if int(refine_iterations) < 0:
        raise InvalidParameterError(f"refine_iterations must be >= 0, got {refine_iterations}")
    reference_index = int(reference_index)
    h, w = grays[0].shape
    channels = 3 if (color and frames[0].ndim == 3) else 1
    identity = np.eye(3)
    if options is None:
        stack = np.empty((n, h, w, channels), dtype=np.float32)
        gray_sum = np.zeros((h, w), dtype=np.float64)
        for index, (frame, gray) in enumerate(zip(frames, grays)):
            unit_gray = to_unit_float(gray)
            gray_sum += unit_gray
            stack[index] = (to_unit_float(frame) if channels == 3 else unit_gray).reshape(
                h, w, channels
            )
        template = (gray_sum / n).astype(np.float32)
        return AlignedGoods(template, None, stack, np.tile(identity, (n, 1, 1)), np.ones(n), reference_index)

    template = to_unit_float(grays[reference_index])
    sample = np.unique(np.linspace(0, n - 1, min(n, _TEMPLATE_SAMPLE)).round().astype(int))
    for _ in range(int(refine_iterations)):
        pyramid = options.prepare(template)
        total = np.zeros((h, w), dtype=np.float64)
        count = np.zeros((h, w), dtype=np.float64)
        for index in sample:
            warped = _register_good(options, grays[index], pyramid, _name(names, int(index))).warped
            ok = np.isfinite(warped)
            total[ok] += warped[ok]
            count += ok
        # Where no good covered a pixel the previous template stays.
        template = np.where(count > 0, total / np.maximum(count, 1), template).astype(np.float32)

    pyramid = options.prepare(template)
    stack = np.empty((n, h, w, channels), dtype=np.float32)
    matrices = np.empty((n, 3, 3))
    qualities = np.empty(n)
    for index, (frame, gray) in enumerate(zip(frames, grays)):
        reg = _register_good(options, gray, pyramid, _name(names, index))
        matrices[index] = reg.matrix
        qualities[index] = reg.quality
        if channels == 1:
            stack[index, :, :, 0] = reg.warped
        else:
            stack[index] = warp_to_template(frame, reg.matrix, (h, w))
    return AlignedGoods(template, pyramid, stack, matrices, qualities, reference_index)


def quality_threshold(qualities: np.ndarray, *, margin: float) -> float:
    """Alignment quality below which an image is "part not found / could not align".

    The worst good image's shortfall from a perfect correlation, ``1 - min(quality)``
    (taken as at least 0.02), times ``margin``, below 1. A margin of 10 with goods at
    0.98 gives 0.8: a missing or swapped component still aligns and is scored, an empty
    fixture or another product does not.

    Args:
        qualities: ``(N,)`` ECC qualities of the goods against the final template.
        margin: Multiplier of the worst shortfall (> 0).

    Returns:
        The threshold, in ``[0, 1)``.
    """
    if not margin > 0:
        raise InvalidParameterError(f"quality_margin must be > 0, got {margin}")
    shortfall = max(1.0 - float(np.min(qualities)), _MIN_SHORTFALL)
    return float(max(0.0, 1.0 - margin * shortfall))


def _name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None else f"good image {index}"


def _register_good(options: RegistrationOptions, gray: np.ndarray, pyramid: TemplatePyramid, name: str) -> Registration:
    try:
        return register(gray, pyramid, options=options)
    except AlignmentError as exc:
        raise AlignmentError(f"{name} could not be aligned to the template: {exc}") from None
