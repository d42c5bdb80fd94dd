"""Coarse estimate of an image's transform, for motions too large for ECC to start from nothing.

Phase correlation for a shift, Fourier-Mellin (phase correlation of log-polar magnitude
spectra) for rotation and scale as well, or ORB/AKAZE keypoints matched and fitted by
RANSAC. :func:`coarse_starts` turns the chosen method's estimate into starting points
for the ECC refinement (:mod:`alignment.ecc`).

References:
    B. S. Reddy, B. N. Chatterji, "An FFT-based technique for translation, rotation, and
    scale-invariant image registration", IEEE TIP 5(8), 1996 (Fourier-Mellin).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from alignment.pyramid import ImageLevels, TemplatePyramid
from alignment.transforms import Motion, from_level, project, translation
from alignment.warp import as_gray
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError

Coarse = Literal["none", "phase", "log_polar", "orb", "akaze"]

COARSE_METHODS: tuple[str, ...] = ("none", "phase", "log_polar", "orb", "akaze")


def coarse_starts(
    coarse: str,
    pyramid: TemplatePyramid,
    levels: ImageLevels,
    *,
    motion: str,
    max_features: int,
    random_state: int,
) -> list[np.ndarray]:
    """Starting points for ECC: the coarse method's estimate (if it found one) and no motion.

    A coarse method can be fooled (a sparse or periodic board gives phase correlation a
    false peak, a rotation smears it), so no motion is always tried as well and ECC on
    the coarsest level decides between them.

    Args:
        coarse: One of :data:`COARSE_METHODS`.
        pyramid: The template's pyramid.
        levels: The image's pyramid at the template's scales.
        motion: The motion family the estimate is projected to.
        max_features: Keypoints per image for ``"orb"``.
        random_state: Seed of RANSAC's sampling for ``"orb"`` and ``"akaze"``.

    Returns:
        One or two ``(3, 3)`` transforms from template to image, the coarse estimate first.
    """
    starts = []
    if coarse != "none":
        try:
            starts.append(_estimate(coarse, pyramid, levels, motion=motion, max_features=max_features,
                                    random_state=random_state))
        except AlignmentError:
            pass
    if not starts or np.abs(starts[0] - np.eye(3)).max() > 1e-6:
        starts.append(np.eye(3))
    return starts


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
    return translation(dx, dy), float(response)


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
        matrix = rs @ translation(dx, dy)
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


def _estimate(
    coarse: str, pyramid: TemplatePyramid, levels: ImageLevels, *, motion: str, max_features: int, random_state: int
) -> np.ndarray:
    """The coarse method's ``(3, 3)`` estimate at full resolution (AlignmentError if none)."""
    if coarse in ("phase", "log_polar"):
        t_small = pyramid.levels[0]
        i_small, i_scale = levels[0]
        if i_small.shape != t_small.shape:
            i_small = _fit_canvas(i_small, t_small.shape)
        if coarse == "phase":
            level_matrix, _ = phase_correlation(t_small, i_small)
        else:
            level_matrix, _ = log_polar_correlation(t_small, i_small)
        matrix = from_level(level_matrix, pyramid.scales[0], i_scale)
        if motion == "translation":
            matrix = translation(matrix[0, 2], matrix[1, 2])
        return matrix
    # Features on the finest level: enough detail, a fraction of the full-size cost.
    key = f"{coarse}:{max_features}"
    if key not in pyramid.keypoints:
        pyramid.keypoints[key] = _detect(_to_u8(pyramid.levels[-1]), coarse, max_features)
    i_fine, i_scale = levels[-1]
    level_matrix, _ = _fit_matches(
        pyramid.keypoints[key], _detect(_to_u8(i_fine), coarse, max_features), motion=motion, random_state=random_state
    )
    return from_level(level_matrix, pyramid.scales[-1], i_scale)


def _fit_canvas(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or pad (with the mean) an image to ``shape`` so FFT correlation can compare it."""
    h, w = shape
    out = np.full((h, w), float(image.mean()), dtype=np.float32)
    ch, cw = min(h, image.shape[0]), min(w, image.shape[1])
    out[:ch, :cw] = image[:ch, :cw]
    return out


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


def _to_u8(image: np.ndarray) -> np.ndarray:
    """Gray uint8 for the keypoint detectors (uint16 keeps its high byte, floats are scaled)."""
    gray = as_gray(image)
    if gray.dtype == np.uint8:
        return gray
    if gray.dtype == np.uint16:
        return (gray >> 8).astype(np.uint8)
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)


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
    return project(matrix, motion), n_inliers
