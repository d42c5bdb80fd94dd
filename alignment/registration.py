"""Registration of an image to a golden template: coarse estimate, then ECC on a pyramid.

Every function here is plain (no state) with keyword-only options and a fixed return
type, in the manner of ``skimage.registration``. The one convention used throughout:

    A transform ``matrix`` is a ``(3, 3)`` float64 array that maps **template** pixel
    coordinates ``(x, y, 1)`` to **image** pixel coordinates: it is the pose of the part
    in the image. An image is brought into the template frame by inverse warping with it
    (``cv2.WARP_INVERSE_MAP``), and a map computed in the template frame is brought back
    to the image by forward warping with it.

Coarse stage (large motions): phase correlation for a shift, Fourier-Mellin (phase
correlation of log-polar magnitude spectra) for rotation and scale as well, or ORB/AKAZE
feature matching with RANSAC. Fine stage: the enhanced correlation coefficient (ECC)
maximisation of Evangelidis & Psarakis, run coarse to fine on an image pyramid whose
finest level has at most ``max_side`` pixels per side; only the final warp is done at
full resolution, which keeps the alignment of a 1024 x 1024 image to about ten milliseconds.

References:
    G. D. Evangelidis, E. Z. Psarakis, "Parametric Image Alignment Using Enhanced
    Correlation Coefficient Maximization", IEEE TPAMI 30(10), 2008 (``cv2.findTransformECC``).
    B. S. Reddy, B. N. Chatterji, "An FFT-based technique for translation, rotation, and
    scale-invariant image registration", IEEE TIP 5(8), 1996 (Fourier-Mellin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError

Motion = Literal["translation", "rigid", "similarity", "affine", "homography"]
Coarse = Literal["none", "phase", "log_polar", "orb", "akaze"]

MOTIONS: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "homography")
COARSE_METHODS: tuple[str, ...] = ("none", "phase", "log_polar", "orb", "akaze")

# ECC has no similarity model: it is fitted as affine and projected back (see _project).
_ECC_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "rigid": cv2.MOTION_EUCLIDEAN,
    "similarity": cv2.MOTION_AFFINE,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
_MIN_LEVEL_SIDE = 24  # ECC on fewer pixels than this is too noisy to be worth a level
# A template whose weaker gradient direction holds less than this share of the gradient
# energy is one-dimensional (parallel stripes, or blank): a shift along it is not measured.
_MIN_STRUCTURE_RATIO = 1e-3


@dataclass(frozen=True)
class Registration:
    """Result of registering one image to a template.

    Attributes:
        warped: The image resampled into the template frame: ``(h, w)`` for a gray
            image, ``(h, w, 3)`` for a colour one, float32 in ``[0, 1]``; NaN where the
            template pixel maps outside the image (nothing there to judge).
        matrix: ``(3, 3)`` float64 transform from template to image pixel coordinates.
        quality: ECC correlation coefficient at the finest pyramid level, in ``[-1, 1]``
            (1 = the aligned image is an exact gain/offset copy of the template).
        overlap: Fraction of the template's area that lies inside the image, in ``[0, 1]``.
        motion: The motion model that was fitted.
    """

    warped: np.ndarray
    matrix: np.ndarray
    quality: float
    overlap: float
    motion: str


@dataclass(frozen=True)
class Alignment:
    """A transform estimate without the warped image (see :func:`estimate_transform`).

    Attributes:
        matrix: ``(3, 3)`` float64 transform from template to image pixel coordinates.
        quality: ECC correlation coefficient at the finest pyramid level.
        overlap: Fraction of the template's area that lies inside the image.
        motion: The motion model that was fitted.
    """

    matrix: np.ndarray
    quality: float
    overlap: float
    motion: str


@dataclass
class TemplatePyramid:
    """A template prepared once for many registrations.

    Attributes:
        shape: ``(h, w)`` of the full-resolution template.
        levels: Gray float32 images, coarsest first, each at least ``_MIN_LEVEL_SIDE``.
        scales: ``(fx, fy)`` of each level relative to full resolution.
        structure: Gradient energy of the finest level along its weaker direction over
            that along its stronger one (0 = stripes or blank, 1 = isotropic).
    """

    shape: tuple[int, int]
    levels: list[np.ndarray]
    scales: list[tuple[float, float]]
    structure: float = 1.0
    _features: dict[str, tuple] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class RegistrationOptions:
    """The options of :func:`register`, bundled for a model that registers many images.

    Attributes mirror :func:`register`'s keyword arguments; ``levels`` and ``max_side``
    are used by :meth:`prepare`.
    """

    motion: Motion = "affine"
    coarse: Coarse = "phase"
    levels: int = 2
    max_side: int = 256
    max_iterations: int = 30
    epsilon: float = 1e-4
    gauss_size: int = 5
    max_features: int = 1000
    random_state: int = 0

    def __post_init__(self) -> None:
        _check_choice("motion", self.motion, MOTIONS)
        _check_choice("coarse", self.coarse, COARSE_METHODS)
        if int(self.max_iterations) < 1:
            raise InvalidParameterError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if int(self.gauss_size) < 0 or (int(self.gauss_size) > 0 and int(self.gauss_size) % 2 == 0):
            raise InvalidParameterError(f"gauss_size must be 0 or odd, got {self.gauss_size}")

    def prepare(self, template: np.ndarray) -> TemplatePyramid:
        """The template's pyramid at these options' levels and size."""
        return prepare_template(template, levels=self.levels, max_side=self.max_side)

    def estimate(self, image: np.ndarray, pyramid: TemplatePyramid) -> Alignment:
        """:func:`estimate_transform` with these options."""
        return estimate_transform(
            image,
            pyramid,
            motion=self.motion,
            coarse=self.coarse,
            max_iterations=self.max_iterations,
            epsilon=self.epsilon,
            gauss_size=self.gauss_size,
            max_features=self.max_features,
            random_state=self.random_state,
        )

    def register(self, image: np.ndarray, pyramid: TemplatePyramid) -> Registration:
        """:func:`register` with these options."""
        return register(
            image,
            pyramid,
            motion=self.motion,
            coarse=self.coarse,
            max_iterations=self.max_iterations,
            epsilon=self.epsilon,
            gauss_size=self.gauss_size,
            max_features=self.max_features,
            random_state=self.random_state,
        )


def prepare_template(template: np.ndarray, *, levels: int = 2, max_side: int = 256) -> TemplatePyramid:
    """Build the registration pyramid of a template.

    Args:
        template: ``(h, w)`` or ``(h, w, 3)`` image, uint8/uint16 or float in ``[0, 1]``.
        levels: Number of pyramid levels (each half the size of the next finer one).
        max_side: Longest side of the finest level; the full image is never registered
            at more than this resolution (the final warp is still at full resolution).

    Returns:
        A :class:`TemplatePyramid`.

    Raises:
        InvalidParameterError: ``levels`` < 1 or ``max_side`` < 16.
        InvalidImageError: the template is not a 2-D gray or RGB image.
    """
    if int(levels) < 1:
        raise InvalidParameterError(f"levels must be >= 1, got {levels}")
    if int(max_side) < 16:
        raise InvalidParameterError(f"max_side must be >= 16, got {max_side}")
    gray = _gray_float(template)
    h, w = gray.shape
    scale0 = min(1.0, float(max_side) / max(h, w))
    images, scales = [], []
    source = gray
    for level in range(int(levels)):
        f = scale0 / (2**level)
        lw, lh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        if level > 0 and min(lw, lh) < _MIN_LEVEL_SIDE:
            break
        # Each level from the finer one, exactly as _image_levels does for the image.
        source = source if (lw, lh) == source.shape[::-1] else cv2.resize(source, (lw, lh), interpolation=cv2.INTER_AREA)
        images.append(np.ascontiguousarray(source, dtype=np.float32))
        scales.append((lw / w, lh / h))
    return TemplatePyramid(shape=(h, w), levels=images[::-1], scales=scales[::-1], structure=_structure(images[0]))


def _structure(level: np.ndarray) -> float:
    """Smaller over larger eigenvalue of the summed gradient structure tensor."""
    smooth = cv2.GaussianBlur(level, (5, 5), 0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    tensor = np.array([[float((gx * gx).sum()), float((gx * gy).sum())],
                       [float((gx * gy).sum()), float((gy * gy).sum())]])
    weak, strong = np.linalg.eigvalsh(tensor)
    return float(max(weak, 0.0) / strong) if strong > 0 else 0.0


def register(
    image: np.ndarray,
    template: np.ndarray | TemplatePyramid,
    *,
    motion: Motion = "affine",
    coarse: Coarse = "phase",
    levels: int = 2,
    max_side: int = 256,
    max_iterations: int = 30,
    epsilon: float = 1e-4,
    gauss_size: int = 5,
    max_features: int = 1000,
    random_state: int = 0,
) -> Registration:
    """Estimate the transform of ``image`` to ``template`` and warp it into the template frame.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 image (or float in ``[0, 1]``);
            its size may differ from the template's.
        template: The golden image, or a :class:`TemplatePyramid` from
            :func:`prepare_template` (then ``levels`` and ``max_side`` are taken from it).
        motion: ``"translation"``, ``"rigid"`` (rotation + shift), ``"similarity"``
            (+ uniform scale), ``"affine"`` or ``"homography"``.
        coarse: Initial estimate for large motions: ``"none"`` (identity), ``"phase"``
            (phase correlation, shift only), ``"log_polar"`` (Fourier-Mellin: rotation,
            scale and shift), ``"orb"`` or ``"akaze"`` (feature matching + RANSAC). A
            coarse estimate is kept only if it correlates better than no motion.
        levels: Pyramid levels for ECC when ``template`` is an array.
        max_side: Longest side of the finest pyramid level when ``template`` is an array.
        max_iterations: ECC iterations per level at most.
        epsilon: ECC stops when the correlation gains less than this per iteration.
        gauss_size: Odd size of the Gaussian ECC applies to both images (0 = none).
        max_features: Keypoints per image for ``"orb"``/``"akaze"``.
        random_state: Seed of the RANSAC sampling for feature-based coarse estimates.

    Returns:
        A :class:`Registration` (warped image, transform, quality, overlap).

    Raises:
        InvalidParameterError: an unknown motion or coarse method.
        InvalidImageError: not a 2-D gray or RGB image.
        AlignmentError: ECC did not converge or the coarse stage found no transform.
    """
    pyramid = template if isinstance(template, TemplatePyramid) else prepare_template(
        template, levels=levels, max_side=max_side
    )
    found = estimate_transform(
        image, pyramid, motion=motion, coarse=coarse, max_iterations=max_iterations, epsilon=epsilon,
        gauss_size=gauss_size, max_features=max_features, random_state=random_state,
    )
    return Registration(
        warped=warp_to_template(image, found.matrix, pyramid.shape),
        matrix=found.matrix,
        quality=found.quality,
        overlap=found.overlap,
        motion=found.motion,
    )


def estimate_transform(
    image: np.ndarray,
    template: np.ndarray | TemplatePyramid,
    *,
    motion: Motion = "affine",
    coarse: Coarse = "phase",
    levels: int = 2,
    max_side: int = 256,
    max_iterations: int = 30,
    epsilon: float = 1e-4,
    gauss_size: int = 5,
    max_features: int = 1000,
    random_state: int = 0,
) -> Alignment:
    """:func:`register` without the final warp, for callers that warp their own way.

    Takes the same arguments as :func:`register` and raises the same errors.

    Returns:
        An :class:`Alignment` (transform, quality, overlap).
    """
    _check_choice("motion", motion, MOTIONS)
    _check_choice("coarse", coarse, COARSE_METHODS)
    pyramid = template if isinstance(template, TemplatePyramid) else prepare_template(
        template, levels=levels, max_side=max_side
    )
    if pyramid.structure < _MIN_STRUCTURE_RATIO:
        raise AlignmentError(
            "part not found / could not align: the template has structure in one direction only (weaker "
            f"gradient direction holds {pyramid.structure:.1e} of the energy, less than {_MIN_STRUCTURE_RATIO:.0e}), "
            "so a shift along it cannot be measured; give an ROI with structure in both directions"
        )
    gray = as_gray(image)
    image_levels = _image_levels(gray, pyramid)
    if float(image_levels[-1][0].std()) < 1e-6:
        raise AlignmentError("part not found / could not align: the image is uniform, there is nothing to align")
    starts = _coarse_estimates(
        coarse, pyramid, image_levels, motion=motion, max_features=max_features, random_state=random_state
    )
    matrix, quality = _refine_ecc(
        pyramid,
        image_levels,
        starts,
        motion=motion,
        max_iterations=max_iterations,
        epsilon=epsilon,
        gauss_size=gauss_size,
    )
    return Alignment(matrix=matrix, quality=float(quality),
                     overlap=template_overlap(matrix, pyramid.shape, gray.shape), motion=motion)


def phase_correlation(
    template: np.ndarray, image: np.ndarray, *, window: bool = True
) -> tuple[np.ndarray, float]:
    """Shift of ``image`` relative to ``template`` by phase correlation.

    Args:
        template: ``(h, w)`` gray float image.
        image: ``(h, w)`` gray float image of the same size.
        window: Apply a Hann window first, so the image borders do not dominate.

    Returns:
        ``(matrix, response)``: a ``(3, 3)`` pure translation from template to image
        coordinates and the correlation peak's height in ``[0, 1]``.
    """
    t = np.ascontiguousarray(template, dtype=np.float32)
    i = np.ascontiguousarray(image, dtype=np.float32)
    if t.shape != i.shape or t.ndim != 2:
        raise InvalidImageError(f"phase correlation needs two 2-D images of one size, got {t.shape} and {i.shape}")
    win = cv2.createHanningWindow((t.shape[1], t.shape[0]), cv2.CV_32F) if window else None
    (dx, dy), response = _phase_correlate(t, i, win)
    return _translation(dx, dy), float(response)


def log_polar_correlation(template: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation, scale and shift of ``image`` relative to ``template`` (Fourier-Mellin).

    The magnitude spectrum is invariant to shifts and turns rotation and scaling into
    shifts of its log-polar resampling, which phase correlation finds; the shift is then
    found on the de-rotated image. The spectrum cannot tell ``theta`` from
    ``theta + 180``; both are tried and the stronger translation peak wins.

    Args:
        template: ``(h, w)`` gray float image.
        image: ``(h, w)`` gray float image of the same size.

    Returns:
        ``(matrix, response)``: ``(3, 3)`` similarity from template to image coordinates
        and the final translation peak's height.
    """
    t = np.ascontiguousarray(template, dtype=np.float32)
    i = np.ascontiguousarray(image, dtype=np.float32)
    if t.shape != i.shape or t.ndim != 2:
        raise InvalidImageError(f"log-polar correlation needs two 2-D images of one size, got {t.shape} and {i.shape}")
    h, w = t.shape
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    center = (w / 2.0, h / 2.0)
    max_radius = min(h, w) / 2.0
    polar_t = _log_polar_spectrum(t, win, center, max_radius)
    polar_i = _log_polar_spectrum(i, win, center, max_radius)
    (d_rho, d_theta), _ = _phase_correlate(polar_t, polar_i, None)
    n_angles, n_radii = polar_t.shape
    angle = 360.0 * d_theta / n_angles
    scale = float(np.exp(d_rho * np.log(max_radius) / n_radii))
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    best = (None, -1.0)
    for candidate in (angle, angle + 180.0):
        # Spectra rotate with the image and scale inversely to it.
        rs = np.vstack([cv2.getRotationMatrix2D((cx, cy), -candidate, 1.0 / scale), [0.0, 0.0, 1.0]])
        derotated = cv2.warpAffine(i, rs[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        (dx, dy), response = _phase_correlate(t, derotated, win)
        matrix = rs @ _translation(dx, dy)
        if response > best[1]:
            best = (matrix, float(response))
    return best[0], best[1]


def match_features(
    template: np.ndarray,
    image: np.ndarray,
    *,
    motion: Motion = "affine",
    method: Literal["orb", "akaze"] = "orb",
    max_features: int = 1000,
    random_state: int = 0,
) -> tuple[np.ndarray, int]:
    """Transform from ``template`` to ``image`` by keypoint matching and RANSAC.

    Args:
        template: ``(h, w)`` gray image (uint8 or float in ``[0, 1]``).
        image: ``(H, W)`` gray image.
        motion: Model to fit (``"rigid"`` is fitted as a similarity and its scale dropped).
        method: ``"orb"`` or ``"akaze"`` keypoints.
        max_features: Keypoints per image at most (ORB only).
        random_state: Seed of RANSAC's sampling (OpenCV's USAC for affine and homography;
            OpenCV's partial-affine RANSAC uses its own fixed seed).

    Returns:
        ``(matrix, n_inliers)``: ``(3, 3)`` transform from template to image coordinates.

    Raises:
        AlignmentError: too few matches or inliers to trust a transform.
    """
    key_t = _detect(_to_u8(template), method, max_features)
    key_i = _detect(_to_u8(image), method, max_features)
    return _fit_matches(key_t, key_i, motion=motion, random_state=random_state)


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

    Scanned or stitched images are rarely related by one global transform: a line-scan
    camera or a flexing board leaves residual shifts of a pixel or two that vary across
    the field. The template is cut into ``grid x grid`` tiles; in each, ECC estimates a
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
        outside the image, shape like :func:`warp_to_template`'s) and the ``(h, w, 2)``
        float32 displacement ``(dx, dy)`` added to template coordinates before ``matrix``.
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
    if _is_affine(matrix):
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
    """The part of a tile's shift that its structure can measure (aperture problem)."""
    gx = cv2.Sobel(tile, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(tile, cv2.CV_32F, 0, 1, ksize=3)
    tensor = np.array([[float((gx * gx).sum()), float((gx * gy).sum())],
                       [float((gx * gy).sum()), float((gy * gy).sum())]])
    values, vectors = np.linalg.eigh(tensor)
    if values[-1] <= 0:
        return np.zeros(2)
    out = np.zeros(2)
    for value, vector in zip(values, vectors.T):
        # A direction with under a tenth of the strongest gradient energy is not measured.
        if value >= 0.1 * values[-1]:
            out += float(shift @ vector) * vector
    return out


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
    data = to_unit_float(image)
    h, w = int(shape[0]), int(shape[1])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # A NaN border propagates through interpolation, so pixels partly outside the image
    # are marked unknown too instead of being blended with an invented value.
    nan = (float("nan"),) * 4
    if _is_affine(matrix):
        return cv2.warpAffine(data, matrix[:2].astype(np.float64), (w, h), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=nan)
    return cv2.warpPerspective(data, matrix.astype(np.float64), (w, h), flags=flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=nan)


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
    image = np.ascontiguousarray(image)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if _is_affine(matrix):
        warped = cv2.warpAffine(image, matrix[:2].astype(np.float64), (w, h), flags=flags,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        warped = cv2.warpPerspective(image, matrix.astype(np.float64), (w, h), flags=flags,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    corners = _apply(matrix, np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64))
    # The template's image is convex, so it lies inside when its corners do.
    if corners.min() >= 1 and corners[:, 0].max() <= W - 2 and corners[:, 1].max() <= H - 2:
        return warped, None
    frame = np.array([[1, 1], [W - 2, 1], [W - 2, H - 2], [1, H - 2]], dtype=np.float64)
    polygon = _apply(np.linalg.inv(matrix), frame)
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
    if _is_affine(matrix):
        return cv2.warpAffine(values, matrix[:2].astype(np.float64), (W, H), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return cv2.warpPerspective(values, matrix.astype(np.float64), (W, H), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


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
    inside = _apply(matrix, corners)
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
    diff = _apply(np.asarray(estimated, float), corners) - _apply(np.asarray(truth, float), corners)
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=1))))


def as_gray(image: np.ndarray) -> np.ndarray:
    """Gray version of an ``(H, W)`` or ``(H, W, 3)`` RGB image, ``(H, W)`` in its own dtype.

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
    """uint8/uint16 scaled to float32 in ``[0, 1]``; floats are taken as already scaled."""
    if image.dtype in (np.float32, np.float64):
        return np.ascontiguousarray(image, dtype=np.float32)
    return image.astype(np.float32) * np.float32(1.0 / _unit(image.dtype))


# -- internals ---------------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidParameterError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _is_affine(matrix: np.ndarray) -> bool:
    return bool(abs(matrix[2, 0]) < 1e-12 and abs(matrix[2, 1]) < 1e-12 and abs(matrix[2, 2] - 1.0) < 1e-12)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    homog = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return homog[:, :2] / homog[:, 2:3]


def _scale_matrix(fx: float, fy: float) -> np.ndarray:
    # Pixel centres: x_level = f * (x + 0.5) - 0.5, so a sub-pixel result survives rescaling.
    return np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])


def _unit(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0 if dtype == np.uint8 else 1.0


def _gray_float(image: np.ndarray) -> np.ndarray:
    gray = as_gray(image)
    return gray.astype(np.float32) * np.float32(1.0 / _unit(gray.dtype))


def _to_u8(image: np.ndarray) -> np.ndarray:
    gray = as_gray(image)
    if gray.dtype == np.uint8:
        return gray
    if gray.dtype == np.uint16:
        return (gray >> 8).astype(np.uint8)
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


def _image_levels(gray: np.ndarray, pyramid: TemplatePyramid) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """The image downscaled by the template's level factors, coarsest first."""
    H, W = gray.shape
    unit = np.float32(1.0 / _unit(gray.dtype))
    out = []
    finest = None
    for fx, _ in pyramid.scales[::-1]:  # finest first, each level from the one above it
        lw, lh = max(1, int(round(W * fx))), max(1, int(round(H * fx)))
        source = gray if finest is None else finest
        small = source if (lw, lh) == source.shape[::-1] else cv2.resize(source, (lw, lh), interpolation=cv2.INTER_AREA)
        finest = small
        out.append((np.ascontiguousarray(small.astype(np.float32) * unit), (lw / W, lh / H)))
    return out[::-1]


def _coarse_estimates(
    coarse: str,
    pyramid: TemplatePyramid,
    image_levels: list[tuple[np.ndarray, tuple[float, float]]],
    *,
    motion: str,
    max_features: int,
    random_state: int,
) -> list[np.ndarray]:
    """Starting points for ECC: the coarse method's estimate (if it found one) and no motion.

    A coarse method can be fooled (a sparse or periodic board gives phase correlation a
    false peak, a rotation smears it), so no motion is always tried as well and ECC on
    the coarsest level decides between them.
    """
    starts = []
    if coarse != "none":
        try:
            starts.append(_coarse_candidate(
                coarse, pyramid, image_levels, motion=motion, max_features=max_features, random_state=random_state
            ))
        except AlignmentError:
            pass
    if not starts or np.abs(starts[0] - np.eye(3)).max() > 1e-6:
        starts.append(np.eye(3))
    return starts


def _coarse_candidate(
    coarse: str,
    pyramid: TemplatePyramid,
    image_levels: list[tuple[np.ndarray, tuple[float, float]]],
    *,
    motion: str,
    max_features: int,
    random_state: int,
) -> np.ndarray:
    if coarse in ("phase", "log_polar"):
        t_small = pyramid.levels[0]
        i_small, i_scale = image_levels[0]
        if i_small.shape != t_small.shape:
            i_small = _fit_canvas(i_small, t_small.shape)
        if coarse == "phase":
            level_matrix, _ = phase_correlation(t_small, i_small)
        else:
            level_matrix, _ = log_polar_correlation(t_small, i_small)
        matrix = _from_level(level_matrix, pyramid.scales[0], i_scale)
        if motion == "translation":
            matrix = _translation(matrix[0, 2], matrix[1, 2])
        return matrix
    # Features on the finest level: enough detail, a fraction of the full-size cost.
    cached = pyramid._features.get(f"{coarse}:{max_features}")
    if cached is None:
        cached = _detect(_to_u8(pyramid.levels[-1]), coarse, max_features)
        pyramid._features[f"{coarse}:{max_features}"] = cached
    i_fine, i_scale = image_levels[-1]
    level_matrix, _ = _fit_matches(
        cached, _detect(_to_u8(i_fine), coarse, max_features), motion=motion, random_state=random_state
    )
    return _from_level(level_matrix, pyramid.scales[-1], i_scale)


def _fit_canvas(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or pad (with the mean) an image to ``shape`` so FFT correlation can compare it."""
    h, w = shape
    out = np.full((h, w), float(image.mean()), dtype=np.float32)
    ch, cw = min(h, image.shape[0]), min(w, image.shape[1])
    out[:ch, :cw] = image[:ch, :cw]
    return out


def _inverse_scale_matrix(fx: float, fy: float) -> np.ndarray:
    return np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])


def _from_level(level_matrix: np.ndarray, t_scale: tuple[float, float], i_scale: tuple[float, float]) -> np.ndarray:
    return _inverse_scale_matrix(*i_scale) @ level_matrix @ _scale_matrix(*t_scale)


def _to_level(matrix: np.ndarray, t_scale: tuple[float, float], i_scale: tuple[float, float]) -> np.ndarray:
    return _scale_matrix(*i_scale) @ matrix @ _inverse_scale_matrix(*t_scale)


def _project(matrix: np.ndarray, motion: str) -> np.ndarray:
    """Nearest transform of the requested family (ECC and RANSAC fit a superset)."""
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


def _refine_ecc(
    pyramid: TemplatePyramid,
    image_levels: list[tuple[np.ndarray, tuple[float, float]]],
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
    """
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iterations), float(epsilon))
    n_levels = len(pyramid.levels)
    paths = [(_project(start, motion), float("nan")) for start in starts]
    error = ""
    for index, (t_level, t_scale, (i_level, i_scale)) in enumerate(zip(pyramid.levels, pyramid.scales, image_levels)):
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
    level_matrix = _to_level(matrix, t_scale, i_scale)
    warp = level_matrix.astype(np.float32) if motion == "homography" else level_matrix[:2].astype(np.float32)
    cc, warp = cv2.findTransformECC(t_level, i_level, warp, _ECC_MOTION[motion], criteria, None, int(gauss_size))
    full = np.vstack([warp, [0.0, 0.0, 1.0]]) if warp.shape[0] == 2 else warp
    return _project(_from_level(full.astype(np.float64), t_scale, i_scale), motion), float(cc)


def _phase_correlate(a: np.ndarray, b: np.ndarray, window: np.ndarray | None) -> tuple[tuple[float, float], float]:
    # OpenCV 5.0's phaseCorrelate multiplies its inputs by the window in place; windowing
    # copies here keeps the caller's arrays (a cached template pyramid) intact.
    if window is not None:
        a, b = a * window, b * window
    return cv2.phaseCorrelate(np.ascontiguousarray(a), np.ascontiguousarray(b))


def _log_polar_spectrum(image: np.ndarray, win: np.ndarray, center, max_radius: float) -> np.ndarray:
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2((image - image.mean()) * win)))
    # log1p tames the DC-dominated dynamic range so mid frequencies drive the correlation.
    magnitude = np.log1p(spectrum).astype(np.float32)
    h, w = image.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_FILL_OUTLIERS | cv2.WARP_POLAR_LOG
    return cv2.warpPolar(magnitude, (w, h), center, max_radius, flags)


