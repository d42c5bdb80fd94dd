"""Whole scoring graphs of the deep detectors, as torch modules ready for ONNX export.

Each module takes the model-input pixels of a batch and returns the image scores and the
anomaly maps at model resolution, with everything in between inside: the backbone's
normalisation, the backbone, the patch aggregation, the distance to the good model
(PatchCore's bank as a constant, PaDiM's Gaussians), the map's upsampling and blur, and
the image score. Every step is the detector's own, written with the operators it is
defined by (the aggregation's and the map's separable linear operators,
:func:`~anomaly.features.patches.layer_axis_operators` and :func:`anomaly.maps._axis_operator`),
so the exported graph gives the bundle's scores to float rounding (checked by
:mod:`anomaly.export.parity`).

Input: ``pixels`` ``(N, h, w, 3)`` float32, RGB levels over their full scale (``level /
255`` for 8-bit, ``level / 65535`` for 16-bit images), after the geometry's ROI and resize
(:meth:`anomaly.geometry.Geometry.forward`), which stay outside the graph because they
depend on each image's size. Outputs: ``score`` ``(N,)`` and ``map`` ``(N, h, w)`` float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from anomaly.detectors.deep import BackboneDetector
from anomaly.detectors.discriminator import SOFT_NEIGHBOURS
from anomaly.errors import ExportError
from anomaly.features.patches import layer_axis_operators
from anomaly.knn import RERANK
from anomaly.maps import _axis_operator

INPUT = "pixels"
OUTPUTS = ("score", "map")


def _const(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.array(array, copy=True)).to(dtype)


class _Backbone(nn.Module):
    """Normalisation and the pruned backbone: ``(N, h, w, 3)`` pixels to the layers' maps."""

    def __init__(self, detector: BackboneDetector) -> None:
        super().__init__()
        ext = detector.extractor
        self.model = ext.model
        self.layers = list(ext.layers)
        self.register_buffer("mean", _const(ext.mean).reshape(1, 1, 1, 3))
        self.register_buffer("std", _const(ext.std).reshape(1, 1, 1, 3))

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        # (v - mean) / std in float32, the order of anomaly.features.preprocess's tables.
        x = ((pixels - self.mean) / self.std).permute(0, 3, 1, 2)
        return list(self.model.forward_intermediates(x, indices=self.layers, intermediates_only=True))


