"""What images a model accepts: the size, aspect ratio and colour of its training images, within tolerances.

A model learned from 900 x 900 colour photographs has nothing to say about a 1 x 1 image, a
10000 x 1 strip or a gray frame from another camera: it would answer NG (or GOOD) for a part it
never saw the like of, and the line would record it. Such an image is refused before scoring
with :class:`InputGeometryError` (HTTP 422) naming what was expected. Recorded at training in
the bundle's ``training_data.accepted_input``; bundles without it accept any image.

Tolerances: each side within half the smallest and twice the largest training side; the aspect
ratio (width / height) within 25 % of the training range; gray where the goods were gray, colour
where they were colour (an RGB file with three equal channels counts as gray).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from anomaly.errors import InvalidImageError

#: How far a side may shrink below the smallest training side, or grow beyond the largest.
SIDE_FACTOR = 2.0
#: How far the aspect ratio may move beyond the training range, as a factor.
ASPECT_FACTOR = 1.25


class InputGeometryError(InvalidImageError):
    """The image's size, aspect ratio or colour is unlike every image the model was trained on."""

    code = "input_geometry"
    http_status = 422


def is_gray(image: np.ndarray) -> bool:
    """Whether a canonical image is gray: 2-D, or colour with three equal channels."""
    if image.ndim == 2:
        return True
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


@dataclass(frozen=True)
class AcceptedInput:
    """The training images' geometry; :meth:`check` applies the module's tolerances to it.

    Attributes:
        height, width: ``[smallest, largest]`` side of the training images, in pixels.
        aspect: ``[smallest, largest]`` width / height of the training images.
        gray: Whether the training images were gray (else colour).
    """

    height: tuple[int, int]
    width: tuple[int, int]
    aspect: tuple[float, float]
    gray: bool

    @classmethod
    def of(cls, images: Iterable[np.ndarray]) -> AcceptedInput:
        """The geometry of canonical images (``(H, W)`` or ``(H, W, 3)`` arrays)."""
        shapes, grays = [], []
        for image in images:
            shapes.append(image.shape[:2])
            grays.append(is_gray(image))
        h = np.array([s[0] for s in shapes])
        w = np.array([s[1] for s in shapes])
        aspect = w / h
        return cls((int(h.min()), int(h.max())), (int(w.min()), int(w.max())),
                   (float(aspect.min()), float(aspect.max())), all(grays))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcceptedInput:
        return cls(tuple(data["height"]), tuple(data["width"]), tuple(data["aspect"]), bool(data["gray"]))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def check(self, image: np.ndarray, label: str = "image") -> None:
        """Refuse an image unlike the training images.

        Args:
            image: Canonical ``(H, W)`` or ``(H, W, 3)`` image.
            label: Name used in the message.

        Raises:
            InputGeometryError: a side, the aspect ratio or the colour is out of tolerance.
        """
        height, width = image.shape[:2]
        for name, side, (low, high) in (("height", height, self.height), ("width", width, self.width)):
            if not low / SIDE_FACTOR <= side <= high * SIDE_FACTOR:
                raise InputGeometryError(
                    f"{label}: {width} x {height} px; this model was trained on images {self._sizes()} and "
                    f"accepts a {name} of {low / SIDE_FACTOR:.0f} to {high * SIDE_FACTOR:.0f} px")
        low, high = self.aspect[0] / ASPECT_FACTOR, self.aspect[1] * ASPECT_FACTOR
        if not low <= width / height <= high:
            raise InputGeometryError(
                f"{label}: aspect ratio {width / height:.3g} (width / height of {width} x {height} px); this model "
                f"was trained on images {self._sizes()} and accepts {low:.3g} to {high:.3g}")
        if self.gray and not is_gray(image):
            raise InputGeometryError(f"{label}: a colour image; this model was trained on gray images")
        if not self.gray and image.ndim == 2:
            raise InputGeometryError(f"{label}: a gray image; this model was trained on colour images")

    def _sizes(self) -> str:
        (h0, h1), (w0, w1) = self.height, self.width
        wide = f"{w0}" if w0 == w1 else f"{w0}-{w1}"
        high = f"{h0}" if h0 == h1 else f"{h0}-{h1}"
        return f"of {wide} x {high} px"
