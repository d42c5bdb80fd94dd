"""The ``(3, 3)`` transforms of registration: motion families, pyramid-level rescaling, checks.

One convention holds for all of ``alignment``:

    A transform ``matrix`` is a ``(3, 3)`` float64 array that maps **template** pixel
    coordinates ``(x, y, 1)`` to **image** pixel coordinates: it is the pose of the part
    in the image. An image is brought into the template frame by inverse warping with it
    (``cv2.WARP_INVERSE_MAP``), and a map computed in the template frame is brought back
    to the image by forward warping with it.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Motion = Literal["translation", "rigid", "similarity", "affine", "homography"]

MOTIONS: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "homography")


def translation(dx: float, dy: float) -> np.ndarray:
    """``(3, 3)`` pure shift by ``(dx, dy)`` pixels."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def is_affine(matrix: np.ndarray) -> bool:
    """Whether a ``(3, 3)`` transform has ``(0, 0, 1)`` as its last row (no perspective)."""
    return bool(abs(matrix[2, 0]) < 1e-12 and abs(matrix[2, 1]) < 1e-12 and abs(matrix[2, 2] - 1.0) < 1e-12)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` float points ``(x, y)`` through a ``(3, 3)`` transform; ``(N, 2)`` out."""
    homog = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return homog[:, :2] / homog[:, 2:3]


def project(matrix: np.ndarray, motion: str) -> np.ndarray:
    """Nearest ``(3, 3)`` transform of the ``motion`` family (ECC and RANSAC fit a superset).

    ECC has no similarity model and RANSAC's partial affine fits a scale that a rigid
    motion does not have, so both are fitted wider and projected back here.
    """
    out = np.array(matrix, dtype=np.float64)
    if motion == "homography":
        return out / out[2, 2]
    out[2] = (0.0, 0.0, 1.0)
    if motion == "translation":
        out[:2, :2] = np.eye(2)
    elif motion in ("rigid", "similarity"):
        a = 0.5 * (out[0, 0] + out[1, 1])
        b = 0.5 * (out[1, 0] - out[0, 1])
        if motion == "rigid":
            norm = np.hypot(a, b) or 1.0
            a, b = a / norm, b / norm
        out[:2, :2] = [[a, -b], [b, a]]
    return out


def from_level(level_matrix: np.ndarray, t_scale: tuple[float, float], i_scale: tuple[float, float]) -> np.ndarray:
    """A transform found between two pyramid levels, at full resolution.

    Args:
        level_matrix: ``(3, 3)`` transform between the template's and the image's level.
        t_scale: ``(fx, fy)`` of the template level relative to the full template.
        i_scale: ``(fx, fy)`` of the image level relative to the full image.

    Returns:
        ``(3, 3)`` transform from full-resolution template to full-resolution image.
    """
    return _inverse_scale_matrix(*i_scale) @ level_matrix @ _scale_matrix(*t_scale)


def to_level(matrix: np.ndarray, t_scale: tuple[float, float], i_scale: tuple[float, float]) -> np.ndarray:
    """The inverse of :func:`from_level`: a full-resolution transform at two pyramid levels."""
    return _scale_matrix(*i_scale) @ matrix @ _inverse_scale_matrix(*t_scale)


def template_overlap(matrix: np.ndarray, template_shape: tuple[int, int], image_shape: tuple[int, ...]) -> float:
    """Fraction of the template's area whose pixels land inside the image.

    Args:
        matrix: ``(3, 3)`` transform from template to image coordinates.
        template_shape: ``(h, w)`` of the template.
        image_shape: ``(H, W, ...)`` of the image.

    Returns:
        Overlap in ``[0, 1]``; a part pushed half out of the field of view gives about 0.5.
    """
    h, w = template_shape[:2]
    H, W = image_shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    inside = apply_transform(matrix, corners)
    frame = np.array([[0, 0], [W, 0], [W, H], [0, H]], dtype=np.float32)
    polygon = inside.astype(np.float32)
    if cv2.contourArea(polygon, oriented=True) < 0:
        polygon = polygon[::-1].copy()
    area, _ = cv2.intersectConvexConvex(polygon, frame)
    total = abs(cv2.contourArea(polygon))
    return float(np.clip(area / total, 0.0, 1.0)) if total > 0 else 0.0


def corner_rms_error(estimated: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """RMS distance, in pixels, between the image corners mapped by two transforms.

    Args:
        estimated: ``(3, 3)`` estimated transform.
        truth: ``(3, 3)`` true transform.
        shape: ``(h, w)`` whose four corners are mapped.

    Returns:
        ``sqrt(mean(||estimated(c) - truth(c)||^2))`` over the four corners.
    """
    h, w = shape[:2]
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    diff = apply_transform(np.asarray(estimated, float), corners) - apply_transform(np.asarray(truth, float), corners)
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))


def _scale_matrix(fx: float, fy: float) -> np.ndarray:
    # Pixel centres: x_level = f * (x + 0.5) - 0.5, so a sub-pixel result survives rescaling.
    return np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])


def _inverse_scale_matrix(fx: float, fy: float) -> np.ndarray:
    return np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
