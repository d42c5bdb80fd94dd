"""The assembly demo product: a small populated board, for fool-proofing checks.

A green board carries nine components: two ICs (U1, U2) with a pin-1 dot and a notch,
two electrolytic capacitors (C1, C2) with a polarity stripe, two resistors (R1, R2) with
different colour bands, two LEDs (D1 red, D2 green) and a connector (J1) with a keying
notch. Every footprint has silver pads and a white silkscreen outline, so a missing
component leaves its bare pads in view.

Good boards vary the way they do on a line: a few pixels of shift, a degree or so of
rotation, a light gain and gradient, half a pixel of placement jitter per component, and
sensor noise. Defects (``test/<type>``), the classical fool-proofing faults:

* ``missing``: one component was not placed;
* ``swapped``: R1 and R2, or D1 and D2, traded places;
* ``rotated``: an IC, a capacitor or the connector was placed turned by 180 degrees.

Masks are exact, as for :mod:`anomaly.demo.product`: a defective board is rendered twice
from the same random draws, with and without the fault, and the mask is where the two
differ by at least :data:`~anomaly.demo.dataset.MASK_LEVEL` grey levels.

Run ``python -m anomaly.demo.assembly OUT_DIR [--seed S]`` to write the set.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from anomaly.demo.dataset import add_set_options, exact_defect, is_int, write_set
from anomaly.errors import InvalidParameterError

#: Defect folders of the test split, in the order they are written.
DEFECT_TYPES = ("missing", "swapped", "rotated")

_SUPERSAMPLE = 2
_SHIFT_BITS = 4  # sub-pixel precision of OpenCV's polygon drawing
_BOARD_FRACTION = 0.82  # board side / image side

_BOARD = (38, 112, 64)
_PAD = (196, 196, 188)
_SILK = (232, 236, 230)
_BACKGROUND = (70, 72, 78)


@dataclass(frozen=True)
class Component:
    """One placed component, in board units (the board spans ``[0, 1]`` both ways).

    Attributes:
        name: Reference designator (``"U1"``, ``"C2"``...).
        kind: ``"ic"``, ``"cap"``, ``"resistor"``, ``"led"`` or ``"connector"``.
        center: ``(u, v)`` on the board.
        size: ``(width, height)``; for a capacitor ``(diameter, diameter)``.
        turned: Placed rotated by 180 degrees.
        colors: Body colour, then marking colours (bands of a resistor).
        present: False when the component was never placed.
    """

    name: str
    kind: str
    center: tuple[float, float]
    size: tuple[float, float]
    turned: bool = False
    colors: tuple[tuple[int, int, int], ...] = ()
    present: bool = True


LAYOUT: tuple[Component, ...] = (
    Component("U1", "ic", (0.28, 0.26), (0.30, 0.15), colors=((28, 28, 32), (210, 210, 210))),
    Component("U2", "ic", (0.71, 0.26), (0.30, 0.15), colors=((28, 28, 32), (210, 210, 210))),
    Component("C1", "cap", (0.21, 0.62), (0.17, 0.17), colors=((34, 52, 140), (205, 210, 220))),
    Component("C2", "cap", (0.45, 0.62), (0.17, 0.17), colors=((34, 52, 140), (205, 210, 220))),
    Component("R1", "resistor", (0.76, 0.53), (0.20, 0.065),
              colors=((222, 196, 150), (120, 70, 30), (20, 20, 20), (210, 40, 30))),
    Component("R2", "resistor", (0.76, 0.68), (0.20, 0.065),
              colors=((222, 196, 150), (235, 210, 40), (140, 60, 170), (240, 140, 30))),
    Component("D1", "led", (0.64, 0.86), (0.085, 0.065), colors=((205, 35, 35), (250, 235, 235))),
    Component("D2", "led", (0.83, 0.86), (0.085, 0.065), colors=((40, 185, 70), (235, 250, 235))),
    Component("J1", "connector", (0.30, 0.87), (0.34, 0.085), colors=((236, 232, 214), (60, 60, 60))),
)


@dataclass(frozen=True)
class _Pose:
    shift: tuple[float, float]  # output pixels
    angle: float  # radians
    gain: float
    gradient: tuple[float, float]
    jitter: tuple[tuple[float, float], ...]  # per component, board units
    noise_seed: int


def generate_assembly(
    out_dir: str | Path,
    *,
    category: str = "assembly",
    n_train: int = 30,
    n_test_good: int = 8,
    n_test_per_defect: int = 5,
    size: int = 256,
    noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write the assembly product in MVTec layout (see :func:`anomaly.demo.dataset.write_set`).

    Images are RGB uint8 PNGs of ``size x size``, defects of :data:`DEFECT_TYPES`. Every
    image has its own generator, so the set is identical on every run.

    Args:
        out_dir, category, n_train, n_test_good, n_test_per_defect, seed: Where and how
            many, as for :func:`~anomaly.demo.dataset.write_set`.
        size: Image width and height in pixels (64 to 1024).
        noise: Sensor noise, standard deviation in grey levels. The default 0 keeps a
            256 x 256 PNG near 30 kB (noise does not compress: 1.2 levels triple it).

    Returns:
        The category folder.

    Raises:
        InvalidParameterError: a negative count, a size out of range, or a category
            that is not a plain folder name.
    """
    if not is_int(size) or not 64 <= size <= 1024:
        raise InvalidParameterError(f"size must be an integer from 64 to 1024 pixels, got {size!r}")
    if not float(noise) >= 0:
        raise InvalidParameterError(f"noise must be >= 0 grey levels, got {noise!r}")
    return write_set(out_dir, category=category, defect_types=DEFECT_TYPES, n_train=n_train,
                     n_test_good=n_test_good, n_test_per_defect=n_test_per_defect, seed=seed,
                     render_good=lambda rng: render_good(size, rng, noise=noise),
                     render_defective=lambda kind, rng: render_defective(size, kind, rng, noise=noise),
                     desc="assembly product")


