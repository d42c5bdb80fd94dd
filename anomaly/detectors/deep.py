"""Shared machinery of the detectors that score deep backbone features (PatchCore, PaDiM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from anomaly.detectors.base import Detector, hyperparameters
from anomaly.errors import InvalidParameterError
from anomaly.features.backbone import FeatureExtractor
from anomaly.features.patches import aggregate, aggregate_cells
from anomaly.features.preprocess import prepare_batch
from anomaly.geometry import Geometry, Placement
from anomaly.imageio import ImageLike, as_image
from anomaly.tiling import TileLayout, Tiling


@dataclass(frozen=True)
class InputRef:
    """Where one model input comes from.

    Attributes:
        owner: Index of its image in the call's images.
        tile: Index of the tile in the image's layout (0 untiled).
        layout: The image's tile layout, ``None`` untiled.
    """

    owner: int
    tile: int = 0
    layout: TileLayout | None = None


@hyperparameters
class BackboneDetector(Detector):
    """A detector on top of a pretrained backbone: geometry, batching and feature grids.

    The hyper-parameters PatchCore and PaDiM share (``layers`` and ``patch_size`` have no
    default here: each model gives its own):

    Args:
        backbone: timm backbone name (weights found offline, see ``anomaly.features.weights``).
        layers: Backbone stages whose features are combined, finest first.
        image_size: Model input size, an int (square) or ``(height, width)``.
        resize: ``"stretch"``, ``"letterbox"`` (keep aspect ratio, pad) or, for the models
            that support it (:attr:`supports_tiling`), ``"tile"``: overlapping tiles of
            ``image_size`` over the frame at ``tile_scale`` of its resolution (see
            :mod:`anomaly.tiling`).
        roi: Optional ``(x, y, w, h)`` region of interest in original pixels.
        patch_size: Neighbourhood of the local feature aggregation (odd).
        smoothing_sigma: Gaussian sigma of the map, in model pixels.
        batch_size: Images per backbone call.
        random_state: Seed of the model's random choices.

    The feature grid sits on the cells (receptive-field centres) of the layer whose
    stride it has (see :attr:`feature_origin`); how the layers coarser than the grid are
    sampled at its cells is each model's fixed ``coarse_sampling``.
    """

    backbone: str = "efficientnet_lite0"
    layers: Sequence[int]
    image_size: int | Sequence[int] = 256
    resize: str = "stretch"
    roi: Sequence[int] | None = None
    patch_size: int
    smoothing_sigma: float = 4.0
    batch_size: int = 16
    random_state: int = 0

    uses_backbone = True
    #: Whether ``resize="tile"`` is allowed (a model whose statistics are per position in
    #: the input, as PaDiM's, cannot share them between tiles).
    supports_tiling: ClassVar[bool] = False
    #: ``"linear"`` (bilinear) or ``"nearest"`` (the cell whose receptive-field centre is
    #: nearest): see :func:`anomaly.features.patches.aggregate`.
    coarse_sampling: ClassVar[str]
    # Built on first use (not parameters, so not annotated).
    _extractor = None
    _backbone_sha256 = None
    _backbone_offsets = None

    def _validate_common(self) -> None:
        if int(self.batch_size) < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.patch_size) < 1 or int(self.patch_size) % 2 == 0:
            raise InvalidParameterError(f"patch_size must be an odd number >= 1, got {self.patch_size}")
        if self.resize == "tile" and not self.supports_tiling:
            raise InvalidParameterError(f"{self.name} cannot tile (its statistics are per input position): resize "
                                        "must be 'stretch' or 'letterbox'")
        self.geometry  # validates image_size, resize and roi
        self.tiling

    @property
    def geometry(self) -> Geometry:
        """The model input of one image, or of one tile when tiled (then without ROI: the tiling has it)."""
        if self.resize == "tile" and self.supports_tiling:
            return Geometry.from_params(self.image_size, "stretch", None)
        return Geometry.from_params(self.image_size, self.resize, self.roi)

    @property
    def tiling(self) -> Tiling | None:
        """How a frame is cut into tiles, or ``None`` when each image is one model input."""
        if self.resize != "tile" or not self.supports_tiling:
            return None
        return Tiling(self.geometry.size, int(getattr(self, "tile_overlap", 32)),
                      float(getattr(self, "tile_scale", 1.0)), None if self.roi is None else tuple(self.roi))

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.backbone, self.layers, expected_sha256=self._backbone_sha256,
                                               offsets=self._backbone_offsets)
            self._backbone_sha256 = self._extractor.info.weights_sha256
        return self._extractor

    def backbone_info(self) -> dict[str, Any] | None:
        return self.extractor.info.to_dict()

    def _backbone_state(self) -> dict[str, Any]:
        """What a bundle needs to rebuild the same backbone: weights hash and layer offsets."""
        info = self.extractor.info
        return {"backbone_sha256": info.weights_sha256, "backbone_offsets": [list(o) for o in info.offsets]}

    def _set_backbone_from_meta(self, meta: dict[str, Any]) -> None:
        self._backbone_sha256 = meta.get("backbone_sha256")
        self._backbone_offsets = meta.get("backbone_offsets")
        self._extractor = None

    @property
    def _channels_per_layer(self) -> int | None:
        """Channel cap per layer (see :func:`anomaly.features.patches.pool_channels`), if the detector has one."""
        value = getattr(self, "channels_per_layer", None)
        return None if value is None else int(value)

    def _unfitted_copy(self) -> "BackboneDetector":
        """A detector with the same parameters sharing this one's backbone (for fold models)."""
        copy = type(self)(**self.get_params())
        copy._extractor, copy._backbone_sha256 = self._extractor, self._backbone_sha256
        return copy

    def _batches(self, images: Sequence[ImageLike]) -> Iterator[Sequence[ImageLike]]:
        step = int(self.batch_size)
        for start in range(0, len(images), step):
            yield images[start : start + step]

    def _n_batches(self, images: Sequence[ImageLike]) -> int | None:
        """How many batches :meth:`_input_batches` yields (``None`` tiled: known once the images are read)."""
        return None if self.tiling is not None else -(-len(images) // int(self.batch_size))

    def _input_batches(self, images: Sequence[ImageLike]) -> Iterator[tuple[list[Any], list["InputRef"]]]:
        """Batches of model inputs (``batch_size`` each) and where each input comes from.

        Untiled, an input is an image as given (decoded with the batch). Tiled, each image
        is decoded once and cut (:meth:`~anomaly.tiling.Tiling.cut`); its tiles fill the
        batches in order, a batch may hold the end of one image and the start of the next,
        and no more than one batch of tiles is held at a time.
        """
        tiling, step = self.tiling, int(self.batch_size)
        if tiling is None:
            for start in range(0, len(images), step):
                chunk = list(images[start : start + step])
                yield chunk, [InputRef(start + i) for i in range(len(chunk))]
            return
        batch: list[Any] = []
        refs: list[InputRef] = []
        for owner, source in enumerate(images):
            tiles, layout = tiling.cut(as_image(source))
            for index, tile in enumerate(tiles):
                batch.append(tile)
                refs.append(InputRef(owner, index, layout))
                if len(batch) == step:
                    yield batch, refs
                    batch, refs = [], []
        if batch:
            yield batch, refs

    @property
    def feature_stride(self) -> int:
        """Stride of the feature grid in model pixels (default: the finest layer's)."""
        return int(self.extractor.reductions[0])

    @property
    def feature_origin(self) -> tuple[float, float]:
        """``(dy, dx)`` model pixel of the feature grid's cell ``(0, 0)``.

        The receptive-field centre of the layer whose stride the grid has (the finest layer
        when none has), so that layer's cells are taken as they are and only the others are
        interpolated. (Anchoring the grid on pixel ``(0, 0)`` instead interpolates every
        layer, the finest by about half a cell on EfficientNet-Lite0: a blur that costs
        image AUROC on fine textures, see docs/methods.md; format-1 bundles fitted so are
        refused by :func:`anomaly.bundle.migrate_manifest`.)
        """
        return self.origin_for(self.feature_stride)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the feature grid: cell centres at ``stride * i + origin`` inside the model input."""
        return self.grid_for(self.feature_stride)

    def origin_for(self, stride: int) -> tuple[float, float]:
        """:attr:`feature_origin` of a grid with ``stride``."""
        ext = self.extractor
        matching = [i for i, r in enumerate(ext.reductions) if int(r) == int(stride)]
        dy, dx = ext.offsets[matching[0] if matching else 0]
        return (float(dy), float(dx))

    def grid_for(self, stride: int) -> tuple[int, int]:
        """:attr:`feature_grid` of a grid with ``stride``."""
        h, w = self.geometry.size
        s = int(stride)
        return (h + s - 1) // s, (w + s - 1) // s

    def _features(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[Placement]]:
        """Aggregated patch features ``(n, D, h, w)`` of a batch, and the images' placements."""
        (feats,), placements = self._features_at(images, (self.feature_stride,))
        return feats, placements

    def _features_at(self, images: Sequence[ImageLike],
                     strides: Sequence[int]) -> tuple[list[torch.Tensor], list[Placement]]:
        """Aggregated patch features of a batch on several grids from one backbone call.

        Args:
            images: The batch.
            strides: Grid strides in model pixels; each grid has :meth:`grid_for` cells
                from :meth:`origin_for`.

        Returns:
            One ``(n, D, h_s, w_s)`` tensor per stride, and the images' placements.
        """
        layers, placements = self._layers(images)
        return [self._aggregate(layers, s) for s in strides], placements

    def _layers(self, images: Sequence[ImageLike]) -> tuple[list[torch.Tensor], list[Placement]]:
        """The backbone's feature maps ``(n, C_l, h_l, w_l)`` of a batch, and the images' placements."""
        ext = self.extractor
        batch, placements = prepare_batch(images, self.geometry, ext.mean, ext.std)
        with torch.inference_mode():
            return ext(batch), placements

    def _aggregate(self, layers: Sequence[torch.Tensor], stride: int) -> torch.Tensor:
        """Patch features ``(n, D, h, w)`` of the backbone's maps on the grid with ``stride``."""
        with torch.inference_mode():
            (strides, offsets), kwargs = self._aggregation(stride)
            return aggregate(layers, strides, offsets, **kwargs)

    def _aggregate_cells(self, layers: Sequence[torch.Tensor], stride: int,
                         cells: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`_aggregate` at a few flat cells of the grid only, per image: ``n`` arrays
        ``(len(cells[i]), D)`` (see :func:`~anomaly.features.patches.aggregate_cells`)."""
        (strides, offsets), kwargs = self._aggregation(stride)
        return aggregate_cells(layers, strides, offsets, cells, **kwargs)

    def _aggregation(self, stride: int) -> tuple[tuple, dict[str, Any]]:
        """The backbone's strides and offsets, and the aggregation's keywords, for one grid."""
        ext = self.extractor
        return (ext.reductions, ext.offsets), dict(
            patch_size=int(self.patch_size), out_stride=int(stride), grid=self.grid_for(stride),
            channels_per_layer=self._channels_per_layer, origin=self.origin_for(stride),
            sampling=self.coarse_sampling)
