"""Anomaly-map post-processing shared by the feature-statistics models (numpy/OpenCV).

A feature-grid map is upsampled to the model input, Gaussian-smoothed there (PatchCore
and PaDiM both use sigma = 4 px at the model's resolution), and only then brought back
to the original image's coordinates, so the smoothing cost does not grow with the
original image size.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from anomaly.geometry import Geometry, Placement


def model_resolution_map(grid_map: np.ndarray, size: tuple[int, int], sigma: float, stride: int,
                         origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Upsample a grid map to the model input and smooth it.

    Cell ``(i, j)`` of the grid is centred on model pixel ``(stride * i + origin[0], stride
    * j + origin[1])`` (see :mod:`anomaly.features.patches`), so the upsampling is the
    affine map ``u = (x - origin) / stride`` rather than a plain resize, which would shift
    everything by ``(stride - 1) / 2`` pixels.

    Both steps are separable and linear (bilinear upsampling with a replicated border, a
    Gaussian with a reflected one), so the result is ``K_rows @ grid_map @ K_cols.T`` with
    two small matrices measured once from :func:`model_resolution_map_reference`, a
    fraction of the cost of the warp and the 33-tap blur.

    Args:
        grid_map: ``(h, w)`` float map on the feature grid.
        size: Model input ``(height, width)``.
        sigma: Gaussian sigma in model pixels (0 = no smoothing).
        stride: Grid stride in model pixels.
        origin: ``(dy, dx)`` model pixel of cell ``(0, 0)``.

    Returns:
        ``(height, width)`` float32 map.
    """
    grid_map = np.ascontiguousarray(grid_map, dtype=np.float32)
    rows = _axis_operator(int(grid_map.shape[0]), int(size[0]), float(sigma), int(stride), float(origin[0]))
    cols = _axis_operator(int(grid_map.shape[1]), int(size[1]), float(sigma), int(stride), float(origin[1]))
    # torch, not numpy: numpy's BLAS threads would then compete with torch's for the cores
    # and slow the next backbone forward.
    with torch.inference_mode():
        return (rows @ torch.from_numpy(grid_map) @ cols.T).numpy()


@functools.lru_cache(maxsize=32)
def _axis_operator(cells: int, length: int, sigma: float, stride: int, origin: float = 0.0) -> torch.Tensor:
    """``(length, cells)`` float32: :func:`model_resolution_map_reference` along one axis."""
    impulses = np.eye(cells, dtype=np.float32)
    columns = [model_resolution_map_reference(impulses[:, i : i + 1], (length, 1), sigma, stride, (origin, 0.0))[:, 0]
               for i in range(cells)]
    return torch.from_numpy(np.stack(columns, axis=1).astype(np.float32))


def model_resolution_map_reference(grid_map: np.ndarray, size: tuple[int, int], sigma: float,
                                   stride: int, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """:func:`model_resolution_map` spelled out with OpenCV's warp and blur (its definition).

    Returns:
        ``(height, width)`` float32 map.
    """
    # Destination pixel (x, y) reads grid position ((x - origin_x) / stride, (y - origin_y) / stride).
    inverse = np.array([[1.0 / stride, 0.0, -origin[1] / stride], [0.0, 1.0 / stride, -origin[0] / stride]],
                       dtype=np.float64)
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
