"""Look at the good images before choosing a model: sizes, shape, colour, spread, and whether they align.

What onboarding (:mod:`anomaly.onboarding`) needs to know about a product from its goods
alone: how large and how elongated the frames are (a 2.5 : 1 part squeezed into a square
loses its small defects' shape; a 1024 px frame shrunk to 256 px loses small defects
altogether), whether they are gray, whether every good has the same size and registers to
one template (only then do the classical, aligned models apply), and how much the goods
differ from each other.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from anomaly.accepted_input import is_gray
from anomaly.errors import DatasetError, InvalidImageError
from anomaly.imageio import ImageLike, as_image

log = logging.getLogger(__name__)

#: Goods registered to the first one to decide whether they align (more cost more, say little more).
ALIGN_SAMPLE = 8
#: ECC correlation every sampled good must reach against the first for the goods to count as aligned,
#: and the share of the template that must stay inside each image.
ALIGN_QUALITY = 0.8
ALIGN_OVERLAP = 0.9
#: Side the goods are shrunk to for the spread figure.
SPREAD_SIDE = 64


@dataclass(frozen=True)
class GoodsSurvey:
    """What the good images show.

    Attributes:
        n: How many goods.
        height, width: ``[smallest, largest]`` side in pixels.
        aspect: ``[smallest, largest]`` width / height.
        gray: Every good is gray (or colour with three equal channels).
        same_size: Every good has the same height and width.
        odd_sizes: Files (or indices) whose size differs from the most common one.
        aligned: The sampled goods register to the first within :data:`ALIGN_QUALITY`
            (``None`` where not tried: sizes differ).
        alignment_quality: The worst sampled good's ECC correlation with the first.
        spread: Mean per-pixel standard deviation across the goods, shrunk to
            :data:`SPREAD_SIDE` px and gray, over the mean intensity: how much goods differ.
        notes: What the survey concluded, in words.
    """

    n: int
    height: tuple[int, int]
    width: tuple[int, int]
    aspect: tuple[float, float]
    gray: bool
    same_size: bool
    odd_sizes: list[str] = field(default_factory=list)
    aligned: bool | None = None
    alignment_quality: float | None = None
    spread: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def elongation(self) -> float:
        """Long side over short side of the typical good (at least 1)."""
        mid = float(np.sqrt(self.aspect[0] * self.aspect[1]))
        return max(mid, 1.0 / mid)

    @property
    def short_side(self) -> int:
        """The smallest side among the goods."""
        return int(min(self.height[0], self.width[0]))

    @property
    def long_side(self) -> int:
        """The largest side among the goods."""
        return int(max(self.height[1], self.width[1]))

    @property
    def typical_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the largest good (what tiling must cover)."""
        return int(self.height[1]), int(self.width[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored with the onboarding record)."""
        out = asdict(self)
        out["elongation"] = round(self.elongation, 3)
        return out


def read_goods(images: Sequence[ImageLike], names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Decode every good, naming every file that cannot be read.

    Raises:
        DatasetError: fewer than 2 images, or files that are not readable images (all named).
    """
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    if len(images) < 2:
        raise DatasetError(f"onboarding needs at least 2 good images, got {len(images)}")
    arrays, bad = [], []
    for image, name in zip(images, names):
        try:
            arrays.append(as_image(image))
        except InvalidImageError as exc:
            bad.append(f"{name} ({exc})")
    if bad:
        raise DatasetError(f"{len(bad)} good image(s) could not be read: " + "; ".join(bad[:10])
                           + (f"; and {len(bad) - 10} more" if len(bad) > 10 else ""))
    return arrays


def survey(images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> GoodsSurvey:
    """Survey decoded goods (``(H, W)`` or ``(H, W, 3)`` arrays)."""
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    shapes = [tuple(int(s) for s in image.shape[:2]) for image in images]
    heights, widths = [h for h, _ in shapes], [w for _, w in shapes]
    aspects = [w / h for h, w in shapes]
    common = max(set(shapes), key=shapes.count)
    odd = [name for name, shape in zip(names, shapes) if shape != common]
    gray = all(is_gray(image) for image in images)
    notes: list[str] = []
    aligned = quality = None
    if odd:
        notes.append(f"{len(odd)} of {len(images)} goods differ in size from the most common "
                     f"{common[1]} x {common[0]} ({', '.join(odd[:5])}{', ...' if len(odd) > 5 else ''}): "
                     "the aligned classical models are not candidates")
    else:
        aligned, quality = _aligned(images)
        notes.append(f"the goods {'register' if aligned else 'do not register'} to one template "
                     f"(worst ECC correlation {quality:.3f}, needed {ALIGN_QUALITY})")
    out = GoodsSurvey(
        n=len(images), height=(min(heights), max(heights)), width=(min(widths), max(widths)),
        aspect=(round(min(aspects), 4), round(max(aspects), 4)), gray=gray, same_size=not odd, odd_sizes=odd,
        aligned=aligned, alignment_quality=quality, spread=_spread(images), notes=notes,
    )
    if out.elongation >= 1.5:
        notes.append(f"elongated parts ({out.elongation:.1f} : 1): an aspect-preserving input is a candidate")
    if out.short_side >= 768:
        notes.append(f"large frames (short side {out.short_side} px): a higher-resolution input is a candidate")
    return out


def _gray_small(image: np.ndarray, side: int) -> np.ndarray:
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gray = gray.astype(np.float32) / (65535.0 if gray.dtype == np.uint16 else 255.0)
    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def _spread(images: Sequence[np.ndarray]) -> float:
    stack = np.stack([_gray_small(image, SPREAD_SIDE) for image in images])
    return round(float(stack.std(axis=0).mean() / max(float(stack.mean()), 1e-6)), 4)


def _aligned(images: Sequence[np.ndarray]) -> tuple[bool, float]:
    """Register up to :data:`ALIGN_SAMPLE` goods to the first (rigid, phase-correlation start)."""
    from alignment.registration import RegistrationOptions, register
    from alignment.warp import as_gray

    options = RegistrationOptions(motion="rigid", coarse="phase")
    pick = np.linspace(0, len(images) - 1, min(len(images), ALIGN_SAMPLE)).round().astype(int)
    template = as_gray(images[int(pick[0])])
    worst = 1.0
    for index in pick[1:]:
        try:
            found = register(as_gray(images[int(index)]), template, options=options)
        except Exception as exc:  # noqa: BLE001 - any registration failure means "does not align"
            log.debug("good %d does not register: %s", index, exc)
            return False, 0.0
        if found.overlap < ALIGN_OVERLAP:
            return False, float(found.quality)
        worst = min(worst, float(found.quality))
    return worst >= ALIGN_QUALITY, worst


def names_of(paths: Sequence[ImageLike]) -> list[str]:
    """Display names for goods given as paths (file names) or otherwise (indices)."""
    return [Path(p).name if isinstance(p, (str, Path)) else f"image {i}" for i, p in enumerate(paths)]
