"""PatchCore: nearest-neighbour distance to a coreset of good patch features.

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler: "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022.

* locally aware patch features from two mid-level backbone stages (section 3.1);
* a memory bank of good patches, subsampled by approximate greedy k-center on a seeded
  random projection, streamed so memory stays bounded (section 3.2, :mod:`anomaly.coreset`);
* the patch score is the Euclidean distance to the nearest bank patch (faiss, exact flat
  index by default, HNSW as an option);
* the image score is the largest patch score, reweighted as in the paper's eq. 7 by how
  isolated the matched bank patch is among its ``b`` nearest bank neighbours;
* the map is upsampled to the model input, Gaussian-smoothed (sigma 4) and brought back to
  the original image's coordinates.

Everything after the backbone is numpy/faiss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.bundle import load_arrays, save_arrays
from anomaly.coreset import StreamingCoreset
from anomaly.detectors.base import AnomalyResult
from anomaly.detectors.deep import BackboneDetector
from anomaly.errors import InvalidParameterError
from anomaly.imageio import ImageLike
from anomaly.knn import INDEX_TYPES, NearestNeighbours
from anomaly.maps import model_resolution_map, to_image_map
from anomaly.progress import progress

log = logging.getLogger(__name__)


#: ``grid_stride="auto"`` coarsens the grid only if it keeps this many cells on the shorter side.
MIN_AUTO_GRID_CELLS = 16


class PatchCore(BackboneDetector):
    """PatchCore anomaly detector.

    Args:
        backbone: timm backbone name (weights found offline, see ``anomaly.features.weights``).
        layers: Backbone stages whose features are combined (two mid-level ones).
        image_size: Model input size, an int (square) or ``(height, width)``.
        resize: ``"stretch"`` or ``"letterbox"`` (keep aspect ratio, pad).
        roi: Optional ``(x, y, w, h)`` region of interest in original pixels.
        patch_size: Neighbourhood of the local feature aggregation.
        channels_per_layer: Each layer's channels are averaged down to at most this many
            (PatchCore's adaptive average pooling, applied per layer) before they are
            concatenated; ``None`` (default) keeps them all. With EfficientNet-Lite0's
            stages 2 and 3 (40 and 112 channels), 40 gives both layers equal weight in the
            patch distance and halves the nearest-neighbour cost: it helped the fine
            woven ``grid`` texture and hurt ``magnetic_tile`` (image AUROC 0.88 -> 0.84 on
            a 200-image model), so it is an option, not the default.
        grid_stride: Stride of the patch grid in model pixels, a multiple of the finest
            layer's; ``None`` is the finest layer's (8 for EfficientNet-Lite0, as in the
            paper). ``"auto"`` (default) takes twice the finest stride when the grid then
            keeps at least :data:`MIN_AUTO_GRID_CELLS` cells along the input's shorter side
            (16 px from a 256 px input on), else the finest: the stride-8 layer is averaged
            over each 16 px cell, a quarter of the patches to search, which brings the
            nearest-neighbour search from 6.8 to 1.7 ms per 256 px image on the 2-core
            machine. Localisation is coarser (pixel AUROC and AUPRO lower, most on the
            fine woven ``grid``), and since the layer-anchored grid and the exact coreset
            so is image AUROC on two sets: ``benchmarks/option_auroc.py`` on the bench's
            sub-samples, 16 px against ``None``: pcb 0.564 / 0.614, grid 0.808 / 0.879,
            mono 0.945 / 0.949, magnetic_tile 0.857 / 0.858, hazelnut 1.000 / 1.000.
            ``None`` keeps the finest grid.
        grid_origin: ``"layer"`` (default): the feature grid sits on the cells
            (receptive-field centres) of the layer whose stride it has, which are used as
            they are; ``"input"``: cell ``(0, 0)`` on model pixel ``(0, 0)``, every layer
            interpolated to it (the only grid before this option; bundles from then keep it).
        coarse_sampling: How the layers coarser than the feature grid are sampled at its
            cells: ``"linear"`` (default; bilinear, as PatchCore's own code resizes its
            deeper layer) or ``"nearest"`` (the cell whose receptive-field centre is nearest).
        coreset_ratio: Fraction of training patches kept in the memory bank.
        max_bank_size: Cap on the bank size (bounds scoring time and memory).
        projection_dim: Random-projection dimension for the coreset distances.
        num_neighbors: ``b`` of the paper's image-score reweighting.
        index: ``"flat"`` (exact) or ``"hnsw"`` (approximate) nearest-neighbour index.
        smoothing_sigma: Gaussian sigma of the map, in model pixels.
        batch_size: Images per backbone call.
        random_state: Seed of the coreset's projection and first centre.
    """

    name = "patchcore"

    def __init__(
        self,
        *,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[int] = (2, 3),
        image_size: int | Sequence[int] = 256,
        resize: str = "stretch",
        roi: Sequence[int] | None = None,
        patch_size: int = 3,
        channels_per_layer: int | None = None,
        grid_stride: int | str | None = "auto",
        coreset_ratio: float = 0.1,
        max_bank_size: int = 2048,
        projection_dim: int = 128,
        num_neighbors: int = 9,
        index: str = "flat",
        smoothing_sigma: float = 4.0,
        batch_size: int = 16,
        random_state: int = 0,
        grid_origin: str = "layer",
        coarse_sampling: str = "linear",
    ) -> None:
        self.backbone = backbone
        self.layers = layers
        self.image_size = image_size
        self.resize = resize
        self.roi = roi
        self.patch_size = patch_size
        self.channels_per_layer = channels_per_layer
        self.grid_stride = grid_stride
        self.coreset_ratio = coreset_ratio
        self.max_bank_size = max_bank_size
        self.projection_dim = projection_dim
        self.num_neighbors = num_neighbors
        self.index = index
        self.smoothing_sigma = smoothing_sigma
        self.batch_size = batch_size
        self.random_state = random_state
        self.grid_origin = grid_origin
        self.coarse_sampling = coarse_sampling

    def _validate_params(self) -> None:
        self._validate_common()
        if not 0.0 < float(self.coreset_ratio) <= 1.0:
            raise InvalidParameterError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if int(self.num_neighbors) < 1:
            raise InvalidParameterError(f"num_neighbors must be >= 1, got {self.num_neighbors}")
        if self.index not in INDEX_TYPES:
            raise InvalidParameterError(f"index must be one of {INDEX_TYPES}, got {self.index!r}")
        if int(self.max_bank_size) < 1:
            raise InvalidParameterError(f"max_bank_size must be >= 1, got {self.max_bank_size}")
        if self.grid_stride is not None and self.grid_stride != "auto":
            finest = int(self.extractor.reductions[0])
            if (isinstance(self.grid_stride, str) or int(self.grid_stride) < finest
                    or int(self.grid_stride) % finest):
                raise InvalidParameterError(f"grid_stride must be 'auto', null or a multiple of the finest "
                                            f"layer's stride {finest}, got {self.grid_stride!r}")
        if self.channels_per_layer is not None and int(self.channels_per_layer) < 1:
            raise InvalidParameterError(f"channels_per_layer must be >= 1 or None, got {self.channels_per_layer}")

    @property
    def feature_stride(self) -> int:
        finest = int(self.extractor.reductions[0])
        if self.grid_stride is None:
            return finest
        if self.grid_stride == "auto":
            return 2 * finest if min(self.geometry.size) // (2 * finest) >= MIN_AUTO_GRID_CELLS else finest
        return int(self.grid_stride)

    # -- fit ------------------------------------------------------------------------------
    def _fit(self, images: Sequence[ImageLike]) -> None:
        coreset = StreamingCoreset(
            ratio=float(self.coreset_ratio),
            max_size=int(self.max_bank_size),
            projection_dim=int(self.projection_dim),
            random_state=int(self.random_state),
        )
        grid_hw = None
        for batch in progress(list(self._batches(images)), desc="patchcore: features"):
            feats, _ = self._features(batch)
            n, dim, h, w = feats.shape
            if grid_hw is None:
                grid_hw = (h, w)
                whole, bounded = coreset.memory_estimate_mb(len(images) * h * w, dim)
                log.info(
                    "patchcore: %d images x %d patches x %d dims = %.0f MB of features; "
                    "%s coreset selection holds at most %.0f MB; bank <= %d patches",
                    len(images), h * w, dim, whole,
                    "exact" if coreset.fits_exact(len(images) * h * w, dim) else "streamed", bounded,
                    coreset.target_size(len(images) * h * w),
                )
            coreset.add(feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy())
        self.coreset_selection_ = "exact" if coreset.exact else "streamed"
        bank = coreset.finalize()
        self.memory_bank_ = bank
        self.n_patches_seen_ = coreset.seen
        self.grid_shape_ = grid_hw
        self._build_index()

    def _build_index(self) -> None:
        self._knn = NearestNeighbours(index=self.index).fit(self.memory_bank_)
        b = min(int(self.num_neighbors), self.memory_bank_.shape[0])
        # N_b(m*) of eq. 7 for every bank patch, computed once: the first neighbour is itself.
        _, self.bank_neighbors_ = NearestNeighbours(index="flat").fit(self.memory_bank_).search(self.memory_bank_, b)

    def training_meta(self) -> dict[str, Any]:
        return {
            "bank_size": int(self.memory_bank_.shape[0]),
            "feature_dim": int(self.memory_bank_.shape[1]),
            "patches_seen": int(self.n_patches_seen_),
            "grid_shape": list(self.grid_shape_),
            "random_state": int(self.random_state),
            # "exact" (one greedy selection over every patch) or "streamed" (chunk coresets)
            "coreset_selection": getattr(self, "coreset_selection_", None),
        }

    # -- score ----------------------------------------------------------------------------
    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        scores, maps = [], []
        geometry = self.geometry
        for batch in self._batches(images):
            feats, placements = self._features(batch)
            n, dim, h, w = feats.shape
            queries = feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy()
            dist, idx = self._knn.search(queries, 1)
            dist = dist[:, 0].reshape(n, h * w)
            idx = idx[:, 0].reshape(n, h * w)
            queries = queries.reshape(n, h * w, dim)
            for i in range(n):
                scores.append(self._image_score(queries[i], dist[i], idx[i]))
                model_map = model_resolution_map(dist[i].reshape(h, w), geometry.size, float(self.smoothing_sigma),
                                                 self.feature_stride, self.feature_origin)
                maps.append(to_image_map(model_map, geometry, placements[i]))
        return AnomalyResult(scores=np.asarray(scores), maps=maps)

    def _image_score(self, queries: np.ndarray, dist: np.ndarray, idx: np.ndarray) -> float:
        """Paper eq. 7: s = (1 - softmax(-)) * s*, weighting the most anomalous patch.

        Args:
            queries: ``(P, D)`` patch features of one image.
            dist: ``(P,)`` nearest-bank distances.
            idx: ``(P,)`` nearest-bank indices.
        """
        worst = int(np.argmax(dist))
        s_star = float(dist[worst])
        support = self.bank_neighbors_[idx[worst]]
        d = np.linalg.norm(self.memory_bank_[support] - queries[worst], axis=1)
        # 1 - exp(d_0) / sum exp(d_j), computed stably.
        e = np.exp(d - d.max())
        weight = 1.0 - e[0] / e.sum()
        return float(weight * s_star)

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        save_arrays(
            directory / "state.npz",
            {"memory_bank": self.memory_bank_, "bank_neighbors": self.bank_neighbors_.astype(np.int64)},
        )
        self._knn.save(directory / "bank.faiss")
        return {
            "arrays": "state.npz",
            "index_file": "bank.faiss",
            **self._backbone_state(),
            "patches_seen": int(self.n_patches_seen_),
            "grid_shape": list(self.grid_shape_),
            "coreset_selection": getattr(self, "coreset_selection_", None),
        }

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        arrays = load_arrays(directory / meta.get("arrays", "state.npz"), ["memory_bank", "bank_neighbors"])
        self.memory_bank_ = arrays["memory_bank"].astype(np.float32)
        self.bank_neighbors_ = arrays["bank_neighbors"]
        self.n_patches_seen_ = int(meta.get("patches_seen", 0))
        self.grid_shape_ = tuple(meta.get("grid_shape", (0, 0)))
        self.coreset_selection_ = meta.get("coreset_selection")  # absent from bundles before it was recorded
        self._knn = NearestNeighbours(index=self.index).load(directory / meta.get("index_file", "bank.faiss"))
        self._set_backbone_from_meta(meta)

    # -- cross-fitting (anomaly.crossfit protocol) ------------------------------------------
    def cross_fit_scores(
        self,
        images: Sequence[ImageLike],
        n_folds: int = 5,
        random_state: int = 0,
        *,
        max_map_side: int | None = None,
    ) -> AnomalyResult:
        """Fit on all images and score each one with a bank built without its fold.

        Each image's patch features are computed once for the banks. Every fold's patches
        are streamed into a fold coreset (:class:`~anomaly.coreset.StreamingCoreset`); the
        bank without fold ``j`` is the greedy k-center over the other folds' coresets, and
        the final bank, kept in ``self``, over all of them: greedy
        k-center coresets compose (Indyk et al., PODS 2014), so the fold banks cost a
        fraction of a fit. Held-out images are scored through :meth:`score` of a model
        holding the fold bank, so their scores and maps are exactly what such a model gives.

        Args:
            images: Good images (arrays, paths or bytes).
            n_folds: Number of folds (see :func:`anomaly.crossfit.assign_folds`).
            random_state: Seed of the fold split.
            max_map_side: Shrink returned maps to this long side (``None``: full size).

        Returns:
            Out-of-fold scores ``(N,)`` and maps, in input order.
        """
        from anomaly.crossfit import assign_folds, score_out_of_fold

        self._validate_params()
        images = list(images)
        folds = assign_folds(len(images), n_folds, random_state)
        k = int(folds.max()) + 1
        seed = int(self.random_state)
        # One stream per fold, all with the same seed (hence the same projection), fed
        # image by image. Each checks the exact selection's budgets for the whole set (its
        # share 1 / k), since the banks select over the union of the folds' pools; beyond
        # them no fold holds more than a chunk and its kept coresets.
        streams = [StreamingCoreset(ratio=float(self.coreset_ratio), max_size=int(self.max_bank_size),
                                    projection_dim=int(self.projection_dim), random_state=seed, share=1.0 / k)
                   for _ in range(k)]
        grid_hw = None
        position = 0
        for batch in progress(list(self._batches(images)), desc="patchcore: features (cross-fit)"):
            f, _ = self._features(batch)
            n, dim, h, w = f.shape
            grid_hw = (h, w)
            f = f.permute(0, 2, 3, 1).reshape(n, h * w, dim).numpy()
            for i in range(n):
                streams[folds[position + i]].add(f[i])
            position += n
        patches = grid_hw[0] * grid_hw[1]
        self.coreset_selection_ = "exact" if all(s.exact for s in streams) else "streamed"
        pools = [s.pool() for s in streams]

        def bank_from(pool_ids: list[int], n_images: int) -> np.ndarray:
            pool = np.concatenate([pools[p] for p in pool_ids], axis=0)
            return streams[0].select(pool, streams[0].target_size(n_images * patches), seed)

        def fold_model(j: int, inside: np.ndarray) -> "PatchCore":
            model = self._unfitted_copy()
            model.memory_bank_ = bank_from([p for p in range(k) if p != j], len(images) - len(inside))
            model.n_patches_seen_ = (len(images) - len(inside)) * patches
            model.grid_shape_ = grid_hw
            model._build_index()
            model.fitted_ = True
            return model

        result = score_out_of_fold(images, folds, fold_model, max_map_side, desc="patchcore: out-of-fold scores")
        self.memory_bank_ = bank_from(list(range(k)), len(images))
        self.n_patches_seen_ = len(images) * patches
        self.grid_shape_ = grid_hw
        self._build_index()
        self.fitted_ = True
        return result
