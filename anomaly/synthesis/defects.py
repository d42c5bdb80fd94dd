"""Synthetic defects with exact masks, made from good images.

Most inspection lines have few or no real defect images, yet a detector's threshold and
its smallest detectable defect still have to be measured. :func:`make_defect` puts one
defect of a chosen kind, size and contrast into a good image and says exactly where it is.

``size`` is always the defect's longest extent in pixels. ``contrast`` (0.01 to 1) is, for
every kind but ``cutpaste`` and ``deform``, the strongest intensity change inside the
defect as a fraction of full scale (0.1 = about 26 grey levels of an 8-bit image):

* ``scratch``: a thin anti-aliased cubic Bezier curve, 1-6 px wide, tapered at both ends.
* ``spot``: an irregular blob with soft edges, darker or brighter.
* ``stain``: a larger, mottled blob with a denser rim; brownish on colour images.
* ``brightness``: a soft local change of brightness (by ``contrast``) and of contrast
  (gain ``1 +/- contrast``), with no edge at all.
* ``cutpaste``: a rotated rectangle copied from elsewhere in the image (or from
  ``source``), turned or flipped, pasted with hard edges and its brightness shifted by
  ``contrast`` (Li et al., "CutPaste", CVPR 2021).
* ``poisson``: a structured patch from elsewhere, turned and blended in without seams by
  ``cv2.seamlessClone`` (Perez et al., "Poisson image editing", SIGGRAPH 2003); its
  change is scaled to ``contrast``, by at most 4x.
* ``missing``: a structured region painted over by ``cv2.inpaint`` (Telea, 2004), a
  feature that is not there; the fill goes as far as reaching ``contrast`` needs, up to a
  complete removal.
* ``deform``: a smooth, fold-free local warp (``cv2.remap``) of a structured region; the
  centre moves by ``0.3 * contrast * size`` px.

``missing`` and ``deform`` are placed, and ``poisson`` takes its patch, where the image
has structure (drawn with a probability that grows with local gradient energy), because
removing, bending or blending in a flat area changes nothing; everything else is placed
uniformly. Brightness changes take the polarity with room to move (darker on bright
areas and the other way round), so clipping does not eat the defect.

The mask is exact: it holds the pixels whose value changed by at least one grey level of
an 8-bit image (1/255 of full scale, in any channel), closed over one-pixel gaps and with
enclosed holes filled, and every pixel outside it is left bit-for-bit unchanged. Work is
done on a window around the defect, so the cost does not grow with the image (a defect
in a 256 x 256 image takes a few ms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from scipy import ndimage

from anomaly.errors import InvalidImageError, InvalidParameterError

#: The defect kinds :func:`make_defect` knows, in a fixed order.
KINDS = ("scratch", "spot", "stain", "brightness", "cutpaste", "poisson", "missing", "deform")

#: Smallest image side accepted, in pixels.
MIN_IMAGE_SIDE = 32
#: Smallest defect size (longest extent), in pixels.
MIN_SIZE = 3.0
#: Contrast range; below the minimum a soft defect may not change a single 8-bit grey level.
MIN_CONTRAST, MAX_CONTRAST = 0.01, 1.0

RandomState = int | np.random.Generator | None

_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class DefectSpec:
    """What defect to make; see the module docstring for each kind's meaning of contrast.

    Attributes:
        kind: One of :data:`KINDS`.
        size: Longest extent of the defect in pixels, at least 3 and at most half the
            image's shorter side.
        contrast: Strength in ``[0.01, 1]``: for most kinds the strongest intensity
            change, as a fraction of full scale.
    """

    kind: str
    size: float
    contrast: float = 0.2


@dataclass
class _Patch:
    """A defect drawn in a window of the image.

    Attributes:
        y: Top row of the window in the image.
        x: Left column of the window in the image.
        values: ``(h, w, C)`` float32 new intensities in ``[0, 1]``.
        region: ``(h, w)`` bool, where the defect may change the image.
    """

    y: int
    x: int
    values: np.ndarray
    region: np.ndarray


def make_defect(
    image: np.ndarray,
    spec: DefectSpec,
    *,
    random_state: RandomState,
    source: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Put one synthetic defect into a good image.

    Args:
        image: ``(H, W)`` gray or ``(H, W, 3)`` RGB array, uint8 or uint16, both sides at
            least :data:`MIN_IMAGE_SIDE`.
        spec: Kind, size and contrast of the defect.
        random_state: Seed or generator for every random choice (placement, shape,
            polarity); the same seed and inputs give the same output.
        source: Optional other good image (same layout rules, any size at least the
            defect's window) that ``cutpaste`` and ``poisson`` take their patch from;
            by default they take it from another place in ``image``.

    Returns:
        ``(defective, mask)``: ``defective`` has the shape and dtype of ``image``;
        ``mask`` is an ``(H, W)`` bool array, True exactly where the image changed
        (see the module docstring).

    Raises:
        InvalidParameterError: unknown kind, or size or contrast out of range.
        InvalidImageError: ``image`` or ``source`` of an unsupported shape or dtype, or
            an image without the structure a ``missing``, ``deform`` or ``poisson``
            defect needs to change anything.
    """
    image = _check_image(image, "image")
    kind, size, contrast = _check_spec(spec, image.shape[:2])
    rng = np.random.default_rng(random_state)
    scale = _full_scale(image.dtype)
    values = _channels_last(image).astype(np.float32) / np.float32(scale)
    if source is None:
        donor = values
    else:
        source = _check_image(source, "source")
        donor = _match_channels(source.astype(np.float32) / np.float32(_full_scale(source.dtype)), values.shape[2])

    draw = _DRAWERS[kind]
    # Content-driven kinds can land where they change little (a quarter of their region or
    # less): redraw a few times from the same generator, which keeps the result seeded,
    # and keep the attempt that changed most.
    attempts = []
    for _ in range(4 if kind in _CONTENT_KINDS else 1):
        patch = draw(values, size, contrast, rng, donor)
        defective, mask = _compose(image, patch, scale)
        cover = mask.sum() / max(int(patch.region.sum()), 1)
        attempts.append((cover, len(attempts), defective, mask))
        if cover >= 0.25:
            break
    _, _, defective, mask = max(attempts, key=lambda attempt: attempt[:2])
    if not mask.any():
        raise InvalidImageError(
            f"a {kind!r} defect of size {size:g} changed no pixel by a grey level: the image has too little "
            "structure or contrast there; use a textured image or another kind"
        )
    return defective, mask