def render_good(size: int, rng: np.random.Generator, *, noise: float = 0.0) -> np.ndarray:
    """Render one good board.

    Args:
        size: Output width and height in pixels.
        rng: Source of every random choice for this image.
        noise: Sensor noise in grey levels (standard deviation).

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    return render_layout(size, LAYOUT, rng, noise=noise)


def render_defective(
    size: int, kind: str, rng: np.random.Generator, *, noise: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Render one faulty board and its exact mask.

    Args:
        size: Output width and height in pixels.
        kind: One of :data:`DEFECT_TYPES`.
        rng: Source of every random choice for this image.
        noise: Sensor noise in grey levels (standard deviation).

    Returns:
        ``(image, mask)``: ``(size, size, 3)`` uint8 RGB and ``(size, size)`` bool, True
        exactly where the fault changed the board.

    Raises:
        InvalidParameterError: unknown ``kind``.
    """
    if kind not in DEFECT_TYPES:
        raise InvalidParameterError(f"unknown defect type {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    pose = _draw_pose(size, rng)
    faulty = apply_fault(LAYOUT, kind, rng)
    composed, mask = exact_defect(_render(size, LAYOUT, pose), _render(size, faulty, pose))
    return _finish(composed, pose, noise), mask


def render_layout(
    size: int, layout: tuple[Component, ...], rng: np.random.Generator, *, noise: float = 0.0
) -> np.ndarray:
    """Render a board with any layout (e.g. a legitimate colour variant of a component).

    The pose, light and noise are drawn from ``rng`` exactly as for :func:`render_good`,
    so two layouts rendered from generators with the same seed differ only where their
    components differ.

    Args:
        size: Output width and height in pixels.
        layout: Components in the order of :data:`LAYOUT` (placement jitter is drawn per
            position in that order).
        rng: Source of every random choice for this image.
        noise: Sensor noise in grey levels (standard deviation).

    Returns:
        ``(size, size, 3)`` uint8 RGB image.
    """
    if len(layout) != len(LAYOUT):
        raise InvalidParameterError(f"layout must have {len(LAYOUT)} components like LAYOUT, got {len(layout)}")
    pose = _draw_pose(size, rng)
    return _finish(_render(size, tuple(layout), pose), pose, noise)


def apply_fault(layout: tuple[Component, ...], kind: str, rng: np.random.Generator) -> tuple[Component, ...]:
    """The layout with one fool-proofing fault of ``kind`` (see :data:`DEFECT_TYPES`)."""
    parts = list(layout)
    names = [c.name for c in parts]
    if kind == "missing":
        i = int(rng.integers(len(parts)))
        parts[i] = replace(parts[i], present=False)
    elif kind == "swapped":
        a, b = (("R1", "R2"), ("D1", "D2"))[int(rng.integers(2))]
        i, j = names.index(a), names.index(b)
        parts[i], parts[j] = replace(parts[i], colors=parts[j].colors), replace(parts[j], colors=parts[i].colors)
    elif kind == "rotated":
        choices = [i for i, c in enumerate(parts) if c.kind in ("ic", "cap", "connector")]
        i = choices[int(rng.integers(len(choices)))]
        parts[i] = replace(parts[i], turned=not parts[i].turned)
    else:
        raise InvalidParameterError(f"unknown defect type {kind!r}; expected one of {', '.join(DEFECT_TYPES)}")
    return tuple(parts)


# --------------------------------------------------------------------------- drawing


def _draw_pose(size: int, rng: np.random.Generator) -> _Pose:
    k = size / 256.0
    return _Pose(
        shift=(float(rng.uniform(-4, 4) * k), float(rng.uniform(-4, 4) * k)),
        angle=math.radians(rng.uniform(-1.5, 1.5)),
        gain=float(rng.uniform(0.95, 1.05)),
        gradient=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        jitter=tuple((float(rng.uniform(-0.5, 0.5)) / 210.0, float(rng.uniform(-0.5, 0.5)) / 210.0)
                     for _ in LAYOUT),
        noise_seed=int(rng.integers(2**31)),
    )


class _Canvas:
    """Draws in board units onto a supersampled image through the board's pose."""

    def __init__(self, size: int, pose: _Pose) -> None:
        self.big = size * _SUPERSAMPLE
        self.image = np.zeros((self.big, self.big, 3), np.uint8)
        self.image[:] = _BACKGROUND
        self.side = _BOARD_FRACTION * self.big
        c, s = math.cos(pose.angle), math.sin(pose.angle)
        self.rotation = np.array([[c, -s], [s, c]])
        self.origin = np.array([self.big / 2 + pose.shift[0] * _SUPERSAMPLE, self.big / 2 + pose.shift[1] * _SUPERSAMPLE])

    def to_px(self, uv: np.ndarray) -> np.ndarray:
        return (np.asarray(uv, float) - 0.5) * self.side @ self.rotation.T + self.origin

    def polygon(self, uv: np.ndarray, color) -> None:
        pts = np.round(self.to_px(uv) * (1 << _SHIFT_BITS)).astype(np.int32)
        cv2.fillPoly(self.image, [pts], color, lineType=cv2.LINE_AA, shift=_SHIFT_BITS)

    def outline(self, uv: np.ndarray, color, width: float) -> None:
        pts = np.round(self.to_px(uv) * (1 << _SHIFT_BITS)).astype(np.int32)
        thickness = max(1, int(round(width * self.side)))
        cv2.polylines(self.image, [pts], True, color, thickness, lineType=cv2.LINE_AA, shift=_SHIFT_BITS)

    def rect(self, center, size, color, turned_about=None) -> None:
        self.polygon(_rect(center, size, turned_about), color)

    def disc(self, center, radius: float, color) -> None:
        self.polygon(_arc(center, radius, 0.0, 2 * math.pi), color)


def _rect(center, size, turned_about=None) -> np.ndarray:
    cx, cy = center
    w, h = size
    pts = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]])
    return _turn(pts, turned_about)


