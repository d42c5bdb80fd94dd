"""Defect regions: connected areas of an anomaly map above the pixel threshold, measured.

Each region is an 8-connected component of ``map >= pixel_threshold`` at the image's own
resolution, with measures a quality department grades by:

* bounding box, area (pixels, and mm^2 when the pixel size is known), centroid;
* ``length`` and ``width``: the long and short sides of the region's minimum-area
  rotated rectangle, taken over the pixels' corners (so a 100 x 3 px bar measures exactly
  100 x 3 at any multiple of 90 degrees); ``feret_max``: the largest distance between
  two of those corners; ``angle_deg`` of the long side against the image's x axis;
* ``mean_score`` / ``max_score`` of the map inside the region;
* ``contrast``: mean intensity inside the region minus the reference image's mean there
  when a good reference is given, else minus the median of the local background within a
  Euclidean ring around it (pixels below the threshold), in the image's grey levels; ``polarity``
  ``"brighter"`` / ``"darker"`` by its sign.

numpy/OpenCV only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from anomaly.errors import InvalidImageError, InvalidParameterError

#: Regions smaller than this many pixels are dropped unless the caller says otherwise.
DEFAULT_MIN_AREA = 10
#: At most this many regions are reported per image (the strongest first).
DEFAULT_MAX_REGIONS = 50


@dataclass
class Region:
    """One measured region. Lengths in pixels unless the name says ``_mm``."""

    x: int
    y: int
    w: int
    h: int
    area_px: int
    centroid_x: float
    centroid_y: float
    length_px: float
    width_px: float
    feret_max_px: float
    angle_deg: float
    mean_score: float
    max_score: float
    peak_x: int
    peak_y: int
    contrast: float | None = None
    polarity: str | None = None
    area_mm2: float | None = None
    length_mm: float | None = None
    width_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bbox"] = [self.x, self.y, self.w, self.h]
        return out

    def measure(self, name: str) -> float | None:
        """A measure by name (as used by grading rules); ``contrast_abs`` is ``|contrast|``."""
        if name == "contrast_abs":
            return None if self.contrast is None else abs(self.contrast)
        return getattr(self, name)


def find_regions(
    amap: np.ndarray,
    pixel_threshold: float,
    *,
    image: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    min_area: float = DEFAULT_MIN_AREA,
    pixel_size_mm: float | None = None,
    max_regions: int = DEFAULT_MAX_REGIONS,
) -> list[Region]:
    """Connected regions of ``amap >= pixel_threshold``, measured, strongest first.

    Args:
        amap: ``(H, W)`` anomaly map at the image's resolution.
        pixel_threshold: Map value at or above which a pixel is anomalous.
        image: Optional ``(H, W)`` or ``(H, W, 3)`` image the map belongs to, for contrast
            and polarity.
        reference: Optional good reference aligned with ``image`` (same shape); contrast
            is then taken against it instead of the local background.
        min_area: Drop regions of fewer pixels.
        pixel_size_mm: Side of one pixel in mm, for the ``_mm`` measures.
        max_regions: Keep at most this many (by ``max_score``).

    Returns:
        Regions sorted by ``max_score``, highest first.
    """
    amap = np.asarray(amap, dtype=np.float32)
    if amap.ndim != 2:
        raise InvalidImageError(f"anomaly map must be 2-D (H, W), got shape {amap.shape}")
    if pixel_size_mm is not None and not pixel_size_mm > 0:
        raise InvalidParameterError(f"pixel size must be > 0 mm, got {pixel_size_mm}")
    gray = _gray(image, amap.shape, "image")
    ref = _gray(reference, amap.shape, "reference")
    labels, keep, (stats, centroids, above) = _components(amap, pixel_threshold, min_area, max_regions)
    regions = []
    for i in keep:
        x, y, w, h, area = (int(v) for v in stats[i, :5])
        sub = labels[y : y + h, x : x + w] == i
        values = amap[y : y + h, x : x + w][sub]
        length, width, angle, feret = _shape(sub)
        py, px = np.unravel_index(int(np.argmax(np.where(sub, amap[y : y + h, x : x + w], -np.inf))), sub.shape)
        region = Region(
            x=x, y=y, w=w, h=h, area_px=area,
            centroid_x=float(centroids[i][0]), centroid_y=float(centroids[i][1]),
            length_px=length, width_px=width, feret_max_px=feret, angle_deg=angle,
            mean_score=float(values.mean()), max_score=float(values.max()),
            peak_x=int(x + px), peak_y=int(y + py),
        )
        if gray is not None:
            region.contrast = _contrast(gray, ref, labels, i, (x, y, w, h), above)
            region.polarity = "brighter" if region.contrast > 0 else "darker" if region.contrast < 0 else None
        if pixel_size_mm is not None:
            region.area_mm2 = area * pixel_size_mm**2
            region.length_mm = length * pixel_size_mm
            region.width_mm = width * pixel_size_mm
        regions.append(region)
    regions.sort(key=lambda r: -r.max_score)
    return regions[:max_regions]


def region_mask(amap: np.ndarray, pixel_threshold: float, *, min_area: float = DEFAULT_MIN_AREA,
                max_regions: int = DEFAULT_MAX_REGIONS) -> np.ndarray:
    """``(H, W)`` bool: the pixels of the regions :func:`find_regions` reports (same filters)."""
    labels, keep, _ = _components(np.asarray(amap, dtype=np.float32), pixel_threshold, min_area, max_regions)
    if not keep:
        return np.zeros(labels.shape, dtype=bool)
    lut = np.zeros(int(labels.max()) + 1, dtype=bool)
    lut[keep] = True
    return lut[labels]


def _components(amap: np.ndarray, pixel_threshold: float, min_area: float, max_regions: int):
    """Labels of ``amap >= pixel_threshold``, the kept labels (area filter, strongest first), stats."""
    above = (amap >= float(pixel_threshold)).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(above, connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= max(1, min_area)]
    if len(keep) > max_regions:
        inside = above.astype(bool)
        peak = np.full(n, -np.inf, dtype=np.float64)
        np.maximum.at(peak, labels[inside], amap[inside])
        keep = sorted(keep, key=lambda i: -peak[i])[:max_regions]
    return labels, keep, (stats, centroids, above)


def _shape(sub: np.ndarray) -> tuple[float, float, float, float]:
    """(length, width, angle of the long side in degrees, max Feret) of a bool pixel set."""
    contours, _ = cv2.findContours(sub.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours], axis=0).astype(np.float32)
    # Each boundary pixel covers a unit square: measure over its four corners.
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]], np.float32)
    corners = (centres[:, None, :] + offsets[None]).reshape(-1, 2)
    hull = cv2.convexHull(corners).reshape(-1, 2)
    (_, _), (rw, rh), angle = cv2.minAreaRect(hull)
    if rw >= rh:
        length, width, long_angle = rw, rh, angle
    else:
        length, width, long_angle = rh, rw, angle + 90.0
    d = hull[:, None, :] - hull[None, :, :]
    feret = float(np.sqrt((d**2).sum(axis=2)).max()) if len(hull) > 1 else 1.0
    long_angle = ((long_angle + 90.0) % 180.0) - 90.0
    return float(length), float(width), float(long_angle), feret


def _contrast(gray: np.ndarray, ref: np.ndarray | None, labels: np.ndarray, i: int,
              box: tuple[int, int, int, int], above: np.ndarray) -> float:
    """Mean grey level inside region ``i`` minus the reference's there, or minus its local background.

    The background is the median of the pixels below the threshold within ``ring`` pixels
    (Euclidean) of the region (:func:`_ring`), ``ring`` growing with the region's size.
    """
    x, y, w, h = box
    ring = max(3, int(round(0.5 * math.sqrt(w * h))))
    y0, y1 = max(0, y - ring), min(gray.shape[0], y + h + ring)
    x0, x1 = max(0, x - ring), min(gray.shape[1], x + w + ring)
    inside = labels[y0:y1, x0:x1] == i
    g = gray[y0:y1, x0:x1]
    mean_in = float(g[inside].mean())
    if ref is not None:
        return mean_in - float(ref[y0:y1, x0:x1][inside].mean())
    background = _ring(inside, ring) & (above[y0:y1, x0:x1] == 0)
    if not background.any():
        background = ~inside
    if not background.any():
        return 0.0
    return mean_in - float(np.median(g[background]))


def _ring(inside: np.ndarray, radius: int) -> np.ndarray:
    """``(h, w)`` bool: the pixels outside ``inside`` within ``radius`` (Euclidean, centre to centre) of it.

    From a distance transform, linear in the window's pixels; a dilation by a disk of that
    radius costs the window's pixels times the disk's, minutes for a region filling a frame.
    """
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (distance <= radius) & ~inside


def _gray(image: np.ndarray | None, shape: tuple[int, int], label: str) -> np.ndarray | None:
    if image is None:
        return None
    image = np.asarray(image)
    if image.shape[:2] != tuple(shape) or image.ndim not in (2, 3):
        raise InvalidImageError(f"{label} must be (H, W) or (H, W, 3) matching the map {tuple(shape)}, got {image.shape}")
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            # ITU-R BT.601 luma of RGB.
            image = image[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return image.astype(np.float32)