# --------------------------------------------------------------------------- checks


def _check_image(image: np.ndarray, label: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"{label}: expected a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InvalidImageError(f"{label}: expected shape (H, W) or (H, W, 3), got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise InvalidImageError(f"{label}: expected dtype uint8 or uint16, got {image.dtype}")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise InvalidImageError(
            f"{label}: both sides must be at least {MIN_IMAGE_SIDE} px, got shape {image.shape}"
        )
    return image


def _check_spec(spec: DefectSpec, shape: tuple[int, int]) -> tuple[str, float, float]:
    kind = getattr(spec, "kind", None)
    if kind not in KINDS:
        raise InvalidParameterError(f"unknown defect kind {kind!r}; expected one of {', '.join(KINDS)}")
    largest = min(shape) / 2
    try:
        size = float(spec.size)
        contrast = float(spec.contrast)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"size and contrast must be numbers, got size={spec.size!r}, contrast={spec.contrast!r}"
        ) from None
    if not (math.isfinite(size) and MIN_SIZE <= size <= largest):
        raise InvalidParameterError(
            f"size must be between {MIN_SIZE:g} and {largest:g} px (half the shorter side of a "
            f"{shape[0]} x {shape[1]} image), got {spec.size!r}"
        )
    if not (math.isfinite(contrast) and MIN_CONTRAST <= contrast <= MAX_CONTRAST):
        raise InvalidParameterError(
            f"contrast must be between {MIN_CONTRAST:g} and {MAX_CONTRAST:g}, got {spec.contrast!r}"
        )
    return kind, size, contrast


def _full_scale(dtype: np.dtype) -> float:
    return 65535.0 if dtype == np.uint16 else 255.0


