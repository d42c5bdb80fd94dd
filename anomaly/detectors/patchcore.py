"""PatchCore: nearest-neighbour distance to a coreset of good patch features.

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler: "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022.

* locally aware patch features from two mid-level backbone stages (section 3.1);
* a memory bank of good patches, subsampled by greedy k-center on a seeded random
  projection, exact while the patches fit a memory budget and streamed beyond it, so
  memory stays bounded (section 3.2, :mod:`anomaly.coreset`);
* the patch score is the Euclidean distance to the nearest bank patch (faiss, exact flat
  index by default, HNSW as an option);
* the image score is the largest patch score, reweighted as in the paper's eq. 7 by how
  isolated the matched bank patch is among its ``b`` nearest bank neighbours; on a grid
  coarser than the finest layer (the default 16 px grid) it is searched again at the
  finest stride in the grid's highest-scoring cells, against a second bank of fine patches
  (``refine_cells``), so small defects are not averaged away;
* the map is upsampled to the model input, Gaussian-smoothed (sigma 4) and brought back to
  the original image's coordinates.

Everything after the backbone is numpy/faiss. What each option trades, and the figures
behind the defaults: docs/methods.md.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from anomaly.arrays import load_arrays, save_arrays
from anomaly.coreset import StreamingCoreset
from anomaly.detectors.base import AnomalyResult, hyperparameters
from anomaly.detectors.deep import BackboneDetector
from anomaly.errors import BundleError, InvalidParameterError
from anomaly.folds import assign_folds, score_out_of_fold
from anomaly.imageio import ImageLike
from anomaly.knn import INDEX_TYPES, NearestNeighbours
from anomaly.maps import model_resolution_map, to_image_map
from anomaly.progress import progress

log = logging.getLogger(__name__)


#: ``grid_stride="auto"`` coarsens the grid only if it keeps this many cells on the shorter side.
MIN_AUTO_GRID_CELLS = 16


def eq7_score(queries: np.ndarray, dist: np.ndarray, idx: np.ndarray, bank: np.ndarray,
              bank_neighbors: np.ndarray) -> float:
    """Paper eq. 7: s = (1 - softmax(-)) * s*, weighting the most anomalous patch.

    Args:
        queries: ``(P, D)`` patch features of one image.
        dist: ``(P,)`` their nearest-bank distances.
        idx: ``(P,)`` their nearest-bank indices.
        bank: ``(M, D)`` memory bank.
        bank_neighbors: ``(M, b)`` each bank patch's ``b`` nearest bank patches, itself first.
    """
    worst = int(np.argmax(dist))
    s_star = float(dist[worst])
    support = bank_neighbors[idx[worst]]
    d = np.linalg.norm(bank[support] - queries[worst], axis=1)
    # 1 - exp(d_0) / sum exp(d_j), computed stably.
    e = np.exp(d - d.max())
    weight = 1.0 - e[0] / e.sum()
    return float(weight * s_star)


@functools.lru_cache(maxsize=16)
def fine_owner(grid: tuple[int, int], stride: int, origin: tuple[float, float], fine_grid: tuple[int, int],
               fine_stride: int, fine_origin: tuple[float, float]) -> np.ndarray:
    """``(hf * wf,)`` flat index of the grid cell whose centre is nearest each finer cell.

    Args:
        grid: ``(h, w)`` of the grid, cell ``(i, j)`` centred on ``stride * (i, j) + origin``.
        stride, origin: Its stride and cell ``(0, 0)``'s centre in model pixels.
        fine_grid, fine_stride, fine_origin: The same of the finer grid.
    """

    def nearest(n_fine: int, n_coarse: int, o_fine: float, o_coarse: float) -> np.ndarray:
        centres = fine_stride * np.arange(n_fine) + o_fine
        # floor(x + 0.5), not rint: a centre half-way between two cells goes the same way
        # on every row and column.
        return np.clip(np.floor((centres - o_coarse) / stride + 0.5), 0, n_coarse - 1).astype(np.int64)

    rows = nearest(fine_grid[0], grid[0], fine_origin[0], origin[0])
    cols = nearest(fine_grid[1], grid[1], fine_origin[1], origin[1])
    owner = (rows[:, None] * grid[1] + cols[None, :]).reshape(-1)
    owner.flags.writeable = False  # cached: shared by every call
    return owner


@hyperparameters
class PatchCore(BackboneDetector):
    """PatchCore anomaly detector.

    Args:
        backbone, image_size, resize, roi, smoothing_sigma, batch_size: As for
            :class:`~anomaly.detectors.deep.BackboneDetector`. With ``resize="tile"`` the
            frame is cut into overlapping ``image_size`` tiles (:mod:`anomaly.tiling`): the
            bank holds every tile's patches (patches are matched regardless of position,
            so one bank serves every tile), each tile is scored as an image, the image
            score is the largest tile score and the map is the tiles' maps blended.
        layers: Backbone stages whose features are combined (two mid-level ones).
        patch_size: Neighbourhood of the local feature aggregation.
        channels_per_layer: Each layer's channels are averaged down to at most this many
            (PatchCore's adaptive average pooling, applied per layer) before they are
            concatenated; ``None`` (default) keeps them all. With EfficientNet-Lite0's
            stages 2 and 3 (40 and 112 channels), 40 gives both layers equal weight in the
            patch distance and halves the nearest-neighbour cost: it helps the fine
            woven ``grid`` texture and hurts ``magnetic_tile``, so it is an option, not the
            default (see docs/methods.md).
        grid_stride: Stride of the patch grid in model pixels, a multiple of the finest
            layer's; ``None`` is the finest layer's (8 for EfficientNet-Lite0, as in the
            paper). ``"auto"`` (default) takes twice the finest stride when the grid then
            keeps at least :data:`MIN_AUTO_GRID_CELLS` cells along the input's shorter side
            (16 px from a 256 px input on), else the finest: the stride-8 layer is averaged
            over each 16 px cell, a quarter of the patches to search, because the search
            dominates scoring time after the backbone. Localisation is coarser, and the
            grid's own image score averages small defects away, so on a grid coarser than
            the finest the image score is refined (:attr:`refine_cells`).
        coreset_ratio: Fraction of training patches kept in the memory bank.
        max_bank_size: Cap on the bank size (bounds scoring time and memory); with a
            refined score, on the finest grid's bank, which gives the image score.
        projection_dim: Random-projection dimension for the coreset distances.
        num_neighbors: ``b`` of the paper's image-score reweighting.
        index: ``"flat"`` (exact) or ``"hnsw"`` (approximate) nearest-neighbour index.
        tile_overlap: Least overlap of neighbouring tiles in tile pixels (``resize="tile"``).
        tile_scale: Scale of the frame before it is tiled (1.0: native resolution).
        random_state: Seed of the coreset's projection and first centre.

    Fixed choices, not parameters (bundle format 2 dropped them as options: no default
    needed another value; format-1 bundles fitted otherwise are refused, see
    :func:`anomaly.bundle.migrate_manifest`):

    * ``coarse_sampling = "linear"``: the layers coarser than the grid are sampled
      bilinearly at its cells, as PatchCore's own code resizes its deeper layer;
    * ``refine_cells = 8``: coarse-to-fine image score on a grid coarser than the finest
      layer's (the default 16 px grid): the 8 highest-scoring grid cells are searched
      again on the finest grid, against a second memory bank selected the same way from
      the finest grid's training patches (capped at ``max_bank_size``), and the image
      score is eq. 7 on those finer patches. A small defect that a 16 px cell averages
      down still lifts its cell into the top few, and the finer search scores it at full
      strength: about 32 more queries per image, where searching the whole finest grid
      would add 768. The map stays on the grid. What it buys and costs: docs/methods.md;
    * ``coarse_bank_size = 1024``: cap on the grid's bank when the score is refined (it
      then only ranks the cells and draws the map). Its search, 256 queries per 256 px
      image, is the larger one: 1,024 instead of 2,048 pays for the refinement's search.
    """

    name = "patchcore"

    layers: Sequence[int] = (2, 3)
    patch_size: int = 3
    channels_per_layer: int | None = None
    grid_stride: int | str | None = "auto"
    coreset_ratio: float = 0.1
    max_bank_size: int = 2048
    projection_dim: int = 128
    num_neighbors: int = 9
    index: str = "flat"
    tile_overlap: int = 32
    tile_scale: float = 1.0

    supports_tiling: ClassVar[bool] = True
    coarse_sampling: ClassVar[str] = "linear"
    refine_cells: ClassVar[int] = 8
    coarse_bank_size: ClassVar[int] = 1024

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
        stride = self.grid_stride
        if stride is not None and stride != "auto" and (
                isinstance(stride, (str, bool)) or not float(stride).is_integer() or int(stride) < 1):
            # Whether it is a multiple of the finest layer's stride is checked by
            # feature_stride, where the backbone is known.
            raise InvalidParameterError(f"grid_stride must be 'auto', null or a positive multiple of the "
                                        f"finest layer's stride, got {stride!r}")
        if self.channels_per_layer is not None and int(self.channels_per_layer) < 1:
            raise InvalidParameterError(f"channels_per_layer must be >= 1 or None, got {self.channels_per_layer}")

    @property
    def feature_stride(self) -> int:
        finest = int(self.extractor.reductions[0])
        if self.grid_stride is None:
            return finest
        if self.grid_stride == "auto":
            return 2 * finest if min(self.geometry.size) // (2 * finest) >= MIN_AUTO_GRID_CELLS else finest
        if int(self.grid_stride) % finest:
            raise InvalidParameterError(f"grid_stride must be 'auto', null or a multiple of the finest "
                                        f"layer's stride {finest}, got {self.grid_stride!r}")
        return int(self.grid_stride)

    @property
    def fine_stride(self) -> int | None:
        """Stride of the refining grid (the finest layer's), or ``None`` when the image
        score is the grid's own (the grid is the finest). Without a backbone when
        ``grid_stride`` is ``None``."""
        if self.grid_stride is None or int(self.refine_cells) <= 0:
            return None
        finest = int(self.extractor.reductions[0])
        return finest if self.feature_stride > finest else None

    @property
    def _strides(self) -> tuple[int, ...]:
        """The grid's stride, then the refining grid's when there is one."""
        fine = self.fine_stride
        return (self.feature_stride,) if fine is None else (self.feature_stride, fine)

    def _new_coreset(self, share: float = 1.0, *, coarse: bool = False) -> StreamingCoreset:
        """A coreset stream for the bank that gives the image score, or with ``coarse`` for
        the grid's bank of a refined score (capped at ``coarse_bank_size``)."""
        cap = self.coarse_bank_size if coarse else self.max_bank_size
        return StreamingCoreset(ratio=float(self.coreset_ratio), max_size=int(cap),
                                projection_dim=int(self.projection_dim), random_state=int(self.random_state),
                                share=share)

    # -- fit ------------------------------------------------------------------------------
    def _fit(self, images: Sequence[ImageLike]) -> None:
        strides = self._strides
        # One bank per grid, each selected the same way from that grid's patches.
        coresets = [self._new_coreset(coarse=level == 0 and len(strides) > 1) for level in range(len(strides))]
        grids: list[tuple[int, int]] = []
        batches = self._input_batches(images)
        for batch, refs in progress(batches, desc="patchcore: features", total=self._n_batches(images)):
            feats_per_grid, _ = self._features_at(batch, strides)
            for level, (coreset, feats) in enumerate(zip(coresets, feats_per_grid)):
                n, dim, h, w = feats.shape
                if len(grids) == level:
                    grids.append((h, w))
                    inputs = len(images) * (1 if refs[0].layout is None else len(refs[0].layout))
                    whole, bounded = coreset.memory_estimate_mb(inputs * h * w, dim)
                    log.info(
                        "patchcore: %d px grid, %d inputs x %d patches x %d dims = %.0f MB of features; "
                        "%s coreset selection holds at most %.0f MB; bank <= %d patches",
                        strides[level], inputs, h * w, dim, whole,
                        "exact" if coreset.fits_exact(inputs * h * w, dim) else "streamed", bounded,
                        coreset.target_size(inputs * h * w),
                    )
                coreset.add(feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy())
        self.coreset_selection_ = "exact" if all(c.exact for c in coresets) else "streamed"
        self.memory_bank_ = coresets[0].finalize()
        self.n_patches_seen_ = coresets[0].seen
        self.grid_shape_ = grids[0]
        self.fine_bank_ = coresets[1].finalize() if len(strides) > 1 else None
        self._build_index()

    def _extend(self, images: Sequence[ImageLike]) -> None:
        """More goods: each bank is selected again from the stored bank and the new goods' patches.

        The stored bank stands for the patches it was selected from (greedy k-center
        coresets compose, as in the streamed selection and the cross-fit's fold banks,
        :mod:`anomaly.coreset`), so the old goods are not needed; the bank size follows
        every patch seen, old and new. Not bit-identical to a fit on all goods: the
        selection runs over a coreset of the old patches instead of all of them.
        """
        strides = self._strides
        coresets = [self._new_coreset(coarse=level == 0 and len(strides) > 1) for level in range(len(strides))]
        for batch, _ in progress(self._input_batches(images), desc="patchcore: features (added goods)",
                                 total=self._n_batches(images)):
            for coreset, feats in zip(coresets, self._features_at(batch, strides)[0]):
                dim = feats.shape[1]
                coreset.add(feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy())
        old_seen = int(self.n_patches_seen_)
        banks = [self.memory_bank_] + ([self.fine_bank_] if len(strides) > 1 else [])
        new_banks = []
        for level, (coreset, bank) in enumerate(zip(coresets, banks)):
            grid = self.grid_for(strides[level])
            # Patches the stored bank stands for on this grid (the count is kept for the first).
            seen = old_seen * grid[0] * grid[1] // max(1, self.grid_shape_[0] * self.grid_shape_[1])
            pool = np.concatenate([bank.astype(np.float32), coreset.pool()], axis=0)
            new_banks.append(coreset.select(pool, coreset.target_size(seen + coreset.seen), int(self.random_state)))
        self.memory_bank_ = new_banks[0]
        self.fine_bank_ = new_banks[1] if len(new_banks) > 1 else None
        self.n_patches_seen_ = old_seen + coresets[0].seen
        self.coreset_selection_ = "extended"
        self._build_index()

    def _build_index(self) -> None:
        self._knn, self.bank_neighbors_ = self._index_bank(self.memory_bank_)
        self._fine_knn = self.fine_bank_neighbors_ = None
        if getattr(self, "fine_bank_", None) is not None:
            self._fine_knn, self.fine_bank_neighbors_ = self._index_bank(self.fine_bank_)

    def _index_bank(self, bank: np.ndarray) -> tuple[NearestNeighbours, np.ndarray]:
        """A bank's search index and, for eq. 7, ``N_b(m*)`` of every bank patch, computed once:
        ``(m, b)`` int64 indices of its nearest bank patches, itself first."""
        b = min(int(self.num_neighbors), bank.shape[0])
        _, neighbours = NearestNeighbours(index="flat").fit(bank).search(bank, b)
        return NearestNeighbours(index=self.index).fit(bank), neighbours

    def training_meta(self) -> dict[str, Any]:
        meta = {
            "bank_size": int(self.memory_bank_.shape[0]),
            "feature_dim": int(self.memory_bank_.shape[1]),
            "patches_seen": int(self.n_patches_seen_),
            "grid_shape": list(self.grid_shape_),
            "random_state": int(self.random_state),
            # "exact" (one greedy selection over every patch) or "streamed" (chunk coresets)
            "coreset_selection": getattr(self, "coreset_selection_", None),
        }
        if getattr(self, "fine_bank_", None) is not None:
            meta["fine_bank_size"] = int(self.fine_bank_.shape[0])
            meta["fine_grid_shape"] = list(self.grid_for(self.fine_stride))
        return meta

    # -- score ----------------------------------------------------------------------------
    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        geometry, tiling = self.geometry, self.tiling
        scores = np.full(len(images), -np.inf)
        maps: list[np.ndarray | None] = [None] * len(images)
        stitchers = {}
        refine = getattr(self, "_fine_knn", None) is not None and self.fine_stride is not None
        for batch, refs in self._input_batches(images):
            layers, placements = self._layers(batch)
            feats = self._aggregate(layers, self.feature_stride)
            n, dim, h, w = feats.shape
            queries = feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy()
            dist, idx = self._knn.search(queries, 1)
            dist = dist[:, 0].reshape(n, h * w)
            idx = idx[:, 0].reshape(n, h * w)
            queries = queries.reshape(n, h * w, dim)
            if refine:
                input_scores = self._refined_scores(dist, layers)
            else:
                input_scores = [eq7_score(queries[i], dist[i], idx[i], self.memory_bank_, self.bank_neighbors_)
                                for i in range(n)]
            for i, ref in enumerate(refs):
                # A tiled image's score is its largest tile score: the largest over all its patches.
                scores[ref.owner] = max(scores[ref.owner], input_scores[i])
                model_map = model_resolution_map(dist[i].reshape(h, w), geometry.size, float(self.smoothing_sigma),
                                                 self.feature_stride, self.feature_origin)
                if tiling is None:
                    maps[ref.owner] = to_image_map(model_map, geometry, placements[i])
                    continue
                stitcher = stitchers.setdefault(ref.owner, tiling.stitcher(ref.layout))
                stitcher.add(ref.tile, model_map)
                if stitcher.complete:
                    maps[ref.owner] = stitchers.pop(ref.owner).result()
        return AnomalyResult(scores=scores, maps=maps)

    def _refined_scores(self, coarse_dist: np.ndarray, layers: Sequence[Any]) -> list[float]:
        """Image scores searched again on the finest grid in each image's top grid cells.

        Only the picked cells of the finest grid are aggregated
        (:func:`~anomaly.features.patches.aggregate_cells`): about 32 of 1,024 on a 256 px
        input, at a few tenths of a millisecond with their search.

        Args:
            coarse_dist: ``(n, h * w)`` nearest-bank distances on the grid.
            layers: The backbone's ``(n, C_l, h_l, w_l)`` feature maps of the same images.

        Returns:
            ``n`` eq. 7 scores against the fine bank, each over the finest cells that lie in
            the image's ``refine_cells`` highest-scoring grid cells.
        """
        fine = self.fine_stride
        n, cells = coarse_dist.shape
        fine_grid = self.grid_for(fine)
        owner = fine_owner(self.feature_grid, self.feature_stride, self.feature_origin,
                           fine_grid, fine, self.origin_for(fine))
        if owner.max() + 1 > cells:
            raise InvalidParameterError(f"grid of {cells} cells, expected {self.feature_grid}")
        k = min(int(self.refine_cells), cells)
        picked = []
        for i in range(n):
            top = np.argpartition(-coarse_dist[i], k - 1)[:k] if k < cells else np.arange(cells)
            chosen = np.zeros(cells, dtype=bool)  # a boolean lookup: cheaper than np.isin here
            chosen[top] = True
            picked.append(np.flatnonzero(chosen[owner]))
        per_image = self._aggregate_cells(layers, fine, picked)
        # One search for the whole batch's picked cells (a few dozen per image).
        queries = np.concatenate(per_image, axis=0)
        dist, idx = self._fine_knn.search(queries, 1)
        out, start = [], 0
        for rows in picked:
            stop = start + len(rows)
            out.append(eq7_score(queries[start:stop], dist[start:stop, 0], idx[start:stop, 0],
                                 self.fine_bank_, self.fine_bank_neighbors_))
            start = stop
        return out

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        arrays = {"memory_bank": self.memory_bank_, "bank_neighbors": self.bank_neighbors_.astype(np.int64)}
        fine = getattr(self, "fine_bank_", None) is not None
        if fine:
            arrays.update(fine_memory_bank=self.fine_bank_,
                          fine_bank_neighbors=self.fine_bank_neighbors_.astype(np.int64))
            self._fine_knn.save(directory / "fine_bank.faiss")
        save_arrays(directory / "state.npz", arrays)
        self._knn.save(directory / "bank.faiss")
        return {
            "arrays": "state.npz",
            "index_file": "bank.faiss",
            **({"fine_index_file": "fine_bank.faiss"} if fine else {}),
            **self._backbone_state(),
            "patches_seen": int(self.n_patches_seen_),
            "grid_shape": list(self.grid_shape_),
            "coreset_selection": getattr(self, "coreset_selection_", None),
        }

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        fine = "fine_index_file" in meta
        names = ["memory_bank", "bank_neighbors"] + (["fine_memory_bank", "fine_bank_neighbors"] if fine else [])
        arrays = load_arrays(directory / meta.get("arrays", "state.npz"), names)
        self.memory_bank_ = arrays["memory_bank"].astype(np.float32)
        self.bank_neighbors_ = arrays["bank_neighbors"]
        self.n_patches_seen_ = int(meta.get("patches_seen", 0))
        self.grid_shape_ = tuple(meta.get("grid_shape", (0, 0)))
        self.coreset_selection_ = meta.get("coreset_selection")  # absent from bundles before it was recorded
        self._knn = NearestNeighbours(index=self.index).load(directory / meta.get("index_file", "bank.faiss"))
        self.fine_bank_ = self.fine_bank_neighbors_ = self._fine_knn = None
        self._set_backbone_from_meta(meta)
        if fine:
            self.fine_bank_ = arrays["fine_memory_bank"].astype(np.float32)
            self.fine_bank_neighbors_ = arrays["fine_bank_neighbors"]
            self._fine_knn = NearestNeighbours(index=self.index).load(directory / meta["fine_index_file"])
        elif self.fine_stride is not None:  # builds the backbone, unless grid_stride is None
            raise BundleError(
                f"{directory}: this PatchCore was fitted without the finest-grid bank that refines its image "
                "score (a format-1 bundle from before the coarse-to-fine score, or with refine_cells=0); "
                "that scoring was removed: retrain the model")

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

        Each image's patch features are computed once for the banks (on each grid, when the
        image score is refined on a finer one). Every fold's patches
        are streamed into a fold coreset (:class:`~anomaly.coreset.StreamingCoreset`); the
        bank without fold ``j`` is the greedy k-center over the other folds' coresets, and
        the final bank, kept in ``self``, over all of them: greedy
        k-center coresets compose (Indyk et al., PODS 2014), so the fold banks cost a
        fraction of a fit. Held-out images are scored through :meth:`score` of a model
        holding the fold bank, so their scores and maps are exactly what such a model gives.

        Args:
            images: Good images (arrays, paths or bytes).
            n_folds: Number of folds (see :func:`anomaly.folds.assign_folds`).
            random_state: Seed of the fold split.
            max_map_side: Shrink returned maps to this long side (``None``: full size).

        Returns:
            Out-of-fold scores ``(N,)`` and maps, in input order.
        """
        self._validate_params()
        images = list(images)
        folds = assign_folds(len(images), n_folds, random_state)
        k = int(folds.max()) + 1
        seed = int(self.random_state)
        strides = self._strides
        # Per grid, one stream per fold, all with the same seed (hence the same
        # projection), fed image by image. Each checks the exact selection's budgets for the
        # whole set (its share 1 / k), since the banks select over the union of the folds'
        # pools; beyond them no fold holds more than a chunk and its kept coresets.
        streams = [[self._new_coreset(share=1.0 / k, coarse=level == 0 and len(strides) > 1) for _ in range(k)]
                   for level in range(len(strides))]
        grids: list[tuple[int, int]] = [(0, 0)] * len(strides)
        for batch, refs in progress(self._input_batches(images), desc="patchcore: features (cross-fit)",
                                    total=self._n_batches(images)):
            feats_per_grid, _ = self._features_at(batch, strides)
            for level, f in enumerate(feats_per_grid):
                n, dim, h, w = f.shape
                grids[level] = (h, w)
                f = f.permute(0, 2, 3, 1).reshape(n, h * w, dim).numpy()
                for i, ref in enumerate(refs):  # a tile goes to its image's fold
                    streams[level][folds[ref.owner]].add(f[i])
        self.coreset_selection_ = "exact" if all(s.exact for level in streams for s in level) else "streamed"
        pools = [[s.pool() for s in level] for level in streams]

        def seen(level: int, pool_ids: list[int]) -> int:
            return sum(streams[level][p].seen for p in pool_ids)

        def bank_from(level: int, pool_ids: list[int]) -> np.ndarray:
            pool = np.concatenate([pools[level][p] for p in pool_ids], axis=0)
            first = streams[level][0]
            return first.select(pool, first.target_size(seen(level, pool_ids)), seed)

        def banks(pool_ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
            fine = bank_from(1, pool_ids) if len(strides) > 1 else None
            return bank_from(0, pool_ids), fine

        def fold_model(j: int, inside: np.ndarray) -> "PatchCore":
            model = self._unfitted_copy()
            others = [p for p in range(k) if p != j]
            model.memory_bank_, model.fine_bank_ = banks(others)
            model.n_patches_seen_ = seen(0, others)
            model.grid_shape_ = grids[0]
            model._build_index()
            model.fitted_ = True
            return model

        result = score_out_of_fold(images, folds, fold_model, max_map_side, desc="patchcore: out-of-fold scores")
        self.memory_bank_, self.fine_bank_ = banks(list(range(k)))
        self.n_patches_seen_ = seen(0, list(range(k)))
        self.grid_shape_ = grids[0]
        self._build_index()
        self.fitted_ = True
        return result
