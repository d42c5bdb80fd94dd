"""Tiling at native resolution: overlapping model-size tiles in, one stitched map out.

A large frame squeezed into a 256 px model input turns a small defect into a few pixels.
Tiling keeps the frame at its own resolution (or at ``scale`` of it): the region of
interest is covered by overlapping tiles of the model's input size, each tile goes through
the backbone like an image, and the tiles' maps are blended into one map in the original
image's coordinates. Memory stays bounded by the tile batch: the stitched map is
accumulated tile by tile (:class:`Stitcher`), never as a stack of every tile's map.

Tile origins along an axis are spread evenly from ``0`` to ``length - tile``, so every
overlap is at least the asked one and the last tile ends on the border (no padding but
for a side shorter than a tile, which is padded by replicating its border, as letterbox
does). In the overlaps the maps are blended with weights that ramp linearly across the
overlap (feathering), so the seam does not show and a tile's border patches, whose
receptive fields see padding, count less than its neighbour's interior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.geometry import checked_roi, resize_image

#: Most tiles one image may need; beyond it the frame is refused (lower ``tile_scale``).
MAX_TILES = 400


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along one axis of ``length`` pixels (one tile when it fits).

    Args:
        length: Axis length after scaling.
        tile: Tile length.
        overlap: Least overlap of neighbouring tiles (``< tile``).

    Returns:
        Increasing starts, the first 0 and the last ``length - tile`` (0 when ``length <= tile``).
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [int(round(v)) for v in np.linspace(0, length - tile, n)]


@dataclass(frozen=True)
class TileLayout:
    """How one image is cut.

    Attributes:
        image_shape: ``(H, W)`` of the original image.
        roi: ``(x, y, w, h)`` of the region of interest in the original image.
        scaled: ``(h, w)`` of the ROI after scaling.
        canvas: ``(h, w)`` the tiles cover: ``scaled``, padded up to a tile where shorter.
        origins: ``(y, x)`` of each tile's top-left corner in the canvas, row by row.
    """

    image_shape: tuple[int, int]
    roi: tuple[int, int, int, int]
    scaled: tuple[int, int]
    canvas: tuple[int, int]
    origins: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.origins)


@dataclass(frozen=True)
class Tiling:
    """Overlapping tiles of the model's input size over the (scaled) region of interest.

    Attributes:
        tile: ``(height, width)`` of a tile: the model input.
        overlap: Least overlap of neighbouring tiles in tile pixels.
        scale: Scale of the frame before it is cut (1.0: native resolution).
        roi: Optional ``(x, y, w, h)`` region of interest in original pixels.
    """

    tile: tuple[int, int] = (256, 256)
    overlap: int = 32
    scale: float = 1.0
    roi: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        tile = tuple(int(s) for s in self.tile)
        if len(tile) != 2 or min(tile) < 32 or max(tile) > 4096:
            raise InvalidParameterError(f"tile size must be (height, width) between 32 and 4096, got {self.tile}")
        object.__setattr__(self, "tile", tile)
        if not 0 <= int(self.overlap) <= min(tile) // 2:
            raise InvalidParameterError(f"tile_overlap must be between 0 and half a tile ({min(tile) // 2}), "
                                        f"got {self.overlap}")
        if not 0.05 <= float(self.scale) <= 4.0:
            raise InvalidParameterError(f"tile_scale must be between 0.05 and 4, got {self.scale}")
        object.__setattr__(self, "roi", checked_roi(self.roi))

    def layout(self, image_shape: tuple[int, int]) -> TileLayout:
        """Where the tiles of an image of ``image_shape`` lie.

        Raises:
            InvalidImageError: the ROI lies outside the image, or the frame needs more than
                :data:`MAX_TILES` tiles at this scale.
        """
        height, width = int(image_shape[0]), int(image_shape[1])
        x, y, w, h = self.roi if self.roi is not None else (0, 0, width, height)
        w, h = min(w, width - x), min(h, height - y)
        if x >= width or y >= height or w < 1 or h < 1:
            raise InvalidImageError(f"ROI {self.roi} lies outside the image of shape ({height}, {width})")
        scaled = (max(1, int(round(h * self.scale))), max(1, int(round(w * self.scale))))
        canvas = (max(scaled[0], self.tile[0]), max(scaled[1], self.tile[1]))
        rows = tile_origins(canvas[0], self.tile[0], int(self.overlap))
        cols = tile_origins(canvas[1], self.tile[1], int(self.overlap))
        if len(rows) * len(cols) > MAX_TILES:
            raise InvalidImageError(
                f"a {width} x {height} frame at tile_scale {self.scale} needs {len(rows) * len(cols)} tiles of "
                f"{self.tile[1]} x {self.tile[0]} (at most {MAX_TILES}): lower tile_scale or use a region of interest")
        return TileLayout((height, width), (x, y, w, h), scaled, canvas, tuple((r, c) for r in rows for c in cols))

    def cut(self, image: np.ndarray) -> tuple[list[np.ndarray], TileLayout]:
        """Cut one image into its tiles.

        Args:
            image: ``(H, W)`` or ``(H, W, C)`` array.

        Returns:
            The tiles, each ``(tile_h, tile_w)`` or ``(tile_h, tile_w, C)`` views of one
            scaled canvas, and the layout.
        """
        layout = self.layout(image.shape[:2])
        x, y, w, h = layout.roi
        crop = image[y : y + h, x : x + w]
        scaled = crop if layout.scaled == (h, w) else resize_image(crop, layout.scaled[1], layout.scaled[0])
        if scaled.ndim < crop.ndim:
            scaled = scaled[:, :, None]
        pad_h, pad_w = layout.canvas[0] - layout.scaled[0], layout.canvas[1] - layout.scaled[1]
        if pad_h or pad_w:
            padded = cv2.copyMakeBorder(scaled, 0, pad_h, 0, pad_w, borderType=cv2.BORDER_REPLICATE)
            scaled = padded[:, :, None] if padded.ndim < scaled.ndim else padded
        th, tw = self.tile
        return [scaled[r : r + th, c : c + tw] for r, c in layout.origins], layout

    def stitcher(self, layout: TileLayout) -> "Stitcher":
        """An accumulator for the maps of ``layout``'s tiles."""
        return Stitcher(self, layout)