def _arc(center, radius: float, start: float, stop: float, n: int = 48) -> np.ndarray:
    t = np.linspace(start, stop, n)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def _turn(pts: np.ndarray, about) -> np.ndarray:
    """Rotate points by 180 degrees about ``about`` (``None`` = leave them)."""
    if about is None:
        return pts
    return 2 * np.asarray(about, float) - pts


def _render(size: int, layout: tuple[Component, ...], pose: _Pose) -> np.ndarray:
    """The board as float32 RGB in ``[0, 1]``, before light, noise and quantisation."""
    canvas = _Canvas(size, pose)
    canvas.polygon(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float), _BOARD)
    for hole in ((0.05, 0.05), (0.95, 0.05), (0.05, 0.95), (0.95, 0.95)):
        canvas.disc(hole, 0.025, (180, 180, 170))
        canvas.disc(hole, 0.015, (20, 20, 22))
    for part, jitter in zip(LAYOUT, pose.jitter):
        _draw_footprint(canvas, replace(part, center=(part.center[0] + jitter[0], part.center[1] + jitter[1])))
    for part, jitter in zip(layout, pose.jitter):
        if part.present:
            _draw_component(canvas, replace(part, center=(part.center[0] + jitter[0], part.center[1] + jitter[1])))
    image = cv2.resize(canvas.image, (size, size), interpolation=cv2.INTER_AREA)
    return image.astype(np.float32) / 255.0