def _match_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """A donor image as ``(H, W, channels)`` float32, converting gray and colour as needed."""
    if values.ndim == 2:
        values = values[:, :, None]
    if values.shape[2] == channels:
        return values
    if channels == 3:
        return np.repeat(values, 3, axis=2)
    return (values @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]


# --------------------------------------------------------------------------- composition


def _compose(image: np.ndarray, patch: _Patch, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a patch, keep the pixels it changes by a grey level, and build the mask."""
    h, w = patch.region.shape
    window = (slice(patch.y, patch.y + h), slice(patch.x, patch.x + w))
    old = _channels_last(image[window])
    new = np.clip(np.rint(patch.values * np.float32(scale)), 0, scale).astype(image.dtype)
    level = 1 if scale == 255.0 else 257  # one 8-bit grey level at either bit depth
    changed = (np.abs(new.astype(np.int32) - old.astype(np.int32)) >= level).any(axis=2)
    # Textured content changes unevenly; closing one-pixel gaps keeps the mask one shape.
    local = ndimage.binary_closing(patch.region & changed, structure=_CROSS) & patch.region
    local = ndimage.binary_fill_holes(local)
    out = image.copy()
    _channels_last(out[window])[local] = new[local]  # basic indexing: a view into ``out``
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[window] = local
    return out, mask


def _channels_last(array: np.ndarray) -> np.ndarray:
    """``(h, w)`` or ``(h, w, C)`` as a ``(h, w, C)`` view."""
    return array if array.ndim == 3 else array[:, :, None]


# --------------------------------------------------------------------------- placement


def _uniform_corner(shape: tuple[int, ...], h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1))


def _structured_corner(values: np.ndarray, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
    """A window corner drawn with probability growing with the gradient energy inside it."""
    gray = values.mean(axis=2)
    energy = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    energy = cv2.boxFilter(energy, -1, (w, h), borderType=cv2.BORDER_REFLECT)
    # Candidate corners on a grid a quarter of the window apart, then a jitter within the
    # grid cell: the choice stays cheap on large images.
    stride = max(1, min(h, w) // 4)
    ys = np.arange(0, values.shape[0] - h + 1, stride)
    xs = np.arange(0, values.shape[1] - w + 1, stride)
    weight = energy[(ys + h // 2)[:, None], (xs + w // 2)[None, :]].astype(np.float64) ** 2 + 1e-12
    pick = int(rng.choice(weight.size, p=(weight / weight.sum()).ravel()))
    y = min(int(ys[pick // xs.size] + rng.integers(0, stride)), values.shape[0] - h)
    x = min(int(xs[pick % xs.size] + rng.integers(0, stride)), values.shape[1] - w)
    return y, x


def _donor_corner(
    donor: np.ndarray, same_image: bool, h: int, w: int, y: int, x: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Where to copy a patch from: anywhere in another image, elsewhere in the same one."""
    if donor.shape[0] < h or donor.shape[1] < w:
        raise InvalidImageError(f"source: shape {donor.shape[:2]} is smaller than the {h} x {w} defect window")
    ys = rng.integers(0, donor.shape[0] - h + 1, size=32)
    xs = rng.integers(0, donor.shape[1] - w + 1, size=32)
    if not same_image:
        return int(ys[0]), int(xs[0])
    apart = (np.abs(ys - y) >= h) | (np.abs(xs - x) >= w)
    # On a small image no candidate may be clear of the window: take the farthest one.
    pick = int(np.flatnonzero(apart)[0]) if apart.any() else int(np.argmax(np.hypot(ys - y, xs - x)))
    return int(ys[pick]), int(xs[pick])


def _polarity(level: float, contrast: float, rng: np.random.Generator, p_dark: float = 0.5) -> float:
    """-1 (darker) or +1 (brighter), switched when the drawn one would clip at 0 or 1."""
    sign = -1.0 if rng.random() < p_dark else 1.0
    room = level if sign < 0 else 1.0 - level
    other = 1.0 - level if sign < 0 else level
    return -sign if room < contrast and other > room else sign


# --------------------------------------------------------------------------- shapes


def _blob_radius(side: int, size: float, rng: np.random.Generator, irregularity: float) -> np.ndarray:
    """Normalised radius of an irregular rotated ellipse centred in a ``side`` x ``side`` window.

    Returns:
        ``(side, side)`` float32, below 1 inside the blob; its longest extent is at most
        ``size`` and near it.
    """
    aspect = rng.uniform(0.5, 1.0)
    theta = rng.uniform(0.0, math.pi)
    harmonics = rng.normal(0.0, irregularity, size=4)
    phases = rng.uniform(0.0, 2 * math.pi, size=4)
    orders = np.arange(2, 6, dtype=np.float32)

    def wobble(angle: np.ndarray) -> np.ndarray:
        terms = np.cos(angle[..., None] * orders + phases) @ harmonics
        return np.maximum(1.0 + terms, 0.4).astype(np.float32)

    # Scaled so that the farthest boundary point lies size / 2 from the centre.
    peak = float(wobble(np.linspace(0.0, 2 * math.pi, 128, endpoint=False)).max())
    coords = np.arange(side, dtype=np.float32) - (side - 1) / 2.0
    du, dv = coords[None, :], coords[:, None]
    c, s = math.cos(theta), math.sin(theta)
    a = c * du + s * dv
    b = (-s * du + c * dv) / aspect
    return np.hypot(a, b) * peak / (0.5 * size * wobble(np.arctan2(b, a)))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_noise(side: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``(side, side)`` float32 smooth noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-6)


def _window_side(size: float, margin: int) -> int:
    return int(math.ceil(size)) + 2 * margin


# --------------------------------------------------------------------------- kinds


def _scratch(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
             donor: np.ndarray) -> _Patch:
    width = float(np.clip(size * rng.uniform(0.03, 0.06), 1.0, 6.0))
    # Endpoints ``size`` apart; the inner control points bend the curve sideways but keep
    # their projections on the chord, so the longest extent stays close to ``size``.
    angle = rng.uniform(0.0, 2 * math.pi)
    chord = np.array([math.cos(angle), math.sin(angle)]) * size
    normal = np.array([-chord[1], chord[0]]) / size
    bend = rng.uniform(-0.3, 0.3, size=2) * size
    controls = np.stack([np.zeros(2), chord / 3 + normal * bend[0], 2 * chord / 3 + normal * bend[1], chord])
    t = np.linspace(0.0, 1.0, 25)
    basis = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=1)
    curve = basis @ controls
    margin = int(math.ceil(width)) + 2
    low = curve.min(axis=0)
    extent = np.ceil(curve.max(axis=0) - low).astype(int) + 2 * margin
    h, w = int(extent[1]), int(extent[0])
    y, x = _uniform_corner(values.shape, h, w, rng)
    points = (curve - low + margin).astype(np.float32)

    py, px = np.mgrid[0:h, 0:w].astype(np.float32)
    best = np.full((h, w), np.inf, dtype=np.float32)
    best_t = np.zeros((h, w), dtype=np.float32)
    # One vectorised pass per curve segment (24), not per pixel.
    for j in range(len(points) - 1):
        a, d = points[j], points[j + 1] - points[j]
        u = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
        dist = np.hypot(px - a[0] - u * d[0], py - a[1] - u * d[1])
        closer = dist < best
        best = np.where(closer, dist, best)
        best_t = np.where(closer, t[j] + u * (t[j + 1] - t[j]), best_t)
    half = 0.5 * width * np.sqrt(np.sin(np.pi * best_t)) + 0.25  # tapers where the tool lifted
    alpha = np.clip(half + 0.5 - best, 0.0, 1.0)  # one-pixel anti-aliased edge
    window = values[y:y + h, x:x + w]
    sign = _polarity(float(window.mean()), contrast, rng)
    return _Patch(y, x, window + (sign * contrast) * alpha[:, :, None], alpha > 0)


