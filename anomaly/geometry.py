"""Input geometry in one place: region of interest, resize policy, and the way back.

A model sees a fixed-size image; the user sees maps and regions in the coordinates of the
image they sent. :class:`Geometry` maps forward (crop the ROI, resize by the policy) and
back (undo the padding, resize to the ROI, place the ROI in a full-size map).

Resize policies:

* ``"stretch"``: the ROI is resized to the model size, aspect ratio not kept;
* ``"letterbox"``: the ROI is scaled to fit inside the model size with its aspect ratio
  kept, and the rest is padded by replicating the border (so padding does not create
  an artificial edge). A 500 x 1250 strip in a 256 x 640 model input keeps its defects'
  shape instead of being squashed.

Tiling of very large images would sit here too (a list of placements instead of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from anomaly.errors import InvalidImageError, InvalidParameterError

ResizePolicy = Literal["stretch", "letterbox"]


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an image, averaging over the source pixels when it shrinks.

    Shrinking by a fractional factor is done in two steps: area averaging by the largest
    whole factor that divides the image (OpenCV's fast path for whole factors), then
    bilinear for the remaining factor, which is below 2, so no source pixel is skipped.
    OpenCV's area resize with a fractional factor is several times slower for a result
    that differs by about half a grey level; Pillow's ``reducing_gap`` does the same.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array (uint8, uint16 or float32).
        width: Output width.
        height: Output height.

    Returns:
        ``(height, width)`` or ``(height, width, C)`` array of the same dtype.
    """
    h, w = image.shape[:2]
    if width >= w and height >= h:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    fx, fy = max(1, w // width), max(1, h // height)
    whole = w % fx == 0 and h % fy == 0 and (fx > 1 or fy > 1)
    if whole and (w // fx, h // fy) != (width, height):
        image = cv2.resize(image, (w // fx, h // fy), interpolation=cv2.INTER_AREA)
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def checked_roi(roi) -> tuple[int, int, int, int] | None:
    """A region of interest ``(x, y, w, h)`` as ints, or ``None``.

    Raises:
        InvalidParameterError: not four numbers, a negative corner or an empty size.
    """
    if roi is None:
        return None
    out = tuple(int(v) for v in roi)
    if len(out) != 4 or out[2] < 1 or out[3] < 1 or out[0] < 0 or out[1] < 0:
        raise InvalidParameterError(f"roi must be (x, y, w, h) with w, h >= 1, got {roi}")
    return out


@dataclass(frozen=True)
class Placement:
    """Where the ROI of one image went inside the model input.

    Attributes:
        image_shape: ``(H, W)`` of the original image.
        roi: ``(x, y, w, h)`` of the ROI in the original image.
        content: ``(x, y, w, h)`` of the resized ROI inside the model input.
    """

    image_shape: tuple[int, int]
    roi: tuple[int, int, int, int]
    content: tuple[int, int, int, int]


@dataclass(frozen=True)
class Geometry:
    """How an image becomes a model input, and how a map goes back.

    Attributes:
        size: ``(height, width)`` of the model input.
        resize: ``"stretch"`` or ``"letterbox"``.
        roi: Optional ``(x, y, w, h)`` region of interest in original pixels; ``None``
            means the whole image. It is clipped to each image's bounds.
    """

    size: tuple[int, int] = (256, 256)
    resize: ResizePolicy = "stretch"
    roi: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.size)
        if len(size) != 2 or min(size) < 16 or max(size) > 4096:
            raise InvalidParameterError(f"size must be (height, width) between 16 and 4096, got {self.size}")
        object.__setattr__(self, "size", size)
        if self.resize not in ("stretch", "letterbox"):
            raise InvalidParameterError(f"resize must be 'stretch' or 'letterbox', got {self.resize!r}")
        object.__setattr__(self, "roi", checked_roi(self.roi))

    @classmethod
    def from_params(cls, image_size: int | tuple[int, int] | list[int], resize: str, roi) -> "Geometry":
        """Build from detector hyper-parameters (an int size means a square input)."""
        if isinstance(image_size, (int, np.integer)):
            size = (int(image_size), int(image_size))
        elif isinstance(image_size, (list, tuple)) and all(isinstance(s, (int, np.integer)) for s in image_size):
            size = tuple(int(s) for s in image_size)
        else:
            raise InvalidParameterError(f"image_size must be an int or (height, width), got {image_size!r}")
        return cls(size=size, resize=resize, roi=None if roi is None else tuple(roi))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "resize": self.resize, "roi": None if self.roi is None else list(self.roi)}

    def place(self, image_shape: tuple[int, int]) -> Placement:
        """Compute where an image of ``image_shape`` lands in the model input."""
        height, width = int(image_shape[0]), int(image_shape[1])
        if self.roi is None:
            roi = (0, 0, width, height)
        else:
            x, y, w, h = self.roi
            x0, y0 = x, y
            x1, y1 = min(x + w, width), min(y + h, height)
            if x0 >= width or y0 >= height or x1 - x0 < 1 or y1 - y0 < 1:
                raise InvalidImageError(f"ROI {self.roi} lies outside the image of shape ({height}, {width})")
            roi = (x0, y0, x1 - x0, y1 - y0)
        out_h, out_w = self.size
        if self.resize == "stretch":
            content = (0, 0, out_w, out_h)
        else:
            scale = min(out_w / roi[2], out_h / roi[3])
            cw = max(1, min(out_w, int(round(roi[2] * scale))))
            ch = max(1, min(out_h, int(round(roi[3] * scale))))
            content = ((out_w - cw) // 2, (out_h - ch) // 2, cw, ch)
        return Placement(image_shape=(height, width), roi=roi, content=content)

    def forward(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """Crop and resize one image to the model input.

        Args:
            image: ``(H, W)`` or ``(H, W, C)`` array of any dtype.

        Returns:
            The model-size image ``(h, w)`` or ``(h, w, C)`` of the same dtype, and its
            :class:`Placement`.
        """
        placement = self.place(image.shape[:2])
        x, y, w, h = placement.roi
        crop = image[y : y + h, x : x + w]
        cx, cy, cw, ch = placement.content
        resized = resize_image(crop, cw, ch)
        if resized.ndim < crop.ndim:
            resized = resized[:, :, None]
        out_h, out_w = self.size
        if (cw, ch) == (out_w, out_h):
            return resized, placement
        padded = cv2.copyMakeBorder(
            resized, cy, out_h - ch - cy, cx, out_w - cw - cx, borderType=cv2.BORDER_REPLICATE
        )
        if padded.ndim < crop.ndim:
            padded = padded[:, :, None]
        return padded, placement

    def backward(self, model_map: np.ndarray, placement: Placement, *, fill: float = 0.0) -> np.ndarray:
        """Bring a map at model resolution back to the original image's coordinates.

        Args:
            model_map: ``(h', w')`` float map covering the whole model input; a map at
                another resolution (a feature grid) is first scaled to the model size.
            placement: The placement returned by :meth:`forward` for that image.
            fill: Value outside the ROI.

        Returns:
            ``(H, W)`` float32 map of the original image.
        """
        out_h, out_w = self.size
        model_map = np.asarray(model_map, dtype=np.float32)
        cx, cy, cw, ch = placement.content
        if model_map.shape != (out_h, out_w):
            model_map = cv2.resize(model_map, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        content = model_map[cy : cy + ch, cx : cx + cw]
        x, y, w, h = placement.roi
        roi_map = cv2.resize(content, (w, h), interpolation=cv2.INTER_LINEAR)
        H, W = placement.image_shape
        if (x, y, w, h) == (0, 0, W, H):
            return roi_map
        full = np.full((H, W), fill, dtype=np.float32)
        full[y : y + h, x : x + w] = roi_map
        return full

