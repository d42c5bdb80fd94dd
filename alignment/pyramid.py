"""Image pyramids for registration, and the gradient structure tensor that judges a template.

A template is prepared once (:func:`prepare_template`) and registered against many
images; each image is downscaled by the same factors (:func:`image_levels`), so that
level ``k`` of both covers the same part of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from alignment.warp import as_gray, to_unit_float
from anomaly.errors import InvalidParameterError

ImageLevels = list[tuple[np.ndarray, tuple[float, float]]]
"""An image's pyramid, coarsest first: ``(level, (fx, fy))`` with the level an ``(h_k, w_k)``
float32 gray image in ``[0, 1]`` and ``(fx, fy)`` its scale relative to full resolution."""

_MIN_LEVEL_SIDE = 24  # ECC on fewer pixels than this is too noisy to be worth a level


@dataclass
class TemplatePyramid:
    """A template prepared once for many registrations.

    Attributes:
        shape: ``(h, w)`` of the full-resolution template.
        levels: Gray float32 images, coarsest first, each at least ``_MIN_LEVEL_SIDE``.
        scales: ``(fx, fy)`` of each level relative to full resolution.
        structure: Gradient energy of the finest level along its weaker direction over
            that along its stronger one (0 = stripes or blank, 1 = isotropic).
        keypoints: Keypoints of the finest level per feature method, cached by the
            coarse stage (:mod:`alignment.coarse`) on first use.
    """

    shape: tuple[int, int]
    levels: list[np.ndarray]
    scales: list[tuple[float, float]]
    structure: float = 1.0
    keypoints: dict[str, tuple] = field(default_factory=dict, repr=False)


def prepare_template(template: np.ndarray, *, levels: int = 2, max_side: int = 256) -> TemplatePyramid:
    """Build the registration pyramid of a template.

    Args:
        template: ``(h, w)`` or ``(h, w, 3)`` image, uint8/uint16 or float in ``[0, 1]``.
        levels: Number of pyramid levels (each half the size of the next finer one).
        max_side: Longest side of the finest level; the full image is never registered
            at more than this resolution (the final warp is still at full resolution).

    Returns:
        A :class:`TemplatePyramid`; its levels never share memory with ``template``.

    Raises:
        InvalidParameterError: ``levels`` < 1 or ``max_side`` < 16.
        InvalidImageError: the template is not a 2-D gray or RGB image.
    """
    if int(levels) < 1:
        raise InvalidParameterError(f"levels must be >= 1, got {levels}")
    if int(max_side) < 16:
        raise InvalidParameterError(f"max_side must be >= 16, got {max_side}")
    gray = to_unit_float(as_gray(template))
    h, w = gray.shape
    scale0 = min(1.0, float(max_side) / max(h, w))
    images, scales = [], []
    source = gray
    for level in range(int(levels)):
        f = scale0 / (2**level)
        lw, lh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        if level > 0 and min(lw, lh) < _MIN_LEVEL_SIDE:
            break
        # Each level from the finer one, exactly as image_levels does for the image.
        source = source if (lw, lh) == source.shape[::-1] else cv2.resize(source, (lw, lh), interpolation=cv2.INTER_AREA)
        images.append(np.array(source, dtype=np.float32))
        scales.append((lw / w, lh / h))
    finest = cv2.GaussianBlur(images[0], (5, 5), 0)
    weak, strong = np.linalg.eigvalsh(structure_tensor(finest))
    structure = float(max(weak, 0.0) / strong) if strong > 0 else 0.0
    return TemplatePyramid(shape=(h, w), levels=images[::-1], scales=scales[::-1], structure=structure)


def image_levels(gray: np.ndarray, pyramid: TemplatePyramid) -> ImageLevels:
    """The image downscaled by the template's level factors, coarsest first.

    Args:
        gray: ``(H, W)`` gray image, uint8/uint16 or float32 in ``[0, 1]`` (see
            :func:`alignment.warp.as_gray`); its size may differ from the template's.
        pyramid: The template's pyramid, whose ``scales`` are applied to ``gray``.

    Returns:
        One ``(level, (fx, fy))`` per template level (see :data:`ImageLevels`).
    """
    H, W = gray.shape
    out = []
    finest = None
    for fx, _ in pyramid.scales[::-1]:  # finest first, each level from the one above it
        lw, lh = max(1, int(round(W * fx))), max(1, int(round(H * fx)))
        source = gray if finest is None else finest
        small = source if (lw, lh) == source.shape[::-1] else cv2.resize(source, (lw, lh), interpolation=cv2.INTER_AREA)
        finest = small
        out.append((to_unit_float(small), (lw / W, lh / H)))
    return out[::-1]


def structure_tensor(image: np.ndarray) -> np.ndarray:
    """Gradient structure tensor of a whole image, summed over its pixels.

    Its eigenvectors are the directions in which the image's content can be located and
    its eigenvalues the gradient energy along each: a template of parallel stripes has
    one eigenvalue near 0, and a shift along the stripes cannot be measured (the
    aperture problem).

    Args:
        image: ``(h, w)`` float32 gray image.

    Returns:
        ``(2, 2)`` float64 ``[[sum gx^2, sum gx gy], [sum gx gy, sum gy^2]]`` of its
        3 x 3 Sobel gradients.
    """
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    gxy = float((gx * gy).sum())
    return np.array([[float((gx * gx).sum()), gxy], [gxy, float((gy * gy).sum())]])