def _spot(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
          donor: np.ndarray) -> _Patch:
    side = _window_side(size, 2)
    y, x = _uniform_corner(values.shape, side, side, rng)
    r = _blob_radius(side, size, rng, irregularity=0.08)
    alpha = _smoothstep((1.0 - r) / 0.35)
    window = values[y:y + side, x:x + side]
    sign = _polarity(float(window.mean()), contrast, rng)
    return _Patch(y, x, window + (sign * contrast) * alpha[:, :, None], r < 1.0)


def _stain(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
           donor: np.ndarray) -> _Patch:
    side = _window_side(size, 2)
    y, x = _uniform_corner(values.shape, side, side, rng)
    r = _blob_radius(side, size, rng, irregularity=0.12)
    body = _smoothstep((1.0 - r) / 0.5) * (0.8 + 0.2 * np.tanh(_smooth_noise(side, max(size / 8, 1.0), rng)))
    # Liquid dries from the rim: a denser ring just inside the edge.
    ring = 0.35 * np.exp(-(((r - 0.85) / 0.1) ** 2)) * (r < 1.0)
    alpha = np.clip(body + ring, 0.0, 1.0)
    window = values[y:y + side, x:x + side]
    sign = _polarity(float(window.mean()), contrast, rng, p_dark=0.8)
    tint = np.ones(values.shape[2], dtype=np.float32)
    if values.shape[2] == 3 and sign < 0:
        # Oil and rust absorb blue most: a darkening stain turns brownish.
        warm = rng.uniform(0.15, 0.45)
        tint = np.array([1.0 - warm, 1.0 - warm / 2, 1.0], dtype=np.float32)
    return _Patch(y, x, window + (sign * contrast) * alpha[:, :, None] * tint, r < 1.0)