def _detect(gray_u8: np.ndarray, method: str, max_features: int) -> tuple:
    if method == "orb":
        detector = cv2.ORB_create(nfeatures=int(max_features))
        norm = cv2.NORM_HAMMING
    elif method == "akaze":
        if not hasattr(cv2, "AKAZE_create"):
            raise InvalidParameterError(
                f"coarse method 'akaze' needs cv2.AKAZE_create, which OpenCV {cv2.__version__} does not have "
                "(OpenCV 5 moved it to opencv-contrib); use 'orb'"
            )
        detector = cv2.AKAZE_create()
        norm = cv2.NORM_HAMMING
    else:
        raise InvalidParameterError(f"feature method must be 'orb' or 'akaze', got {method!r}")
    keypoints, descriptors = detector.detectAndCompute(gray_u8, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors, norm


def _fit_matches(key_t: tuple, key_i: tuple, *, motion: str, random_state: int) -> tuple[np.ndarray, int]:
    pts_t, desc_t, norm = key_t
    pts_i, desc_i, _ = key_i
    min_matches = 4 if motion != "homography" else 8
    if desc_t is None or desc_i is None or len(pts_t) < min_matches or len(pts_i) < min_matches:
        raise AlignmentError(
            f"part not found: {len(pts_t)} template and {len(pts_i)} image keypoints, "
            f"need at least {min_matches} each"
        )
    matches = cv2.BFMatcher(norm, crossCheck=True).match(desc_t, desc_i)
    if len(matches) < min_matches:
        raise AlignmentError(f"part not found: {len(matches)} keypoint matches, need at least {min_matches}")
    src = np.float32([pts_t[m.queryIdx] for m in matches]).reshape(-1, 1, 2)
    dst = np.float32([pts_i[m.trainIdx] for m in matches]).reshape(-1, 1, 2)
    usac = cv2.UsacParams()
    usac.randomGeneratorState = int(random_state)
    usac.threshold = 3.0
    usac.confidence = 0.999
    usac.maxIterations = 5000
    if motion == "homography":
        estimate, inliers = cv2.findHomography(src, dst, usac)
    elif motion == "affine":
        estimate, inliers = cv2.estimateAffine2D(src, dst, usac)
    else:
        estimate, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    n_inliers = int(inliers.sum()) if inliers is not None else 0
    if estimate is None or n_inliers < min_matches:
        raise AlignmentError(
            f"part not found: RANSAC kept {n_inliers} of {len(matches)} matches, need at least {min_matches}"
        )
    matrix = estimate if estimate.shape == (3, 3) else np.vstack([estimate, [0.0, 0.0, 1.0]])
    return _project(matrix, motion), n_inliers
