"""The demo product: a machined aluminium bracket on a fixture plate, rendered from scratch.

The quick start (``make demo``) trains on this set, so it has to behave like a real
inspection subject rather than noise. Every image is rendered from a height map:

* the part is a brushed aluminium plate with rounded corners and side notches, four
  countersunk corner holes, a chamfered centre bore, a slot and an engraved part number;
* surface normals come from the height map and are lit by a directional light from the
  upper left (Lambert plus a Blinn-Phong highlight), so chamfers show a bright and a
  dark rim and dents show as a bright and a dark crescent, as under a real spot light;
* the plate casts a soft shadow on a mottled fixture plate, seen through the holes;
* geometry is rendered at twice the output size and area-averaged, like a camera's
  pixels, so edges are anti-aliased.

Good parts vary the way good parts on a line do: a few pixels of shift, a degree or so of
rotation, light gain and a gentle gradient across the field, and a new realisation of the
brushed texture and of the background mottling in every image.

Defects (``test/<type>``), drawn in part coordinates so that they move with the part:

* ``scratch``: a thin curved V-groove of bright fresh metal, 1-2.5 px wide, 20-60 px long;
* ``stain``: an irregular brownish oil or coolant stain with soft edges, 6-20 px across;
* ``dent``: a shallow round or oval depression 8-18 px across, seen through its shading;
* ``missing_hole``: one corner hole or the slot was never machined;
* ``particle``: a dark foreign chip 5-12 px across, standing proud of the surface and
  casting a small shadow.

Ground-truth masks are exact: a defective image is rendered twice from the same random
draws, with and without the defect, the mask is where the two differ by at least
:data:`~anomaly.demo.dataset.MASK_LEVEL` grey levels (holes filled), and outside the mask the image is the
defect-free rendering, so nothing changes where the mask is 0.

Run ``python -m anomaly.demo.product OUT_DIR [--seed S]`` to write the set.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from anomaly.demo.dataset import add_set_options, exact_defect, is_int, write_set
from anomaly.errors import InvalidParameterError
from anomaly.progress import enable_progress

#: Defect folders of the test split, in the order they are written.
DEFECT_TYPES = ("scratch", "stain", "dent", "missing_hole", "particle")

_SUPERSAMPLE = 2  # geometry is rendered at twice the output size, then area-averaged
_THICKNESS = 5.0  # plate thickness in output pixels; sets the chamfer and shadow geometry
_ALU = np.array([0.74, 0.76, 0.79], dtype=np.float32)  # slightly cool aluminium albedo
_FIXTURE = np.array([0.20, 0.215, 0.235], dtype=np.float32)  # dark anodised fixture plate
_MARKING = "BR-204"
_BRUSHING = 0.035  # relative albedo variation of the brushing streaks
# Background mottling: relative amplitude and scale (px). PNG pays dearly for fine grain
# and sensor noise (each costs more than the whole part), so the background is smooth:
# at 256 px the view is an area-average of a larger sensor, where that noise is gone anyway.
_MOTTLING = 0.045
_MOTTLE_SCALE = 12.0


@dataclass(frozen=True)
class _Sample:
    """The random draws that make one good part image different from another."""

    shift: tuple[float, float]  # part centre offset from the image centre, output px
    angle: float  # part rotation, radians
    gain: float  # global illumination gain
    gradient: tuple[float, float]  # relative illumination change across x and y
    azimuth: float  # light direction, radians (pi/4 + jitter: upper left)
    texture_seed: int  # brushed texture and background mottling


@dataclass(frozen=True)
class _Defect:
    """One defect, in part coordinates (output px from the part centre)."""

    kind: str
    centre: tuple[float, float] = (0.0, 0.0)
    size: float = 0.0  # longest extent, output px
    strength: float = 0.0  # depth (px) or albedo change, depending on the kind
    curve: tuple[tuple[float, float], ...] = ()  # scratch: Bezier control points
    width: float = 0.0  # scratch width, output px
    shape: tuple[float, ...] = ()  # blob: aspect, orientation and boundary harmonics
    hole: int = -1  # missing_hole: which feature was not machined


def generate_product(
    out_dir: str | Path,
    *,
    category: str = "bracket",
    n_train: int = 60,
    n_test_good: int = 12,
    n_test_per_defect: int = 5,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the demo product in MVTec layout (see :func:`anomaly.demo.dataset.write_set`).

    Images are RGB uint8 PNGs of ``size x size``, defects of :data:`DEFECT_TYPES`. Every
    image draws from its own generator, so the bytes are identical on every run with the
    same arguments on the same machine, and changing one count does not change the other
    images.

    Args:
        out_dir, category, n_train, n_test_good, n_test_per_defect, seed: Where and how
            many, as for :func:`~anomaly.demo.dataset.write_set`.
        size: Image width and height in pixels (at least 64).

    Returns:
        The category folder ``<out_dir>/<category>``.

    Raises:
        InvalidParameterError: a count is negative, ``size`` is below 64 or the category
            name is not a plain folder name.
    """
    if not is_int(size) or size < 64:
        raise InvalidParameterError(f"size must be an integer of at least 64 pixels, got {size!r}")
    return write_set(out_dir, category=category, defect_types=DEFECT_TYPES, n_train=n_train,
                     n_test_good=n_test_good, n_test_per_defect=n_test_per_defect, seed=seed,
                     render_good=lambda rng: render_good(size, rng),
                     render_defective=lambda kind, rng: render_defective(size, kind, rng), desc="demo product")


