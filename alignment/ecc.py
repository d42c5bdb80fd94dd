"""ECC refinement of a transform, coarse to fine on an image pyramid.

The enhanced correlation coefficient (ECC) is invariant to a global gain and offset of
the gray levels and converges to sub-pixel accuracy from a start within a few pixels of
the truth; the pyramid widens that basin, and only levels of at most ``max_side``
pixels are ever registered (the final warp is done at full resolution elsewhere).

References:
    G. D. Evangelidis, E. Z. Psarakis, "Parametric Image Alignment Using Enhanced
    Correlation Coefficient Maximization", IEEE TPAMI 30(10), 2008 (``cv2.findTransformECC``).
"""

from __future__ import annotations

import cv2
import numpy as np

from alignment.pyramid import ImageLevels, TemplatePyramid
from alignment.transforms import corner_rms_error, from_level, project, to_level
from anomaly.errors import AlignmentError

# ECC has no similarity model: it is fitted as affine and projected back (see project).
_ECC_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "rigid": cv2.MOTION_EUCLIDEAN,
    "similarity": cv2.MOTION_AFFINE,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}


def refine_ecc(
    pyramid: TemplatePyramid,
    levels: ImageLevels,
    starts: list[np.ndarray],
    *,
    motion: str,
    max_iterations: int,
    epsilon: float,
    gauss_size: int,
) -> tuple[np.ndarray, float]:
    """ECC coarse to fine from every start; the best correlation on the finest level wins.

    Starts that converge to the same transform (within half a pixel) are merged after
    each level, so the usual case costs one path; only a genuinely ambiguous part (a
    periodic board, a false coarse peak) pays for two.

    Args:
        pyramid: The template's pyramid.
        levels: The image's pyramid at the template's scales.
        starts: ``(3, 3)`` starting transforms from template to image (full resolution).
        motion: One of :data:`alignment.transforms.MOTIONS`.
        max_iterations: ECC iterations per level at most.
        epsilon: ECC stops when the correlation gains less than this per iteration.
        gauss_size: Odd size of the Gaussian ECC applies to both images (0 = none).

    Returns:
        ``(matrix, quality)``: the ``(3, 3)`` float64 transform from template to image and
        its ECC correlation coefficient on the finest level, in ``[-1, 1]``.

    Raises:
        AlignmentError: ECC converged from no start on the finest level, or to a
            transform that is not finite.
    """
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iterations), float(epsilon))
    n_levels = len(pyramid.levels)
    paths = [(project(start, motion), float("nan")) for start in starts]
    error = ""
    for index, (t_level, t_scale, (i_level, i_scale)) in enumerate(zip(pyramid.levels, pyramid.scales, levels)):
        moved = []
        for matrix, _ in paths:
            try:
                moved.append(_ecc_level(t_level, i_level, matrix, t_scale, i_scale, motion, criteria, gauss_size))
            except cv2.error as exc:
                error = str(exc).strip().splitlines()[-1]
        if not moved:
            if index < n_levels - 1:
                continue  # a coarse level can be too blurred to converge; the finer one decides
            raise AlignmentError(
                f"part not found / could not align: ECC ({motion}) did not converge at "
                f"{t_level.shape[1]}x{t_level.shape[0]} ({error})"
            )
        paths = []
        for matrix, cc in sorted(moved, key=lambda m: -m[1]):
            if all(corner_rms_error(matrix, kept, pyramid.shape) > 0.5 for kept, _ in paths):
                paths.append((matrix, cc))
    matrix, quality = max(paths, key=lambda m: m[1] if np.isfinite(m[1]) else -np.inf)
    if not np.all(np.isfinite(matrix)):
        raise AlignmentError("part not found / could not align: the estimated transform is not finite")
    return matrix, float(quality)


def _ecc_level(t_level, i_level, matrix, t_scale, i_scale, motion, criteria, gauss_size) -> tuple[np.ndarray, float]:
    """One ECC run on one pyramid level; the transform in and out at full resolution."""
    level_matrix = to_level(matrix, t_scale, i_scale)
    warp = level_matrix.astype(np.float32) if motion == "homography" else level_matrix[:2].astype(np.float32)
    cc, warp = cv2.findTransformECC(t_level, i_level, warp, _ECC_MOTION[motion], criteria, None, int(gauss_size))
    full = np.vstack([warp, [0.0, 0.0, 1.0]]) if warp.shape[0] == 2 else warp
    return project(from_level(full.astype(np.float64), t_scale, i_scale), motion), float(cc)
