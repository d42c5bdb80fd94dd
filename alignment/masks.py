"""Region-of-interest and ignore masks, given as rectangles in template pixel coordinates.

Rectangles rather than mask images keep a model's hyper-parameters plain JSON (they are
stored in the bundle manifest as given) and are what a user draws on a good image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anomaly.errors import InvalidParameterError

Rect = Sequence[int]  # (x, y, width, height)


def check_rect(rect: Rect, *, name: str) -> tuple[int, int, int, int]:
    """Validate one ``(x, y, width, height)`` rectangle.

    Raises:
        InvalidParameterError: not four integers, or a non-positive width or height.
    """
    try:
        values = tuple(int(v) for v in rect)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be (x, y, width, height) integers, got {rect!r}") from None
    if len(values) != 4 or values[2] < 1 or values[3] < 1:
        raise InvalidParameterError(f"{name} must be (x, y, width, height) with width, height >= 1, got {rect!r}")
    return values  # type: ignore[return-value]


def region_mask(
    shape: tuple[int, int], *, roi: Rect | None = None, ignore_regions: Sequence[Rect] = ()
) -> np.ndarray:
    """Pixels to judge: inside the ROI (the whole frame when ``None``) and outside every ignore rectangle.

    Args:
        shape: ``(h, w)`` of the template frame.
        roi: ``(x, y, width, height)`` to inspect, or ``None`` for everything.
        ignore_regions: Rectangles that vary legitimately (a printed date, a serial number).

    Returns:
        ``(h, w)`` bool mask, True where deviations count.

    Raises:
        InvalidParameterError: a malformed rectangle, or an ROI with no pixel inside the frame.
    """
    h, w = int(shape[0]), int(shape[1])
    if roi is None:
        mask = np.ones((h, w), dtype=bool)
    else:
        x, y, rw, rh = check_rect(roi, name="roi")
        mask = np.zeros((h, w), dtype=bool)
        mask[max(y, 0) : max(y + rh, 0), max(x, 0) : max(x + rw, 0)] = True
        if not mask.any():
            raise InvalidParameterError(f"roi {tuple(roi)} has no pixel inside the {w} x {h} template frame")
    for index, rect in enumerate(ignore_regions or ()):
        x, y, rw, rh = check_rect(rect, name=f"ignore_regions[{index}]")
        mask[max(y, 0) : max(y + rh, 0), max(x, 0) : max(x + rw, 0)] = False
    return mask