def _draw_footprint(canvas: _Canvas, part: Component) -> None:
    """Pads and silkscreen: what the bare board shows where the component goes."""
    cx, cy = part.center
    w, h = part.size
    margin = 0.018
    canvas.outline(_rect(part.center, (w + 2 * margin, h + 2 * margin)), _SILK, 0.004)
    if part.kind == "ic":
        for i in range(6):
            x = cx - w / 2 + w * (i + 0.5) / 6
            for y in (cy - h / 2 - 0.012, cy + h / 2 + 0.012):
                canvas.rect((x, y), (0.022, 0.03), _PAD)
    elif part.kind == "cap":
        for dx in (-w * 0.28, w * 0.28):
            canvas.rect((cx + dx, cy), (0.04, 0.05), _PAD)
        canvas.polygon(np.array([[cx - w / 2 - 0.03, cy - 0.012], [cx - w / 2 - 0.03, cy + 0.012],
                                 [cx - w / 2 - 0.012, cy]]), _SILK)  # "+" side marker
    elif part.kind in ("resistor", "led"):
        for dx in (-w / 2, w / 2):
            canvas.rect((cx + dx, cy), (0.035, h + 0.02), _PAD)
    elif part.kind == "connector":
        for i in range(5):
            canvas.rect((cx - w / 2 + w * (i + 0.5) / 5, cy), (0.03, 0.03), _PAD)


def _draw_component(canvas: _Canvas, part: Component) -> None:
    cx, cy = part.center
    w, h = part.size
    about = part.center if part.turned else None
    body, *marks = part.colors
    if part.kind == "ic":
        for i in range(6):
            x = cx - w / 2 + w * (i + 0.5) / 6
            for y in (cy - h / 2 - 0.008, cy + h / 2 + 0.008):
                canvas.rect((x, y), (0.014, 0.024), (170, 170, 176))
        canvas.rect(part.center, (w, h), body)
        canvas.polygon(_turn(_arc((cx - w / 2, cy), h * 0.18, -math.pi / 2, math.pi / 2), about), (60, 60, 66))
        canvas.polygon(_turn(_arc((cx - w / 2 + 0.03, cy + h / 2 - 0.03), 0.013, 0, 2 * math.pi), about), marks[0])
        canvas.rect((cx + 0.03, cy), (w * 0.45, h * 0.16), (90, 90, 96), turned_about=about)  # printed type label
    elif part.kind == "cap":
        r = w / 2
        canvas.disc(part.center, r, body)
        canvas.polygon(_turn(_arc(part.center, r, math.radians(125), math.radians(235)), about), marks[0])
        canvas.disc(part.center, r * 0.35, (150, 160, 180))
        canvas.rect(part.center, (r * 0.5, 0.006), (40, 44, 60))
        canvas.rect(part.center, (0.006, r * 0.5), (40, 44, 60))
    elif part.kind == "resistor":
        canvas.rect(part.center, (w * 0.8, h), body)
        for i, color in enumerate(marks):
            canvas.rect((cx - w * 0.25 + i * w * 0.16, cy), (w * 0.07, h), color)
    elif part.kind == "led":
        canvas.rect(part.center, (w, h), body)
        canvas.disc(part.center, h * 0.25, marks[0])
    elif part.kind == "connector":
        canvas.rect(part.center, (w, h), body)
        for i in range(5):
            canvas.rect((cx - w / 2 + w * (i + 0.5) / 5, cy), (0.018, 0.018), (90, 90, 90))
        canvas.rect((cx + w / 2 - 0.02, cy - h / 2 + 0.012), (0.03, 0.024), marks[0], turned_about=about)  # key


def _finish(image: np.ndarray, pose: _Pose, noise: float) -> np.ndarray:
    """Light (gain and gradient), sensor noise and 8-bit quantisation."""
    size = image.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    light = pose.gain * (1.0 + pose.gradient[0] * ramp[None, :] + pose.gradient[1] * ramp[:, None])
    out = image * light[:, :, None]
    if noise > 0:
        out += np.random.default_rng(pose.noise_seed).normal(0.0, noise / 255.0, (size, size, 1)).astype(np.float32)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m anomaly.demo.assembly OUT_DIR [--seed S]``: write the assembly product."""
    parser = argparse.ArgumentParser(prog="python -m anomaly.demo.assembly", description=__doc__.splitlines()[0])
    add_set_options(parser, category="assembly", n_train=30, n_test_good=8)
    parser.add_argument("--noise", type=float, default=0.0, help="sensor noise in grey levels (default 0)")
    args = parser.parse_args(argv)
    root = generate_assembly(args.out_dir, category=args.category, n_train=args.n_train,
                             n_test_good=args.n_test_good, n_test_per_defect=args.n_test_per_defect,
                             size=args.size, noise=args.noise, seed=args.seed)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
