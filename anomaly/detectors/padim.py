"""PaDiM: a Gaussian per feature-grid position, scored by Mahalanobis distance.

Defard, Setkaliev, Loesch, Audigier: "PaDiM: a Patch Distribution Modeling Framework for
Anomaly Detection and Localization", ICPR workshops 2020.

* features of several backbone stages, brought to one grid and concatenated;
* a seeded random subset of ``n_features`` channels (saved in the bundle);
* per grid position a mean and a covariance regularised by ``covariance_eps * I``,
  accumulated in a streaming way (sums of x and x x^T in float64) so fitting holds no
  feature tensor of all images;
* the map is the Mahalanobis distance, computed batched over all positions at once
  (a batched matrix product, no Python loop over positions), then upsampled, smoothed and
  brought back to the original image; the image score is the map's maximum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from anomaly.arrays import load_arrays, save_arrays
from anomaly.detectors.base import AnomalyResult, hyperparameters
from anomaly.detectors.deep import BackboneDetector
from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.folds import assign_folds, score_out_of_fold
from anomaly.imageio import ImageLike
from anomaly.maps import model_resolution_map, to_image_map
from anomaly.progress import progress


def channel_subset(total_channels: int, n_features: int, random_state: int) -> np.ndarray:
    """PaDiM's random channel subset: ``n_features`` of ``total_channels``, seeded, sorted.

    Args:
        total_channels: Channels of the concatenated layers.
        n_features: How many to keep (at most ``total_channels``).
        random_state: Seed of ``numpy.random.default_rng``.

    Returns:
        ``(n_features,)`` int64 channel indices, increasing.
    """
    rng = np.random.default_rng(int(random_state))
    return np.sort(rng.choice(int(total_channels), size=int(n_features), replace=False)).astype(np.int64)


def gaussian(s1: np.ndarray, s2: np.ndarray, n: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-position mean and precision from running sums.

    Args:
        s1: ``(P, d)`` sums of ``x``; s2: ``(P, d, d)`` sums of ``x x^T`` (float64).
        n: Images summed.
        eps: Ridge added to every covariance's diagonal.

    Returns:
        ``(P, d)`` mean and ``(P, d, d)`` precision, float32. The covariance is the unbiased
        one; a single image gives ``eps * I`` only.
    """
    d = s1.shape[1]
    mean = s1 / n
    cov = (s2 - n * mean[:, :, None] * mean[:, None, :]) / max(n - 1, 1)
    cov += eps * np.eye(d)[None]
    return mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32)


