"""Reference mode: compare an image with its own golden image, within a tolerance band.

Some lines have no single template: every tested board has its own reference (DeepPCB
pairs each test image with a defect-free image of the same board), so no model is
learned. The image is registered to the reference as in the learned models, and a pixel
counts as defective only when it leaves the *band* of what the reference shows within
``tolerance_px`` of that point: brighter than the brightest, or darker than the darkest,
reference pixel in a ``(2r + 1)`` disc (grey-level dilation and erosion). A residual
misregistration or a slightly different edge position then stays inside the band, so
edges do not light up, while a missing or extra feature leaves it. Defects are reported
as connected regions above a minimum area.

This is the classical design-rule-free "image comparison with tolerance" used in
bare-PCB AOI (e.g. Moganti et al., "Automatic PCB inspection algorithms: a survey",
CVIU 63(2), 1996, section on reference comparison).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from alignment.exposure import ExposureLimits, check_exposure, exposure_stats
from alignment.coarse import COARSE_METHODS
from alignment.local import refine_local
from alignment.registration import RegistrationOptions, estimate_transform
from alignment.transforms import MOTIONS
from alignment.warp import as_gray, to_unit_float, warp_to_image, warp_to_template
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError
from anomaly.imageio import ImageLike, as_image

_FEATURELESS_STD = 0.05  # contrast (fraction of full scale) below which a reference has nothing to align to


@dataclass(frozen=True)
class Region:
    """One connected defect region, in image pixel coordinates.

    Attributes:
        x: Left column of the bounding box.
        y: Top row of the bounding box.
        width: Bounding box width.
        height: Bounding box height.
        area: Pixels in the region.
        centroid: ``(x, y)`` centre of mass.
        polarity: ``"bright"`` (more light than the reference allows), ``"dark"``, or
            ``"mixed"``.
        peak: Largest map value inside (deviation in units of the tolerance).
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    centroid: tuple[float, float]
    polarity: str
    peak: float


@dataclass(frozen=True)
class ReferenceComparison:
    """Result of :func:`compare_to_reference`.

    Attributes:
        map: ``(H, W)`` float32, >= 0: how far each pixel leaves the reference's band,
            in units of ``abs_tol`` (above 1 = outside the tolerance), image coordinates.
        signed: ``(H, W)`` float32, the same with bright > 0 and dark < 0.
        regions: Connected regions of ``map > 1`` of at least ``min_area`` pixels.
        score: Largest map value.
        matrix: ``(3, 3)`` transform from reference to image coordinates.
        quality: Registration quality (ECC correlation); NaN when nothing was registered:
            ``motion="none"``, or a featureless reference (contrast below 0.05 of full
            scale, e.g. a bare board section), which is compared unmoved.
    """

    map: np.ndarray
    signed: np.ndarray
    regions: list[Region]
    score: float
    matrix: np.ndarray
    quality: float


def compare_to_reference(
    image: ImageLike,
    reference: ImageLike,
    *,
    motion: str = "affine",
    coarse: str = "phase",
    levels: int = 2,
    max_side: int = 256,
    tolerance_px: int = 1,
    abs_tol: float = 0.5,
    blur_sigma: float = 0.7,
    open_px: int = 1,
    min_area: int = 10,
    local_grid: int = 4,
    max_local_shift: float = 3.0,
    min_quality: float = 0.5,
    min_overlap: float = 0.9,
) -> ReferenceComparison:
    """Compare one image with its own reference image.

    Both are compared as luminance, so a colour image may be checked against a gray
    reference; they must have the same size.

    Args:
        image: The image to inspect: array, path or bytes (see :func:`anomaly.imageio.as_image`).
        reference: Its defect-free reference, same size.
        motion: Registration model (see :func:`alignment.registration.register`), or
            ``"none"`` when the pair is already aligned.
        coarse: Coarse registration method.
        levels: ECC pyramid levels.
        max_side: Longest side of the finest ECC level.
        tolerance_px: Radius of the band: what the reference shows this close to a point
            counts as good there (0 = pixel-by-pixel comparison).
        abs_tol: Gray-level tolerance beyond the band, as a fraction of full scale.
        blur_sigma: Gaussian smoothing of both images before comparison (0 = none); it
            suppresses compression noise at the cost of very thin defects.
        open_px: Radius of a morphological opening (cross-shaped) of the defect mask
            before regions are counted: it removes slivers this thin along edges, where a
            residual local misregistration leaves a one- or two-pixel seam (0 = none).
        min_area: Smallest region, in pixels, that is reported.
        local_grid: After the global registration, refine by local shifts estimated
            on a ``local_grid x local_grid`` grid of tiles (see
            :func:`alignment.local.refine_local`); 0 = global transform only.
        max_local_shift: Largest local shift trusted, in pixels.
        min_quality: Least ECC correlation accepted; below it the part is "not found".
        min_overlap: Least fraction of the reference that must lie inside the image.

    Returns:
        A :class:`ReferenceComparison`.

    Raises:
        InvalidImageError: unreadable images, different sizes, a blank or saturated image.
        InvalidParameterError: an option out of range.
        AlignmentError: the image could not be aligned to its reference.
    """
    _check_options(motion, coarse, tolerance_px, abs_tol, blur_sigma, min_area)
    if int(open_px) < 0:
        raise InvalidParameterError(f"open_px must be >= 0, got {open_px}")
    img = as_image(image)
    ref = as_image(reference)
    if img.shape[:2] != ref.shape[:2]:
        raise InvalidImageError(
            f"image is {img.shape[1]} x {img.shape[0]} pixels but its reference is {ref.shape[1]} x {ref.shape[0]}; "
            "reference mode compares images of one size"
        )
    gray, gray_ref = as_gray(img), as_gray(ref)
    check_exposure(gray, ExposureLimits.learn([gray_ref]))
    reference_f = to_unit_float(gray_ref)
    if motion == "none":
        warped, matrix, quality = to_unit_float(gray), np.eye(3), float("nan")
    elif exposure_stats(gray_ref).std < _FEATURELESS_STD:
        # A reference with no structure (a bare board section) cannot be aligned to, and
        # needs no alignment: anything the image shows there is a deviation wherever it is.
        warped, matrix, quality = to_unit_float(gray), np.eye(3), float("nan")
    else:
        options = RegistrationOptions(motion=motion, coarse=coarse, levels=levels, max_side=max_side)
        reg = estimate_transform(gray, reference_f, options=options)
        if not reg.quality >= min_quality:
            raise AlignmentError(
                f"part not found / could not align: correlation with the reference is {reg.quality:.3f}, "
                f"at least {min_quality:.3f} is required"
            )
        if reg.overlap < min_overlap:
            raise AlignmentError(
                f"part outside the field of view: only {reg.overlap:.0%} of the reference lies inside the image, "
                f"at least {min_overlap:.0%} is required"
            )
        matrix, quality = reg.matrix, reg.quality
        if int(local_grid) > 0:
            # The maps go back to the image through the global transform alone: the local
            # field moves them by at most max_local_shift pixels.
            warped, _ = refine_local(gray, reference_f, matrix, grid=int(local_grid), max_shift=max_local_shift)
        else:
            warped = warp_to_template(gray, matrix, reference_f.shape)
    signed = tolerance_band_deviation(warped, reference_f, tolerance_px=tolerance_px, blur_sigma=blur_sigma)
    signed *= np.float32(1.0 / abs_tol)
    signed = warp_to_image(signed, matrix, gray.shape)
    amap = np.abs(signed)
    regions = find_regions(signed, threshold=1.0, min_area=min_area, open_px=open_px)
    return ReferenceComparison(amap, signed, regions, float(amap.max()), matrix, quality)


