"""Resampling between the image and the template frame, and the pixel values it works on.

Images come as ``(H, W)`` gray or ``(H, W, 3)`` RGB in uint8, uint16 or float (taken as
already scaled to ``[0, 1]``); registration works on gray float32 in ``[0, 1]``. The
transforms follow the convention of :mod:`alignment.transforms` (template -> image).
"""

from __future__ import annotations

import cv2
import numpy as np

from alignment.transforms import apply_transform, is_affine
from anomaly.errors import InvalidImageError

# A NaN border propagates through interpolation, so pixels partly outside the image are
# marked unknown too instead of being blended with an invented value.
_NAN_BORDER = (float("nan"),) * 4


def as_gray(image: np.ndarray) -> np.ndarray:
    """Gray version of an ``(H, W)`` or ``(H, W, 3)`` RGB image, ``(H, W)`` in its own dtype.

    float64 comes back as float32, the dtype OpenCV registers in.

    Raises:
        InvalidImageError: another shape, or a dtype other than uint8, uint16 or float.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        shape = getattr(image, "shape", None)
        raise InvalidImageError(f"expected an (H, W) or (H, W, 3) image array, got shape {shape}")
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InvalidImageError(f"expected dtype uint8, uint16 or float, got {image.dtype}")
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    if image.ndim == 3:
        # Same weights as anomaly.imageio.to_gray_float (ITU-R 601), at OpenCV speed.
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return image


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 scaled to float32 in ``[0, 1]``; floats are taken as already scaled.

    A C-contiguous float32 array comes back as itself, not a copy.
    """
    if image.dtype in (np.float32, np.float64):
        return np.ascontiguousarray(image, dtype=np.float32)
    full_scale = 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else 1.0
    return image.astype(np.float32) * np.float32(1.0 / full_scale)


def warp_to_template(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample an image into the template frame.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 or float image.
        matrix: ``(3, 3)`` transform from template to image coordinates.
        shape: ``(h, w)`` of the template.

    Returns:
        ``(h, w)`` or ``(h, w, 3)`` float32 in ``[0, 1]`` (floats are taken as already
        scaled), NaN where the template pixel falls outside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    return _warp(to_unit_float(image), matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, fill=_NAN_BORDER)


def warp_native(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample an image into the template frame in its own dtype (the fast path).

    Warping uint8 moves a quarter of the bytes of float32, and no NaN has to be carried
    through later arithmetic: the template pixels that come from outside the image are
    given as a separate mask, drawn as a polygon rather than warped.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16/float32 image.
        matrix: ``(3, 3)`` transform from template to image coordinates.
        shape: ``(h, w)`` of the template.

    Returns:
        ``(warped, inside)``: the warped image (same dtype, 0 outside) and a ``(h, w)``
        uint8 mask, 1 where the template pixel lies inside the image (a one-pixel margin
        kept for interpolation), or ``None`` when all of them do.
    """
    h, w = int(shape[0]), int(shape[1])
    H, W = image.shape[:2]
    warped = _warp(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, fill=0)
    corners = apply_transform(matrix, np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64))
    # The template's image is convex, so it lies inside when its corners do.
    if corners.min() >= 1 and corners[:, 0].max() <= W - 2 and corners[:, 1].max() <= H - 2:
        return warped, None
    frame = np.array([[1, 1], [W - 2, 1], [W - 2, H - 2], [1, H - 2]], dtype=np.float64)
    polygon = apply_transform(np.linalg.inv(matrix), frame)
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return warped, inside


def warp_to_image(values: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], *, fill: float = 0.0) -> np.ndarray:
    """Bring a map from the template frame back to the image (forward warp).

    Args:
        values: ``(h, w)`` float32 map in the template frame.
        matrix: ``(3, 3)`` transform from template to image coordinates.
        shape: ``(H, W)`` of the image.
        fill: Value of image pixels that the template does not cover.

    Returns:
        ``(H, W)`` float32 map in image coordinates.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    H, W = int(shape[0]), int(shape[1])
    if values.shape == (H, W) and np.allclose(matrix, np.eye(3), atol=1e-9):
        return values.copy()
    return _warp(values, matrix, (W, H), flags=cv2.INTER_LINEAR, fill=fill)


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *, flags: int, fill) -> np.ndarray:
    """``cv2.warpAffine`` when the transform is affine (faster), else ``cv2.warpPerspective``."""
    if is_affine(matrix):
        return cv2.warpAffine(image, matrix[:2].astype(np.float64), size, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return cv2.warpPerspective(image, matrix.astype(np.float64), size, flags=flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
