"""Anomaly-map post-processing shared by the feature-statistics models (numpy/OpenCV).

A feature-grid map is upsampled to the model input, Gaussian-smoothed there (PatchCore
and PaDiM both use sigma = 4 px at the model's resolution), and only then brought back
to the original image's coordinates, so the smoothing cost does not grow with the
original image size.
"""

from __future__ import annotations

import cv2
import numpy as np

from anomaly.geometry import Geometry, Placement


def model_resolution_map(grid_map: np.ndarray, size: tuple[int, int], sigma: float, stride: int) -> np.ndarray:
    """Upsample a grid map to the model input and smooth it.

    Cell ``(i, j)`` of the grid is centred on model pixel ``(stride * i, stride * j)`` (see
    :mod:`anomaly.features.patches`), so the upsampling is the affine map ``u = x / stride``
    rather than a plain resize, which would shift everything by ``(stride - 1) / 2`` pixels.

    Args:
        grid_map: ``(h, w)`` float map on the feature grid.
        size: Model input ``(height, width)``.
        sigma: Gaussian sigma in model pixels (0 = no smoothing).
        stride: Grid stride in model pixels.

    Returns:
        ``(height, width)`` float32 map.
    """
    inverse = np.array([[1.0 / stride, 0.0, 0.0], [0.0, 1.0 / stride, 0.0]], dtype=np.float64)
    out = cv2.warpAffine(np.asarray(grid_map, dtype=np.float32), inverse, (size[1], size[0]),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    if sigma > 0:
        ksize = 2 * int(round(4 * sigma)) + 1
        out = cv2.GaussianBlur(out, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return out


def to_image_map(model_map: np.ndarray, geometry: Geometry, placement: Placement) -> np.ndarray:
    """Bring a model-resolution map back to the original image, ``(H, W)`` float32.

    Pixels outside the region of interest get the map's minimum (they were not inspected).
    """
    fill = float(model_map.min()) if model_map.size else 0.0
    return geometry.backward(model_map, placement, fill=fill)
