"""Local refinement: a smooth field of tile shifts on top of a global registration.

Scanned or stitched images are rarely related by one global transform: a line-scan
camera or a flexing board leaves residual shifts of a pixel or two that vary across the
field. :func:`refine_local` measures them tile by tile and resamples the image once.
"""

from __future__ import annotations

import cv2
import numpy as np

from alignment.pyramid import structure_tensor
from alignment.transforms import is_affine
from alignment.warp import as_gray, to_unit_float, warp_to_template
from anomaly.errors import InvalidParameterError


def refine_local(
    image: np.ndarray,
    template: np.ndarray,
    matrix: np.ndarray,
    *,
    grid: int = 4,
    max_shift: float = 3.0,
    gauss_size: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine a global registration by a smooth field of local shifts, then warp.

    The template is cut into ``grid x grid`` tiles; in each, ECC estimates a
    translation of the globally warped image; the component along which the tile has no
    structure (a tile of parallel traces cannot tell a shift along them) is dropped, a
    shift larger than ``max_shift`` is distrusted (set to 0), and the tile shifts are
    interpolated bilinearly into a displacement field. The image is then resampled once
    through the global transform composed with that field. Large tiles keep a defect of
    a few pixels from being "explained away" as a shift.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` image (uint8/uint16 or float in ``[0, 1]``).
        template: ``(h, w)`` gray float32 template in ``[0, 1]``.
        matrix: ``(3, 3)`` global transform from template to image coordinates.
        grid: Tiles per side (>= 1).
        max_shift: Largest local shift trusted, in pixels.
        gauss_size: Gaussian size ECC applies in each tile.

    Returns:
        ``(warped, field)``: the image in the template frame (float32 in ``[0, 1]``, NaN
        outside the image, shape like :func:`~alignment.warp.warp_to_template`'s) and the
        ``(h, w, 2)`` float32 displacement ``(dx, dy)`` added to template coordinates
        before ``matrix``.

    Raises:
        InvalidParameterError: ``grid`` < 1.
    """
    if int(grid) < 1:
        raise InvalidParameterError(f"grid must be >= 1, got {grid}")
    template = np.ascontiguousarray(template, dtype=np.float32)
    h, w = template.shape
    coarse = warp_to_template(as_gray(image) if image.ndim == 3 else image, matrix, (h, w))
    coarse = np.where(np.isfinite(coarse), coarse, template).astype(np.float32)
    shifts = np.zeros((int(grid), int(grid), 2), dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-4)
    th, tw = h / grid, w / grid
    for row in range(int(grid)):
        for col in range(int(grid)):
            y0, y1 = int(round(row * th)), int(round((row + 1) * th))
            x0, x1 = int(round(col * tw)), int(round((col + 1) * tw))
            t_tile, i_tile = template[y0:y1, x0:x1], coarse[y0:y1, x0:x1]
            if min(t_tile.shape) < 16 or float(t_tile.std()) < 1e-3:
                continue
            try:
                _, warp = cv2.findTransformECC(t_tile, i_tile, np.eye(2, 3, dtype=np.float32),
                                               cv2.MOTION_TRANSLATION, criteria, None, int(gauss_size))
            except cv2.error:
                continue  # a tile with nothing to lock on keeps the global transform
            shift = _observable(np.array([warp[0, 2], warp[1, 2]], dtype=np.float64), t_tile)
            if np.hypot(*shift) <= max_shift:
                shifts[row, col] = shift
    # Tile centres sit where cv2.resize puts the centres of a grid x grid image's pixels.
    field = cv2.resize(shifts, (w, h), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = xs + field[..., 0], ys + field[..., 1]
    if is_affine(matrix):
        map_x = (matrix[0, 0] * px + matrix[0, 1] * py + matrix[0, 2]).astype(np.float32)
        map_y = (matrix[1, 0] * px + matrix[1, 1] * py + matrix[1, 2]).astype(np.float32)
    else:
        z = matrix[2, 0] * px + matrix[2, 1] * py + matrix[2, 2]
        map_x = ((matrix[0, 0] * px + matrix[0, 1] * py + matrix[0, 2]) / z).astype(np.float32)
        map_y = ((matrix[1, 0] * px + matrix[1, 1] * py + matrix[1, 2]) / z).astype(np.float32)
    nan = (float("nan"),) * 4
    warped = cv2.remap(to_unit_float(image), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=nan)
    return warped, field


def _observable(shift: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """The part of a tile's ``(2,)`` shift that its structure can measure (aperture problem)."""
    values, vectors = np.linalg.eigh(structure_tensor(tile))
    if values[-1] <= 0:
        return np.zeros(2)
    out = np.zeros(2)
    for value, vector in zip(values, vectors.T):
        # A direction with under a tenth of the strongest gradient energy is not measured.
        if value >= 0.1 * values[-1]:
            out += float(shift @ vector) * vector
    return out