class _Grid(nn.Module):
    """Patch features of the backbone's maps on one grid, ``(N, cells, D)``.

    Per layer: an optional channel selection (PaDiM's subset) or channel pooling
    (PatchCore's ``channels_per_layer``), then ``rows @ X @ cols.T``: the local average and
    the resampling (:func:`~anomaly.features.patches.layer_axis_operators`).
    """

    def __init__(self, detector: BackboneDetector, stride: int, channels: Sequence[np.ndarray | None]) -> None:
        super().__init__()
        ext = detector.extractor
        (strides, offsets), kw = detector._aggregation(stride)
        shapes = [(-(-detector.geometry.size[0] // int(r)), -(-detector.geometry.size[1] // int(r))) for r in strides]
        self.n_layers = len(strides)
        self.grid = tuple(int(g) for g in kw["grid"])
        for i, (shape, r, offset) in enumerate(zip(shapes, strides, offsets)):
            rows, cols = layer_axis_operators(tuple(shape), int(r), (float(offset[0]), float(offset[1])),
                                              int(kw["patch_size"]), int(kw["out_stride"]), self.grid,
                                              tuple(float(o) for o in kw["origin"]), kw["sampling"])
            self.register_buffer(f"rows{i}", _const(rows))
            self.register_buffer(f"cols_t{i}", _const(np.asarray(cols).T))
            mix = None
            if kw["channels_per_layer"] is not None and int(kw["channels_per_layer"]) < ext.channels[i]:
                eye = torch.eye(ext.channels[i]).reshape(ext.channels[i], 1, ext.channels[i])
                pooled = torch.nn.functional.adaptive_avg_pool1d(eye, int(kw["channels_per_layer"]))
                mix = pooled[:, 0, :].T.contiguous()  # (C', C): pooled channel k = mix[k] . x
            self.register_buffer(f"mix{i}", mix)
            pick = channels[i]
            self.register_buffer(f"pick{i}", None if pick is None else torch.as_tensor(pick, dtype=torch.int64))

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for i, feat in enumerate(layers):
            pick, mix = getattr(self, f"pick{i}"), getattr(self, f"mix{i}")
            if pick is not None:
                feat = feat.index_select(1, pick)
            if mix is not None:
                feat = torch.einsum("kc,nchw->nkhw", mix, feat)
            y = torch.matmul(torch.matmul(getattr(self, f"rows{i}"), feat), getattr(self, f"cols_t{i}"))
            out.append(y.flatten(2).transpose(1, 2))  # (N, cells, C)
        return torch.cat(out, dim=2)


class _MapHead(nn.Module):
    """A grid map ``(N, gh * gw)`` to the model input, smoothed: ``K_rows @ m @ K_cols.T``."""

    def __init__(self, detector: BackboneDetector, grid: tuple[int, int], stride: int,
                 origin: tuple[float, float]) -> None:
        super().__init__()
        size, sigma = detector.geometry.size, float(detector.smoothing_sigma)
        self.grid = grid
        self.register_buffer("rows", _axis_operator(int(grid[0]), int(size[0]), sigma, int(stride), float(origin[0])))
        self.register_buffer("cols_t", _axis_operator(int(grid[1]), int(size[1]), sigma, int(stride),
                                                      float(origin[1])).T.contiguous())

    def forward(self, grid_map: torch.Tensor) -> torch.Tensor:
        m = grid_map.reshape(-1, self.grid[0], self.grid[1])
        return torch.matmul(torch.matmul(self.rows, m), self.cols_t)


def _candidates(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k +`` :data:`RERANK` bank rows ranked nearest by ``|b|^2 - 2 q.b``, and their exact ``|q - b|``.

    Returns:
        ``(N, P, wanted)`` int64 indices and ``(N, P, wanted)`` distances.
    """
    wanted = min(k + RERANK, int(bank.shape[0]))
    candidates = torch.topk(bank_sq - 2.0 * torch.matmul(queries, bank.T), wanted, dim=2, largest=False).indices
    diff = bank[candidates] - queries.unsqueeze(2)  # (N, P, wanted, D)
    return candidates, torch.sqrt((diff * diff).sum(dim=3))


def _nearest(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance to the nearest bank row, as :meth:`anomaly.knn.NearestNeighbours.search`
    gives it: candidates ranked by ``|b|^2 - 2 q.b``, the nearest of them by ``|q - b|``.

    Args:
        queries: ``(N, P, D)``.
        bank: ``(M, D)``; bank_sq: ``(M,)`` its squared norms.

    Returns:
        ``(N, P)`` distances and ``(N, P)`` int64 indices.
    """
    candidates, exact = _candidates(queries, bank, bank_sq, 1)
    best = exact.argmin(dim=2, keepdim=True)  # the first of equals, as the bundle's stable sort
    return exact.gather(2, best)[:, :, 0], candidates.gather(2, best)[:, :, 0]


def _nearest_k(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest bank rows by exact ``|q - b|`` among ``k +`` :data:`RERANK` candidates, as
    :meth:`anomaly.knn.NearestNeighbours.search` with ``k`` gives them.

    Returns:
        ``(N, P, k)`` ascending distances and ``(N, P, k)`` int64 indices.
    """
    candidates, exact = _candidates(queries, bank, bank_sq, k)
    dist, order = torch.topk(exact, k, dim=2, largest=False)
    return dist, candidates.gather(2, order)


def _eq7(queries: torch.Tensor, dist: torch.Tensor, index: torch.Tensor, bank: torch.Tensor,
         neighbours: torch.Tensor) -> torch.Tensor:
    """PatchCore's eq. 7 per image (:func:`anomaly.detectors.patchcore.eq7_score`), ``(N,)``."""
    worst = dist.argmax(dim=1, keepdim=True)  # (N, 1): the first largest, as np.argmax
    s_star = dist.gather(1, worst)[:, 0]
    matched = index.gather(1, worst)[:, 0]
    query = queries.gather(1, worst.unsqueeze(2).expand(-1, -1, queries.shape[2]))  # (N, 1, D)
    support = bank[neighbours[matched]]  # (N, b, D)
    d = torch.sqrt(((support - query) ** 2).sum(dim=2))
    weight = 1.0 - torch.softmax(d, dim=1)[:, 0]
    return weight * s_star


class PatchCoreGraph(nn.Module):
    """PatchCore's scoring (:meth:`anomaly.detectors.patchcore.PatchCore._score`) as one graph.

    The grid's nearest-bank distances give the map; the image score is eq. 7, on the grid
    itself or, when it is refined (the default 16 px grid), on the finest grid's cells
    inside the ``refine_cells`` highest-scoring grid cells, against the fine bank. The
    finest grid is aggregated whole (a few million multiply-adds, against the sparse
    gather the bundle does on the CPU) and its picked cells gathered; a grid cell that
    owns fewer finest cells than the most any cell owns is padded with masked entries.
    """

    def __init__(self, detector) -> None:
        super().__init__()
        self.backbone = _Backbone(detector)
        n_layers = len(detector.extractor.layers)
        stride = detector.feature_stride
        self.coarse = _Grid(detector, stride, [None] * n_layers)
        self.map_head = _MapHead(detector, detector.feature_grid, stride, detector.feature_origin)
        self.register_buffer("bank", _const(detector.memory_bank_))
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(dim=1))
        self.register_buffer("neighbours", torch.as_tensor(detector.bank_neighbors_, dtype=torch.int64))
        self.refine = getattr(detector, "_fine_knn", None) is not None and detector.fine_stride is not None
        if not self.refine:
            return
        from anomaly.detectors.patchcore import fine_owner

        fine = detector.fine_stride
        self.fine = _Grid(detector, fine, [None] * n_layers)
        cells = detector.feature_grid[0] * detector.feature_grid[1]
        owner = fine_owner(detector.feature_grid, stride, detector.feature_origin, detector.grid_for(fine), fine,
                           detector.origin_for(fine))
        children = [np.flatnonzero(owner == c) for c in range(cells)]
        width = max(1, max(len(c) for c in children))
        table = np.zeros((cells, width), dtype=np.int64)
        valid = np.zeros((cells, width), dtype=bool)
        for c, kids in enumerate(children):
            table[c, : len(kids)] = kids
            valid[c, : len(kids)] = True
        self.k = min(int(detector.refine_cells), cells)
        self.register_buffer("owned", torch.as_tensor(table))
        self.register_buffer("valid", torch.as_tensor(valid))
        self.register_buffer("fine_bank", _const(detector.fine_bank_))
        self.register_buffer("fine_bank_sq", (self.fine_bank * self.fine_bank).sum(dim=1))
        self.register_buffer("fine_neighbours", torch.as_tensor(detector.fine_bank_neighbors_, dtype=torch.int64))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.backbone(pixels)
        queries = self.coarse(layers)
        dist, index = _nearest(queries, self.bank, self.bank_sq)
        model_map = self.map_head(dist)
        if not self.refine:
            return _eq7(queries, dist, index, self.bank, self.neighbours), model_map
        top = dist.topk(self.k, dim=1).indices  # (N, k)
        picked = self.owned[top].flatten(1)  # (N, k * width)
        valid = self.valid[top].flatten(1)
        fine = self.fine(layers)  # (N, fine cells, D)
        fine_q = fine.gather(1, picked.unsqueeze(2).expand(-1, -1, fine.shape[2]))
        fine_dist, fine_index = _nearest(fine_q, self.fine_bank, self.fine_bank_sq)
        # Padding never wins the argmax: distances are >= 0.
        fine_dist = torch.where(valid, fine_dist, torch.full_like(fine_dist, -1.0))
        return _eq7(fine_q, fine_dist, fine_index, self.fine_bank, self.fine_neighbours), model_map


class PaDiMGraph(nn.Module):
    """PaDiM's scoring (:meth:`anomaly.detectors.padim.PaDiM._score`) as one graph.

    The channel subset is taken per layer before the aggregation (the aggregation acts on
    every channel alike, so the features are the same), the Mahalanobis distance per grid
    position is the norm of a batched product with the precisions' Cholesky factors
    (:meth:`~anomaly.detectors.padim.PaDiM.mahalanobis`), the image score the smoothed map's
    maximum.
    """

    def __init__(self, detector) -> None:
        super().__init__()
        self.backbone = _Backbone(detector)
        channels = detector.extractor.channels
        index = np.asarray(detector.channel_index_, dtype=np.int64)
        starts = np.cumsum([0] + list(channels))
        picks = [index[(index >= a) & (index < b)] - a for a, b in zip(starts[:-1], starts[1:])]
        self.grid = _Grid(detector, detector.feature_stride, picks)
        self.map_head = _MapHead(detector, detector.feature_grid, detector.feature_stride, detector.feature_origin)
        self.register_buffer("mean", _const(detector.mean_))  # (P, d)
        self.register_buffer("whitener", _const(detector.whitener()))  # (P, d, d)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.grid(self.backbone(pixels))  # (N, P, d)
        diff = (x - self.mean).transpose(0, 1)  # (P, N, d)
        z = torch.matmul(diff, self.whitener)
        dist = torch.sqrt((z * z).sum(dim=2)).transpose(0, 1)  # (N, P)
        model_map = self.map_head(dist)
        return model_map.flatten(1).max(dim=1).values, model_map


class DiscriminatorGraph(nn.Module):
    """The feature discriminator's scoring
    (:meth:`anomaly.detectors.discriminator.FeatureDiscriminator._score`) as one graph.

    Patch features standardised with the goods' statistics, with the residual to the nearest
    bank patch beside them (searched as :func:`_nearest`) unless the model feeds the feature
    alone, and the residual to the goods at the same grid cell where it feeds that; then
    the adaptor and discriminator as scoring computes them (folded into one layer where
    that saves work, :meth:`~anomaly.detectors.discriminator._Head.for_scoring`); the logit map
    smoothed, the image score its maximum.
    """

    def __init__(self, detector) -> None:
        super().__init__()
        self.backbone = _Backbone(detector)
        self.grid = _Grid(detector, detector.feature_stride, [None] * len(detector.extractor.layers))
        self.map_head = _MapHead(detector, detector.feature_grid, detector.feature_stride, detector.feature_origin)
        self.register_buffer("mean", _const(detector.feature_mean_))
        self.register_buffer("std", _const(detector.feature_std_))
        self.residual = bool(detector.residual)
        softness = float(getattr(detector, "residual_softness", 0.0))
        self.soft_k = min(SOFT_NEIGHBOURS, len(detector.bank_)) if self.residual and softness > 0 else 0
        self.temperature = softness * float(getattr(detector, "residual_scale_", 1.0))
        if self.residual:
            self.register_buffer("bank", _const(detector.bank_))
            self.register_buffer("bank_sq", (self.bank * self.bank).sum(dim=1))
        self.position = bool(getattr(detector, "position", False))
        if self.position:
            self.register_buffer("place_mean", _const(detector.places_[0]))
            self.register_buffer("place_spread", _const(detector.places_[1]))
        self.head = detector._scoring_head

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.grid(self.backbone(pixels)) - self.mean) / self.std  # (N, P, D)
        parts = [x]
        if self.soft_k:  # the softmin-weighted mean of the nearest few (FeatureDiscriminator._nearest_patch)
            dist, index = _nearest_k(x, self.bank, self.bank_sq, self.soft_k)
            weights = torch.softmax(-(dist * dist) / self.temperature, dim=2)  # (N, P, k)
            parts.append(x - (weights.unsqueeze(3) * self.bank[index]).sum(dim=2))
        elif self.residual:
            _, index = _nearest(x, self.bank, self.bank_sq)
            parts.append(x - self.bank[index])
        if self.position:
            parts.append((x - self.place_mean) / self.place_spread)
        x = torch.cat(parts, dim=2) if len(parts) > 1 else x
        n, cells, width = x.shape
        logits = self.head(x.reshape(-1, width)).reshape(-1, cells)
        model_map = self.map_head(logits)
        return model_map.flatten(1).max(dim=1).values, model_map


def _blur_operator(length: int, sigma: float) -> np.ndarray:
    """``(length, length)``: :func:`anomaly.detectors.ganomaly.smooth_map` along one axis (OpenCV's
    Gaussian with a reflected border), measured on unit impulses; the 2-D blur of ``E`` is
    ``K_rows @ E @ K_cols.T``."""
    from anomaly.detectors.ganomaly import smooth_map

    impulses = np.eye(length, dtype=np.float32)
    return np.stack([smooth_map(impulses[:, i : i + 1], sigma)[:, 0] for i in range(length)], axis=1)


class GanGraph(nn.Module):
    """GANomaly's and Skip-GANomaly's scoring (:meth:`anomaly.detectors.ganomaly._GanDetector._score`).

    The networks' own forward terms (the per-pixel L1 reconstruction error and the latent
    distance), the error map smoothed (OpenCV's Gaussian as two matrices), and the image
    score as the model combines them: the latent term, the smoothed map's maximum, or their
    weighted z-scores with the statistics stored in the bundle.
    """

    def __init__(self, detector) -> None:
        super().__init__()
        self.detector = detector
        self.generator = detector.generator_.eval()
        self.discriminator = detector.discriminator_.eval()
        h, w = detector.geometry.size
        sigma = float(detector.smoothing_sigma)
        self.register_buffer("rows", _const(_blur_operator(h, sigma) if sigma > 0 else np.eye(h)))
        self.register_buffer("cols_t", _const((_blur_operator(w, sigma) if sigma > 0 else np.eye(w)).T))
        self.mode = detector.image_score
        stats = detector.score_stats_
        self.weights = {}
        if self.mode not in ("latent", "reconstruction"):
            lam = float(detector.reconstruction_weight)
            for term, weight in (("reconstruction", lam), ("latent", 1.0 - lam)):
                std = float(stats[f"{term}_std"])
                self.weights[term] = (weight, float(stats[f"{term}_mean"]), std if std > 0 else 1.0)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((pixels - 0.5) / 0.5).permute(0, 3, 1, 2)  # the GANs' normalisation (ganomaly._MEAN, _STD)
        error, latent = self.detector._forward_terms(x)  # the networks are this module's children
        model_map = torch.matmul(torch.matmul(self.rows, error), self.cols_t)
        reconstruction = model_map.flatten(1).max(dim=1).values
        if self.mode == "latent":
            return latent, model_map
        if self.mode == "reconstruction":
            return reconstruction, model_map
        terms = {"reconstruction": reconstruction, "latent": latent}
        score = sum(weight * (terms[t] - mean) / std for t, (weight, mean, std) in self.weights.items())
        return score, model_map


#: Detector name -> its graph.
GRAPHS = {"patchcore": PatchCoreGraph, "padim": PaDiMGraph, "discriminator": DiscriminatorGraph,
          "ganomaly": GanGraph, "skip-ganomaly": GanGraph}


def scoring_graph(detector) -> nn.Module:
    """The exportable scoring graph of a fitted detector.

    Raises:
        ExportError: the detector has no exportable graph.
    """
    name = getattr(detector, "name", type(detector).__name__)
    if name not in GRAPHS:
        raise ExportError(f"{name} cannot be exported to ONNX; exportable: {', '.join(sorted(GRAPHS))} "
                          "(the classical models run from their bundles in the runtime)")
    return GRAPHS[name](detector).eval()