def tolerance_band_deviation(
    image: np.ndarray, reference: np.ndarray, *, tolerance_px: int = 1, blur_sigma: float = 0.0
) -> np.ndarray:
    """Signed amount by which ``image`` leaves the band of its reference's neighbourhood.

    Args:
        image: ``(h, w)`` float32 in ``[0, 1]``, aligned to ``reference``; NaN = unknown.
        reference: ``(h, w)`` float32 in ``[0, 1]``.
        tolerance_px: Band radius in pixels.
        blur_sigma: Gaussian smoothing of both first (0 = none).

    Returns:
        ``(h, w)`` float32: ``image - max(reference nearby)`` where positive (bright),
        ``-(min(reference nearby) - image)`` where that is positive (dark), 0 inside the
        band and where ``image`` is NaN.
    """
    unknown = np.isnan(image)
    image = np.where(unknown, reference, image).astype(np.float32) if unknown.any() else image
    if blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
        reference = cv2.GaussianBlur(reference, (0, 0), blur_sigma)
    r = int(tolerance_px)
    if r > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        upper, lower = cv2.dilate(reference, kernel), cv2.erode(reference, kernel)
    else:
        upper = lower = reference
    bright = image - upper
    dark = image - lower  # negative where darker than the band
    out = np.where(bright > 0, bright, np.minimum(dark, 0.0)).astype(np.float32)
    out[unknown] = 0.0
    return out


def find_regions(
    signed: np.ndarray, *, threshold: float = 1.0, min_area: int = 1, open_px: int = 0
) -> list[Region]:
    """Connected regions where ``|signed| > threshold``, at least ``min_area`` pixels.

    Args:
        signed: ``(H, W)`` float signed deviation map (bright > 0, dark < 0).
        threshold: Map level a pixel must exceed.
        min_area: Smallest region kept (8-connected pixels, counted after the opening).
        open_px: Radius of a cross-shaped morphological opening applied first (0 = none).

    Returns:
        Regions sorted by descending peak.
    """
    magnitude = np.abs(signed)
    binary = (magnitude > threshold).astype(np.uint8)
    if open_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (2 * open_px + 1, 2 * open_px + 1))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    regions = []
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    for i in keep:
        x, y, w, h, area = (int(v) for v in stats[i])
        inside = labels[y : y + h, x : x + w] == i
        values = signed[y : y + h, x : x + w][inside]
        bright = int(np.count_nonzero(values > 0))
        polarity = "bright" if bright == len(values) else "dark" if bright == 0 else "mixed"
        regions.append(
            Region(x, y, w, h, area, (float(centroids[i, 0]), float(centroids[i, 1])), polarity,
                   float(np.abs(values).max()))
        )
    return sorted(regions, key=lambda r: -r.peak)


def _check_options(motion, coarse, tolerance_px, abs_tol, blur_sigma, min_area) -> None:
    if motion != "none" and motion not in MOTIONS:
        raise InvalidParameterError(f"motion must be 'none' or one of {', '.join(MOTIONS)}; got {motion!r}")
    if coarse not in COARSE_METHODS:
        raise InvalidParameterError(f"coarse must be one of {', '.join(COARSE_METHODS)}; got {coarse!r}")
    if int(tolerance_px) < 0:
        raise InvalidParameterError(f"tolerance_px must be >= 0, got {tolerance_px}")
    if not float(abs_tol) > 0:
        raise InvalidParameterError(f"abs_tol must be > 0, got {abs_tol}")
    if not float(blur_sigma) >= 0:
        raise InvalidParameterError(f"blur_sigma must be >= 0, got {blur_sigma}")
    if int(min_area) < 1:
        raise InvalidParameterError(f"min_area must be >= 1, got {min_area}")