def render_good(size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one good part.

    Args:
        size: Output width and height in pixels.
        rng: Source of every random choice for this image.

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    sample = _draw_sample(size, rng)
    return _quantise(_render(size, sample, None))


def render_defective(size: int, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one defective part and its exact mask.

    Args:
        size: Output width and height in pixels.
        kind: One of :data:`DEFECT_TYPES`.
        rng: Source of every random choice for this image.

    Returns:
        ``(image, mask)``: ``(size, size, 3)`` uint8 RGB image and ``(size, size)`` bool
        mask, True exactly where the defect changed the image.

    Raises:
        InvalidParameterError: unknown ``kind``.
    """
    if kind not in DEFECT_TYPES:
        raise InvalidParameterError(f"unknown defect type {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    sample = _draw_sample(size, rng)
    defect = _draw_defect(kind, size / 256.0, rng)
    composed, mask = exact_defect(_render(size, sample, None), _render(size, sample, defect))
    return _quantise(composed), mask


# --------------------------------------------------------------------------- random draws


def _draw_sample(size: int, rng: np.random.Generator) -> _Sample:
    k = size / 256.0
    return _Sample(
        shift=(float(rng.uniform(-3, 3) * k), float(rng.uniform(-3, 3) * k)),
        angle=math.radians(rng.uniform(-1.5, 1.5)),
        gain=float(rng.uniform(0.96, 1.04)),
        gradient=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        azimuth=math.radians(45.0 + rng.uniform(-4.0, 4.0)),
        texture_seed=int(rng.integers(2**31)),
    )


def _on_flat(u: np.ndarray, v: np.ndarray, k: float, margin: float) -> np.ndarray:
    """Which points lie on the flat top of the plate, ``margin`` px from any edge or the marking."""
    hole_sd = np.min([_feature_sd(u, v, k, f) for f in range(len(_features(k)))], axis=0)
    in_marking = (np.abs(u) < 34 * k) & (np.abs(v + 50 * k) < 10 * k)
    return (-_plate_sd(u, v, k) > margin) & (hole_sd > margin) & ~in_marking


def _candidates(k: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # 256 uniform draws over the plate's box; callers keep the first that fits. About a
    # third of them fit every defect drawn here, so running out ((2/3)**256) never happens.
    u = rng.uniform(-88 * k, 88 * k, size=256).astype(np.float32)
    v = rng.uniform(-60 * k, 60 * k, size=256).astype(np.float32)
    return u, v


def _draw_defect(kind: str, k: float, rng: np.random.Generator) -> _Defect:
    if kind == "scratch":
        u, v = _candidates(k, rng)
        length = (rng.uniform(20, 60, size=u.size) * k).astype(np.float32)
        direction = rng.uniform(0, 2 * math.pi, size=u.size)
        du, dv = 0.5 * length * np.cos(direction), 0.5 * length * np.sin(direction)
        # Both ends and the middle on the flat top; the curve may still graze a chamfer.
        fits = _on_flat(u, v, k, 3 * k) & _on_flat(u - du, v - dv, k, 3 * k) & _on_flat(u + du, v + dv, k, 3 * k)
        i = int(np.flatnonzero(fits)[0])
        p0 = np.array([u[i] - du[i], v[i] - dv[i]])
        p3 = np.array([u[i] + du[i], v[i] + dv[i]])
        chord = p3 - p0
        normal = np.array([-chord[1], chord[0]]) / length[i]
        bend = rng.uniform(-0.35, 0.35, size=2) * length[i]  # a slipping tool drags a curve
        p1 = p0 + chord / 3 + normal * bend[0]
        p2 = p0 + 2 * chord / 3 + normal * bend[1]
        return _Defect(kind, curve=tuple(tuple(map(float, p)) for p in (p0, p1, p2, p3)),
                       width=float(rng.uniform(1.2, 2.5) * k), strength=float(rng.uniform(0.7, 1.2)))
    if kind == "missing_hole":
        return _Defect(kind, hole=int(rng.choice([0, 1, 2, 3, 5])))  # the bore (4) is always cut
    low, high = {"stain": (6, 20), "dent": (8, 18), "particle": (5, 12)}[kind]
    extent = float(rng.uniform(low, high) * k)
    u, v = _candidates(k, rng)
    i = int(np.flatnonzero(_on_flat(u, v, k, extent / 2 + 4 * k))[0])
    aspect = rng.uniform(0.6, 1.0) if kind == "dent" else rng.uniform(0.55, 1.0)
    harmonics = rng.normal(0, 0.02 if kind == "dent" else 0.08, size=4)
    phases = rng.uniform(0, 2 * math.pi, size=4)
    shape = (float(aspect), float(rng.uniform(0, math.pi)), *map(float, harmonics), *map(float, phases))
    low, high = {"stain": (0.3, 0.5), "dent": (1.2, 2.2), "particle": (1.5, 2.5)}[kind]
    return _Defect(kind, centre=(float(u[i]), float(v[i])), size=extent,
                   strength=float(rng.uniform(low, high)), shape=shape)


# --------------------------------------------------------------------------- geometry


def _features(k: float) -> list[tuple[str, tuple[float, ...], float]]:
    """Holes and slot of the bracket: (shape, parameters, chamfer width), in output px."""
    return [
        ("circle", (-70 * k, -44 * k, 7 * k), 2.5 * k),
        ("circle", (70 * k, -44 * k, 7 * k), 2.5 * k),
        ("circle", (-70 * k, 44 * k, 7 * k), 2.5 * k),
        ("circle", (70 * k, 44 * k, 7 * k), 2.5 * k),
        ("circle", (0.0, -6 * k, 21 * k), 3.0 * k),
        ("slot", (0.0, 41 * k, 18 * k, 5.5 * k), 2.0 * k),
    ]


def _plate_sd(u: np.ndarray, v: np.ndarray, k: float) -> np.ndarray:
    """Signed distance (px, negative inside) to the plate outline: rounded rectangle with side notches."""
    a, b, r = 96 * k, 68 * k, 16 * k
    qx, qy = np.abs(u) - (a - r), np.abs(v) - (b - r)
    rect = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    notch = np.hypot(np.abs(u) - a, v) - 11 * k
    return np.maximum(rect, -notch)


def _feature_sd(u: np.ndarray, v: np.ndarray, k: float, index: int) -> np.ndarray:
    """Signed distance (px, negative inside the hole) to one hole or slot."""
    shape, p, _ = _features(k)[index]
    if shape == "circle":
        return np.hypot(u - p[0], v - p[1]) - p[2]
    return np.hypot(np.maximum(np.abs(u - p[0]) - p[2], 0), v - p[1]) - p[3]


def _blob(u: np.ndarray, v: np.ndarray, defect: _Defect) -> np.ndarray:
    """Normalised radius of an irregular ellipse: < 1 inside, 1 on its boundary."""
    aspect, theta = defect.shape[0], defect.shape[1]
    harmonics, phases = np.array(defect.shape[2:6]), np.array(defect.shape[6:10])
    du, dv = u - defect.centre[0], v - defect.centre[1]
    c, s = math.cos(theta), math.sin(theta)
    a = c * du + s * dv
    b = (-s * du + c * dv) / aspect
    angle = np.arctan2(b, a)
    orders = np.arange(2, 6, dtype=np.float32)
    wobble = 1.0 + np.tensordot(np.cos(angle[..., None] * orders + phases), harmonics, axes=([-1], [0]))
    # A floor keeps a rare large harmonic draw from pinching the outline through the centre.
    return np.hypot(a, b) / (0.5 * defect.size * np.maximum(wobble, 0.4).astype(np.float32))


def _bezier_distance(u: np.ndarray, v: np.ndarray, defect: _Defect) -> tuple[np.ndarray, np.ndarray]:
    """Distance (px) from every point to the scratch curve, and the curve parameter there."""
    t = np.linspace(0.0, 1.0, 33, dtype=np.float32)
    p = np.array(defect.curve, dtype=np.float32)
    basis = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=1)
    points = basis @ p
    best = np.full(u.shape, np.inf, dtype=np.float32)
    best_t = np.zeros(u.shape, dtype=np.float32)
    # A loop over the 32 segments, each one vectorised over the window.
    for j in range(len(points) - 1):
        a, d = points[j], points[j + 1] - points[j]
        w = np.clip(((u - a[0]) * d[0] + (v - a[1]) * d[1]) / float(d @ d), 0.0, 1.0)
        dist = np.hypot(u - a[0] - w * d[0], v - a[1] - w * d[1])
        closer = dist < best
        best = np.where(closer, dist, best)
        best_t = np.where(closer, t[j] + w * (t[j + 1] - t[j]), best_t)
    return best, best_t


# --------------------------------------------------------------------------- rendering


def _render(size: int, sample: _Sample, defect: _Defect | None) -> np.ndarray:
    """Noise-free rendering, ``(size, size, 3)`` float32 RGB in ``[0, 1]``."""
    k = size / 256.0
    ss = _SUPERSAMPLE
    big = size * ss
    tex_rng = np.random.default_rng(sample.texture_seed)

    # Part coordinates of every supersampled pixel: undo the pose.
    grid = (np.arange(big, dtype=np.float32) + 0.5) / ss - size / 2
    x = grid[None, :] - sample.shift[0]
    y = grid[:, None] - sample.shift[1]
    c, s = math.cos(sample.angle), math.sin(sample.angle)
    u = (c * x + s * y).astype(np.float32)
    v = (-s * x + c * y).astype(np.float32)

    # Height map (px): the top plane less the deepest chamfer reaching each point.
    features = _features(k)
    outer = 2.5 * k
    plate = _plate_sd(u, v, k)
    below = outer - np.clip(-plate, 0, outer)
    holes = np.full(u.shape, np.inf, dtype=np.float32)
    for index, (_, _, chamfer) in enumerate(features):
        if defect is not None and defect.kind == "missing_hole" and defect.hole == index:
            continue
        sd = _feature_sd(u, v, k, index)
        holes = np.minimum(holes, sd)
        below = np.maximum(below, chamfer - np.clip(sd, 0, chamfer))
    height = _THICKNESS - below
    coverage = np.clip(0.5 - np.maximum(plate, -holes) * ss, 0.0, 1.0)

    # Brushing: long streaks along the part's x axis, attached to the part (remapped).
    noise = tex_rng.standard_normal((big, big)).astype(np.float32)
    streaks = cv2.blur(noise, (int(81 * k) | 1, 1)) * math.sqrt(81 * k)
    streaks += 0.5 * cv2.blur(noise, (int(15 * k) | 1, 1)) * math.sqrt(15 * k)
    map_x = u * ss + big / 2 - 0.5
    map_y = v * ss + big / 2 - 0.5
    streaks = cv2.remap(streaks, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    marking = cv2.remap(_marking(big, k), map_x, map_y, cv2.INTER_LINEAR)

    albedo = np.broadcast_to(_ALU, u.shape + (3,)) * (1.0 + _BRUSHING * streaks)[:, :, None]
    albedo = albedo * (1.0 - 0.45 * marking)[:, :, None]
    height = height + 0.02 * streaks - 0.6 * marking
    shine = np.clip(1.0 + 0.25 * streaks, 0.3, 2.0)
    if defect is not None:
        height, albedo, shine = _apply_defect(defect, u, v, height, albedo, shine, k)

    part = _shade(height, albedo, shine, sample.azimuth, ss)
    part_premult = cv2.resize(part * coverage[:, :, None], (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(coverage, (size, size), interpolation=cv2.INTER_AREA)

    background = _background(size, tex_rng, alpha, sample.azimuth)
    image = background * (1.0 - alpha[:, :, None]) + part_premult
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    light = sample.gain * (1.0 + sample.gradient[0] * ramp[None, :] + sample.gradient[1] * ramp[:, None])
    return (image * light[:, :, None]).astype(np.float32)


def _marking(big: int, k: float) -> np.ndarray:
    """Engraved part number on the supersampled part canvas, float32 in ``[0, 1]``."""
    canvas = np.zeros((big, big), dtype=np.uint8)
    scale = 0.42 * k * _SUPERSAMPLE
    thickness = max(1, round(1.2 * k * _SUPERSAMPLE))
    (w, h), _ = cv2.getTextSize(_MARKING, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    centre_y = big / 2 - 50 * k * _SUPERSAMPLE
    org = (int(round(big / 2 - w / 2)), int(round(centre_y + h / 2)))
    cv2.putText(canvas, _MARKING, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _apply_defect(
    defect: _Defect,
    u: np.ndarray,
    v: np.ndarray,
    height: np.ndarray,
    albedo: np.ndarray,
    shine: np.ndarray,
    k: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if defect.kind == "scratch":
        dist, t = _bezier_distance(u, v, defect)
        # Tools enter and leave the surface: the groove tapers to nothing at both ends.
        half = 0.5 * defect.width * np.sqrt(np.clip(np.sin(np.pi * t), 0.0, 1.0)) + 0.25 * k
        profile = np.clip(1.0 - dist / half, 0.0, 1.0)
        height = height - defect.strength * half * profile
        albedo = albedo * (1.0 + 0.25 * profile)[:, :, None]
        shine = shine * (1.0 + 1.5 * profile)
    elif defect.kind == "stain":
        r = _blob(u, v, defect)
        profile = np.clip((1.0 - r) / 0.45, 0.0, 1.0) ** 1.5
        # Oil dries from the rim inward: a slightly darker ring near the edge.
        profile = profile * (1.0 + 0.35 * np.exp(-(((r - 0.8) / 0.12) ** 2)))
        tint = np.array([1.0, 1.12, 1.45], dtype=np.float32)  # absorbs blue most: brownish
        albedo = albedo * np.clip(1.0 - defect.strength * profile[:, :, None] * tint, 0.05, 1.0)
        shine = shine * (1.0 - 0.7 * np.clip(profile, 0, 1))
    elif defect.kind == "dent":
        r = _blob(u, v, defect)
        height = height - defect.strength * np.clip(1.0 - r**2, 0.0, 1.0) ** 2
    elif defect.kind == "particle":
        r = _blob(u, v, defect)
        body = np.clip((1.0 - r) / 0.35, 0.0, 1.0)
        height = height + defect.strength * body ** 0.5
        grey = np.array([0.30, 0.27, 0.24], dtype=np.float32)  # oxidised chip, brownish grey
        albedo = albedo * (1.0 - body[:, :, None]) + grey * body[:, :, None]
        shine = shine * (1.0 - 0.8 * body)
        # A small cast shadow away from the light, on the lower right.
        shifted = _Defect("particle", centre=(defect.centre[0] + 1.8 * k, defect.centre[1] + 1.8 * k),
                          size=defect.size, shape=defect.shape)
        shadow = np.clip((1.0 - _blob(u, v, shifted)) / 0.5, 0.0, 1.0) * (1.0 - body)
        albedo = albedo * (1.0 - 0.5 * shadow)[:, :, None]
    return height, albedo, shine


def _shade(height: np.ndarray, albedo: np.ndarray, shine: np.ndarray, azimuth: float, ss: int) -> np.ndarray:
    """Lambert + Blinn-Phong shading of a height map (px) under a light from the upper left."""
    # Sobel's 3x3 kernel sums 8 unit differences; ss converts to slope per output pixel.
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * (ss / 8.0)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * (ss / 8.0)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    elevation = math.radians(50.0)
    light = np.array([-math.cos(elevation) * math.cos(azimuth), -math.cos(elevation) * math.sin(azimuth),
                      math.sin(elevation)], dtype=np.float32)
    diffuse = np.clip((-gx * light[0] - gy * light[1] + light[2]) / norm, 0.0, 1.0)
    halfway = light + np.array([0.0, 0.0, 1.0], dtype=np.float32)
    halfway /= np.linalg.norm(halfway)
    n_dot_h = np.clip((-gx * halfway[0] - gy * halfway[1] + halfway[2]) / norm, 0.0, 1.0)
    specular = shine * n_dot_h**60
    value = albedo * (0.22 + 0.78 * diffuse)[:, :, None] + 0.35 * specular[:, :, None]
    return value.astype(np.float32)


def _background(size: int, rng: np.random.Generator, alpha: np.ndarray, azimuth: float) -> np.ndarray:
    """Bead-blasted fixture plate with the part's soft shadow, ``(size, size, 3)`` float32."""
    k = size / 256.0
    coarse = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), _MOTTLE_SCALE * k)
    coarse /= coarse.std() + 1e-6
    level = 1.0 + _MOTTLING * coarse
    # The plate stands _THICKNESS px proud; its shadow falls away from the light.
    offset = _THICKNESS * 0.9 * k
    shift = np.float32([[1, 0, offset * math.cos(azimuth)], [0, 1, offset * math.sin(azimuth)]])
    shadow = cv2.warpAffine(alpha, shift, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), 2.5 * k)
    level = level * (1.0 - 0.6 * shadow)
    return (_FIXTURE[None, None, :] * level[:, :, None]).astype(np.float32)


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m anomaly.demo.product OUT_DIR [--seed S]``: write the demo product."""
    parser = argparse.ArgumentParser(prog="python -m anomaly.demo.product", description=__doc__.splitlines()[0])
    add_set_options(parser, category="bracket", n_train=60, n_test_good=12)
    args = parser.parse_args(argv)
    enable_progress(True)
    root = generate_product(args.out_dir, category=args.category, n_train=args.n_train,
                            n_test_good=args.n_test_good, n_test_per_defect=args.n_test_per_defect,
                            size=args.size, seed=args.seed)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