@hyperparameters
class PaDiM(BackboneDetector):
    """PaDiM anomaly detector.

    Args:
        backbone, image_size, resize, roi, smoothing_sigma, batch_size: As for
            :class:`~anomaly.detectors.deep.BackboneDetector`.
        layers: Backbone stages combined (finest first).
        grid_stride: Feature-grid stride in model pixels (finer layers are average-pooled
            to it, coarser ones upsampled).
        n_features: Size of the random channel subset.
        covariance_eps: Ridge added to every covariance's diagonal.
        patch_size: Neighbourhood of a local average before the Gaussian (1 = none, as in
            the paper).
        random_state: Seed of the channel subset.

    Fixed, not a parameter (bundle format 2 dropped the option; format-1 bundles fitted
    with bilinear sampling are refused, see :func:`anomaly.bundle.migrate_manifest`):
    ``coarse_sampling = "nearest"``: each grid cell takes the coarser layers' cell whose
    receptive-field centre is nearest, as PaDiM's own code does (it repeats each coarse
    cell over the finer ones), so every position's Gaussian models real feature vectors.
    See docs/methods.md.
    """

    name = "padim"

    layers: Sequence[int] = (1, 2, 3)
    grid_stride: int = 8
    n_features: int = 100
    covariance_eps: float = 0.01
    patch_size: int = 1

    coarse_sampling: ClassVar[str] = "nearest"

    def _validate_params(self) -> None:
        self._validate_common()
        if int(self.n_features) < 1:
            raise InvalidParameterError(f"n_features must be >= 1, got {self.n_features}")
        if float(self.covariance_eps) <= 0:
            raise InvalidParameterError(f"covariance_eps must be > 0, got {self.covariance_eps}")
        stride = int(self.grid_stride)
        h, w = self.geometry.size
        if stride < 1 or h % stride or w % stride:
            raise InvalidParameterError(f"grid_stride must divide the image size {self.geometry.size}, got {stride}")

    @property
    def feature_stride(self) -> int:
        return int(self.grid_stride)

    @property
    def _grid(self) -> tuple[int, int]:
        return self.feature_grid

    # -- fit ------------------------------------------------------------------------------
    def _fit(self, images: Sequence[ImageLike]) -> None:
        total_channels = sum(self.extractor.channels)
        d = min(int(self.n_features), total_channels)
        self.channel_index_ = channel_subset(total_channels, d, int(self.random_state))
        gh, gw = self._grid
        positions = gh * gw
        s1 = np.zeros((positions, d), dtype=np.float64)
        s2 = np.zeros((positions, d, d), dtype=np.float64)
        self._grow(images, s1, s2, 0, "padim: features")

    def _extend(self, images: Sequence[ImageLike]) -> None:
        """More goods: the sums of ``x`` and ``x x^T`` are recovered from the stored Gaussians and grown.

        ``s1 = n mean`` and ``s2 = (n - 1) (precision^-1 - eps I) + n mean mean^T``, in
        float64, then the new goods' features are added and the Gaussians estimated again
        as :meth:`fit` does. The old goods are not needed; the result equals a fit on all
        goods up to the float32 rounding of the stored precision (measured in the tests).
        """
        d = len(self.channel_index_)
        n = int(self.n_train_)
        if n < 1:
            raise InvalidParameterError("this PaDiM does not record how many goods it was fitted on: fit it again")
        mean = self.mean_.astype(np.float64)
        cov = np.linalg.inv(self.precision_.astype(np.float64)) - float(self.covariance_eps) * np.eye(d)[None]
        s1 = n * mean
        s2 = (n - 1) * cov + n * mean[:, :, None] * mean[:, None, :]
        self._grow(images, s1, s2, n, "padim: features (added goods)")

    def _grow(self, images: Sequence[ImageLike], s1: np.ndarray, s2: np.ndarray, n: int, desc: str) -> None:
        """Add the images' features to the sums ``s1`` ``(P, d)`` and ``s2`` ``(P, d, d)`` of ``n``
        images (in place) and set the Gaussians from them."""
        for batch in progress(list(self._batches(images)), desc=desc):
            x = self._position_features(batch)  # (P, B, d)
            s1 += x.sum(axis=1)
            s2 += np.matmul(x.transpose(0, 2, 1), x)
            n += x.shape[1]
        self.mean_, self.precision_ = gaussian(s1, s2, n, float(self.covariance_eps))
        self.n_train_ = n

    def _position_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Channel-subset features of a batch, position-major ``(P, B, d)`` float64."""
        feats, _ = self._features(images)
        x = feats.numpy()[:, self.channel_index_]  # (B, d, gh, gw)
        b, d = x.shape[:2]
        return x.reshape(b, d, -1).transpose(2, 0, 1).astype(np.float64)

    def training_meta(self) -> dict[str, Any]:
        return {
            "channel_index": self.channel_index_.tolist(),
            "grid_shape": list(self._grid),
            "n_train": int(self.n_train_),
            "random_state": int(self.random_state),
        }

    # -- score ----------------------------------------------------------------------------
    def mahalanobis(self, x: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of position-major features.

        Computed as ``|(x - mean) L|`` with ``precision = L L^T`` (:meth:`whitener`), a
        sum of squares, rather than ``(x - mean)^T precision (x - mean)``, whose float32
        rounding is amplified by the precision's conditioning (few goods, a small ridge)
        and can even come out negative near the mean.

        Args:
            x: ``(P, B, d)`` features.

        Returns:
            ``(B, P)`` float32 distances.
        """
        diff = (x - self.mean_[:, None, :]).astype(np.float32)  # (P, B, d)
        z = np.matmul(diff, self.whitener())  # (P, B, d)
        return np.sqrt(np.einsum("pbd,pbd->bp", z, z))

    def whitener(self) -> np.ndarray:
        """``(P, d, d)`` float32 lower Cholesky factors ``L`` of the precisions (computed once)."""
        cached = getattr(self, "_whitener", None)
        if cached is None or cached[0] is not self.precision_:
            factor = np.linalg.cholesky(self.precision_.astype(np.float64)).astype(np.float32)
            self._whitener = cached = (self.precision_, factor)
        return cached[1]

    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        scores, maps = [], []
        geometry = self.geometry
        gh, gw = self._grid
        for batch in self._batches(images):
            feats, placements = self._features(batch)
            x = feats.numpy()[:, self.channel_index_]
            b, d = x.shape[:2]
            if d != self.mean_.shape[1]:
                raise InvalidImageError(f"feature size {d} does not match the model's {self.mean_.shape[1]}")
            dist = self.mahalanobis(x.reshape(b, d, -1).transpose(2, 0, 1))
            for i in range(b):
                model_map = model_resolution_map(dist[i].reshape(gh, gw), geometry.size, float(self.smoothing_sigma),
                                                 self.feature_stride, self.feature_origin)
                scores.append(float(model_map.max()))
                maps.append(to_image_map(model_map, geometry, placements[i]))
        return AnomalyResult(scores=np.asarray(scores), maps=maps)

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        save_arrays(
            directory / "state.npz",
            {"mean": self.mean_, "precision": self.precision_, "channel_index": self.channel_index_},
        )
        return {
            "arrays": "state.npz",
            **self._backbone_state(),
            "n_train": int(self.n_train_),
        }

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        arrays = load_arrays(directory / meta.get("arrays", "state.npz"), ["mean", "precision", "channel_index"])
        self.mean_ = arrays["mean"]
        self.precision_ = arrays["precision"]
        self.channel_index_ = arrays["channel_index"]
        self.n_train_ = int(meta.get("n_train", 0))
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
        """Fit on all images and score each one with Gaussians estimated without its fold.

        Features are computed once; the fold's per-position sums of ``x`` and ``x x^T`` are
        subtracted from the totals, so each fold model costs one batched inversion. The
        final model, kept in ``self``, is the one :meth:`fit` gives on all images.
        Held-out images are scored through :meth:`score` of a model holding the fold
        Gaussians, so their scores and maps are exactly what such a model gives. Arguments
        and result: the ``cross_fit_scores`` protocol of :mod:`anomaly.crossfit` (scores
        ``(N,)`` and maps, in input order).
        """
        self._validate_params()
        images = list(images)
        folds = assign_folds(len(images), n_folds, random_state)
        total_channels = sum(self.extractor.channels)
        d = min(int(self.n_features), total_channels)
        self.channel_index_ = channel_subset(total_channels, d, int(self.random_state))
        gh, gw = self._grid
        s1 = np.zeros((gh * gw, d), dtype=np.float64)
        s2 = np.zeros((gh * gw, d, d), dtype=np.float64)
        cached: list[np.ndarray] = []
        for batch in progress(list(self._batches(images)), desc="padim: features (cross-fit)"):
            x = self._position_features(batch)  # (P, B, d)
            s1 += x.sum(axis=1)
            s2 += np.matmul(x.transpose(0, 2, 1), x)
            cached += [x[:, b].astype(np.float32) for b in range(x.shape[1])]  # lossless: float32 features

        def fold_model(j: int, inside: np.ndarray) -> "PaDiM":
            x = np.stack([cached[i] for i in inside], axis=1).astype(np.float64)  # (P, n_j, d)
            model = self._unfitted_copy()
            model.channel_index_ = self.channel_index_
            model.mean_, model.precision_ = gaussian(
                s1 - x.sum(axis=1), s2 - np.matmul(x.transpose(0, 2, 1), x), len(images) - len(inside),
                float(self.covariance_eps))
            model.n_train_ = len(images) - len(inside)
            model.fitted_ = True
            return model

        result = score_out_of_fold(images, folds, fold_model, max_map_side, desc="padim: out-of-fold scores")
        self.mean_, self.precision_ = gaussian(s1, s2, len(images), float(self.covariance_eps))
        self.n_train_ = len(images)
        self.fitted_ = True
        return result