def _ramp(length: int, overlap: int, start_inside: bool, end_inside: bool) -> np.ndarray:
    """``(length,)`` blending weight along one tile axis: 1 inside, a linear ramp over
    ``overlap`` pixels at an end that lies inside the canvas (another tile continues there)."""
    t = np.arange(length, dtype=np.float32) + 0.5
    weight = np.ones(length, dtype=np.float32)
    if overlap > 0 and start_inside:
        weight = np.minimum(weight, t / overlap)
    if overlap > 0 and end_inside:
        weight = np.minimum(weight, (length - t) / overlap)
    return weight


class Stitcher:
    """Blends tile maps into one map of the image, tile by tile (bounded memory).

    Args:
        tiling: The tiling.
        layout: The image's layout (from :meth:`Tiling.layout`).
    """

    def __init__(self, tiling: Tiling, layout: TileLayout) -> None:
        self.tiling, self.layout = tiling, layout
        self._sum = np.zeros(layout.canvas, dtype=np.float32)
        self._weight = np.zeros(layout.canvas, dtype=np.float32)
        self._added = 0

    def add(self, index: int, tile_map: np.ndarray) -> None:
        """Add tile ``index``'s ``(tile_h, tile_w)`` map."""
        th, tw = self.tiling.tile
        r, c = self.layout.origins[index]
        ch, cw = self.layout.canvas
        overlap = int(self.tiling.overlap)
        weight = np.outer(_ramp(th, overlap, r > 0, r + th < ch), _ramp(tw, overlap, c > 0, c + tw < cw))
        self._sum[r : r + th, c : c + tw] += weight * np.asarray(tile_map, dtype=np.float32)
        self._weight[r : r + th, c : c + tw] += weight
        self._added += 1

    @property
    def complete(self) -> bool:
        return self._added == len(self.layout)

    def result(self) -> np.ndarray:
        """The ``(H, W)`` float32 map of the original image (outside the ROI: the map's minimum)."""
        if not self.complete:
            raise InvalidParameterError(f"{self._added} of {len(self.layout)} tile maps were added")
        sh, sw = self.layout.scaled
        blended = (self._sum / np.maximum(self._weight, 1e-12))[:sh, :sw]
        x, y, w, h = self.layout.roi
        roi_map = blended if (sh, sw) == (h, w) else cv2.resize(blended, (w, h), interpolation=cv2.INTER_LINEAR)
        H, W = self.layout.image_shape
        if (x, y, w, h) == (0, 0, W, H):
            return np.ascontiguousarray(roi_map, dtype=np.float32)
        full = np.full((H, W), float(roi_map.min()), dtype=np.float32)
        full[y : y + h, x : x + w] = roi_map
        return full