def _brightness(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
                donor: np.ndarray) -> _Patch:
    side = _window_side(size, 2)
    y, x = _uniform_corner(values.shape, side, side, rng)
    r = _blob_radius(side, size, rng, irregularity=0.05)
    alpha = np.clip(1.0 - r * r, 0.0, 1.0) ** 2  # no edge at all: a lighting fault, not an object
    window = values[y:y + side, x:x + side]
    mean = window.mean(axis=(0, 1))
    offset = _polarity(float(mean.mean()), contrast, rng) * contrast
    gain = (1.0 if rng.random() < 0.5 else -1.0) * contrast
    change = offset + gain * (window - mean)
    return _Patch(y, x, window + alpha[:, :, None] * change, r < 1.0)


def _cutpaste(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
              donor: np.ndarray) -> _Patch:
    side = _window_side(size, 1)
    y, x = _uniform_corner(values.shape, side, side, rng)
    # A rotated rectangle whose diagonal, its longest extent, is ``size``.
    aspect = rng.uniform(0.3, 1.0)
    long_side = size / math.sqrt(1.0 + aspect * aspect)
    box = ((side / 2.0, side / 2.0), (long_side, long_side * aspect), float(rng.uniform(0.0, 180.0)))
    region = np.zeros((side, side), dtype=np.uint8)
    cv2.fillPoly(region, [np.rint(cv2.boxPoints(box)).astype(np.int32)], 1)
    sy, sx = _donor_corner(donor, donor is values, side, side, y, x, rng)
    patch = np.rot90(donor[sy:sy + side, sx:sx + side], k=int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    sign = _polarity(float(patch.mean()), contrast, rng)
    return _Patch(y, x, patch + sign * contrast, region.astype(bool))


def _poisson(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
             donor: np.ndarray) -> _Patch:
    side = _window_side(size, 3)  # seamlessClone needs a border around the mask
    y, x = _uniform_corner(values.shape, side, side, rng)
    region = _blob_radius(side, size, rng, irregularity=0.06) < 1.0
    # Gradient-domain blending keeps only the donor's texture, so take it from where there
    # is some, turned so that even a patch from the same place no longer matches.
    if donor.shape[0] < side or donor.shape[1] < side:
        raise InvalidImageError(f"source: shape {donor.shape[:2]} is smaller than the {side} x {side} defect window")
    sy, sx = _structured_corner(donor, side, side, rng)
    patch = np.rot90(donor[sy:sy + side, sx:sx + side], k=int(rng.integers(1, 4)))
    window = values[y:y + side, x:x + side]
    # seamlessClone takes 8-bit colour only: clone at 8 bits and add the change it made to
    # the original values, which keeps 16-bit detail outside the solved region.
    dst8 = _to_bgr8(window)
    mask8 = region.astype(np.uint8) * 255
    bx, by, bw, bh = cv2.boundingRect(mask8)
    cloned = cv2.seamlessClone(_to_bgr8(patch), dst8, mask8, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
    change = (cloned.astype(np.float32) - dst8.astype(np.float32)) / 255.0
    if values.shape[2] == 1:
        change = change.mean(axis=2, keepdims=True)
    return _Patch(y, x, window + change * _peak_gain(change, region, contrast, 4.0), region)


def _missing(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
             donor: np.ndarray) -> _Patch:
    side = _window_side(size, 4)
    y, x = _structured_corner(values, side, side, rng)
    region = _blob_radius(side, size, rng, irregularity=0.06) < 1.0
    window = values[y:y + side, x:x + side]
    mask8 = region.astype(np.uint8) * 255
    radius = max(3.0, size / 8)
    # Telea's method on float32 input returns garbage in OpenCV 5; 16-bit single channel
    # works and keeps the precision of either input depth.
    window16 = np.clip(np.rint(window * 65535.0), 0, 65535).astype(np.uint16)
    filled = np.stack(
        [cv2.inpaint(np.ascontiguousarray(window16[:, :, c]), mask8, radius, cv2.INPAINT_TELEA)
         for c in range(window.shape[2])],
        axis=2,
    ).astype(np.float32) / 65535.0
    change = filled - window
    return _Patch(y, x, window + change * _peak_gain(change, region, contrast, 1.0), region)


def _deform(values: np.ndarray, size: float, contrast: float, rng: np.random.Generator,
            donor: np.ndarray) -> _Patch:
    side = _window_side(size, 2)
    y, x = _structured_corner(values, side, side, rng)
    coords = np.arange(side, dtype=np.float32) - (side - 1) / 2.0
    r = np.hypot(coords[None, :], coords[:, None]) / (size / 2.0)
    # A compact bump: zero displacement on and outside the circle. Its steepest slope is
    # 1.54 / radius, so a push of at most 0.6 radius never folds the image over itself.
    bump = np.clip(1.0 - r * r, 0.0, 1.0) ** 2
    push = 0.3 * contrast * size
    angle = rng.uniform(0.0, 2 * math.pi)
    grid = np.arange(side, dtype=np.float32)
    map_x = grid[None, :] - np.float32(push * math.cos(angle)) * bump
    map_y = grid[:, None] - np.float32(push * math.sin(angle)) * bump
    window = values[y:y + side, x:x + side]
    warped = cv2.remap(np.ascontiguousarray(window), map_x.astype(np.float32), map_y.astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return _Patch(y, x, warped.reshape(window.shape), r < 1.0)


def _peak_gain(change: np.ndarray, region: np.ndarray, contrast: float, most: float) -> float:
    """The factor that brings the strongest change in ``region`` to ``contrast``, at most ``most``.

    The 99th percentile stands for the strongest change, so one odd pixel does not set it.
    """
    strength = np.abs(change).max(axis=2)[region]
    peak = float(np.percentile(strength, 99)) if strength.size else 0.0
    return most if peak * most <= contrast else contrast / peak


def _to_bgr8(values: np.ndarray) -> np.ndarray:
    """``(h, w, C)`` float in ``[0, 1]`` to ``(h, w, 3)`` uint8 (channel order is irrelevant here)."""
    out = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out)


_Drawer = Callable[[np.ndarray, float, float, np.random.Generator, np.ndarray], _Patch]

_DRAWERS: dict[str, _Drawer] = {
    "scratch": _scratch,
    "spot": _spot,
    "stain": _stain,
    "brightness": _brightness,
    "cutpaste": _cutpaste,
    "poisson": _poisson,
    "missing": _missing,
    "deform": _deform,
}
_CONTENT_KINDS = frozenset({"cutpaste", "poisson", "missing", "deform"})
