"""A discriminator on frozen backbone features, trained on good images and synthetic defects.

The SimpleNet / GLASS family (Liu et al., "SimpleNet: A Simple Network for Image Anomaly
Detection and Localization", CVPR 2023; Chen et al., "A Unified Anomaly Synthesis Strategy
with Gradient Ascent for Industrial Anomaly Detection and Localization", ECCV 2024): a
feature adaptor and a small discriminator on a frozen backbone's patch features, trained to
tell good patches from made anomalies. Trained on good images only: the defects are made,
never collected.

* Input of a patch: its locally aware feature (PatchCore's, standardised per channel over
  the goods), as SimpleNet feeds it. With ``residual=True`` also its residual to the
  nearest patch of a coreset of good patches, so that it can learn which departures from
  the nearest good patch are defects and which are the spread of good parts; what each
  input scores and costs is measured side by side in ``benchmarks/discriminator.py``.
* With ``residual_softness > 0`` the residual is to a softmin-weighted mean of the
  :data:`SOFT_NEIGHBOURS` nearest bank patches instead of the nearest one: where two bank
  patches are equally near (to float precision), the hard choice is a jump that another
  runtime or CPU can land on the other side of (``benchmarks/export_ties.py``), and the
  weights make it continuous.
* With ``position=True`` also its residual to the goods at the same place: the feature
  minus the goods' mean at that grid cell over their spread there (PaDiM's per-position
  statistics, diagonal). Aligned parts (a grid, a cell, a machined surface) vary little at
  a given place, and the nearest patch anywhere can hide a defect that is normal elsewhere.
* The residuals it learns from are honest: the goods are split in two halves, and each
  half's patches (and the defects made from its images) are compared with a coreset of the
  other half only, as a new part is compared with the goods at inspection.
* Adaptor: one linear layer from ``[feature, residual]`` to the feature width (SimpleNet's);
  discriminator: a two-layer MLP with batch norm. Its logit is the anomaly map.
* Negatives: (a) feature space: good features plus Gaussian noise (SimpleNet), the residual
  recomputed; drawn once, or afresh every epoch (``fresh_noise``, as SimpleNet draws it
  every step), optionally pushed by ``ascent_steps`` of gradient ascent on the
  discriminator's loss towards what it takes for good, their distance from the good
  feature kept within the noise's shell (GLASS's global anomaly synthesis: anomalies at the
  decision boundary instead of far from it); (b) image space: the patches that synthetic defects of
  :mod:`anomaly.synthesis` cover (cut-paste, Poisson blending, scratches, spots, stains,
  brightness), the generator's masks as patch labels (GLASS's image-level branch, with our
  generator). Positives: good patches. Loss: binary cross-entropy with the two classes
  weighted equally (SimpleNet's truncated L1 saturates once a class is past its margin).
* The backbone is frozen: the features of the goods and of a seeded set of synthetic defects
  are computed once and the epochs run on them (small MLP steps on the CPU).
* Early stopping on held-out goods (at least :data:`MIN_HELD_OUT` of them) and the defects
  made from them: the validation loss after every epoch; the best epoch's weights are kept.
  With ``checkpoint_dir`` every epoch is checkpointed and an interrupted run resumes where it
  stopped (same images, same parameters: otherwise it starts afresh).
* The image score is the largest value of the smoothed map at model resolution.

Kept apart from the calibration's synthetic-defect detection estimate
(:mod:`anomaly.detection_estimate`): the training defects use the kinds in
:data:`TRAIN_KINDS` and seeds derived from ``random_state`` by :data:`TRAIN_SEED_OFFSET`;
the estimate uses its own seeds and every kind, and reports the kinds never trained on
(``missing``, ``deform``) beside the others (``training_meta()["synthetic"]``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from anomaly.arrays import load_arrays, save_arrays
from anomaly.coreset import greedy_kcenter, random_projection
from anomaly.detectors.base import AnomalyResult, hyperparameters
from anomaly.detectors.deep import BackboneDetector
from anomaly.detectors.checkpoints import fingerprint, read_checkpoint, write_checkpoint
from anomaly.errors import DatasetError, InvalidImageError, InvalidParameterError
from anomaly.folds import assign_folds, score_out_of_fold
from anomaly.imageio import ImageLike, as_image
from anomaly.knn import SMALL_QUERY_BATCH, NearestNeighbours
from anomaly.maps import model_resolution_map, to_image_map
from anomaly.progress import progress

log = logging.getLogger(__name__)

#: Defect kinds the discriminator trains on; the others are left to the detection estimate.
TRAIN_KINDS = ("cutpaste", "poisson", "scratch", "spot", "stain", "brightness")
#: Offset of the training defects' seeds from ``random_state`` (the detection estimate uses
#: the training seed itself and ``seed + 1000``: these never coincide).
TRAIN_SEED_OFFSET = 7919
#: A patch is a defect patch when the defect covers at least this share of its cell; the
#: patches of a synthetic image are not used otherwise (a faint edge is neither class).
COVERED = 0.25
#: Dimension of the random projection the coreset selection measures distances in.
CORESET_PROJECTION = 64
#: Bank patches the soft residual (``residual_softness > 0``) weighs.
SOFT_NEIGHBOURS = 4
#: Most good patches measured for the soft residual's distance scale.
SCALE_SAMPLE = 8192
#: Images' worth of the overall spread (1) that each grid cell's spread is shrunk towards.
POSITION_PRIOR = 4.0
#: Fewest held-out goods that early stopping listens to. The validation loss of one or two
#: images and their made defects is noise: on 12 small goods it rose from the first epoch
#: while the head was still learning to find pasted squares, and stopping there left logits
#: within 0.1 of each other. Below this, training runs its ``epochs``.
MIN_HELD_OUT = 3
#: Training examples per optimiser step.
STEP = 1024
#: A gradient-ascent step on the feature-space anomalies, as a share of the noise shell's outer radius.
#: GLASS's 20 steps of 0.001 move its noise by about 3 % of its length; ours, 5 steps of this,
#: by 2.5 %. Steps of 3 % each leave the head unable to tell the pasted squares of the tests
#: from goods (the ascent finds adversarial directions): the push must stay a nudge.
ASCENT_STEP = 0.005
CHECKPOINT_FILE = "checkpoint.pt"
_CHECKPOINT_FORMAT = "anomaly-discriminator-checkpoint-1"


def chunked_search(index: NearestNeighbours, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k)`` in chunks of :data:`~anomaly.knn.SMALL_QUERY_BATCH` rows: ``(n, k)`` distances, indices.

    NearestNeighbours searches such a chunk with one torch product; faiss, from about 1,000
    queries on, wakes BLAS threads that compete with torch's (anomaly.knn).
    """
    found = [index.search(x[start : start + SMALL_QUERY_BATCH], k) for start in range(0, len(x), SMALL_QUERY_BATCH)]
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def soft_weights(dist: np.ndarray, temperature: float) -> np.ndarray:
    """Softmin weights ``(n, k)`` of ascending distances ``(n, k)``: ``exp(-(d_j^2 - d_1^2) / temperature)``.

    Continuous in the distances, so two equally near neighbours share the weight instead of
    one of them taking it all by a rounding.
    """
    d2 = dist.astype(np.float64) ** 2
    w = np.exp(-(d2 - d2[:, :1]) / temperature)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


class _Head(nn.Module):
    """Feature adaptor and discriminator: ``(N, k D)`` (the feature and its residuals) to ``(N,)`` logits."""

    def __init__(self, dim: int, hidden: int, inputs: int = 2) -> None:
        super().__init__()
        self.adaptor = nn.Linear(inputs * dim, dim)
        self.discriminator = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                           nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminator(self.adaptor(x))[:, 0]

    def for_scoring(self) -> nn.Module:
        """The same function in inference form: adaptor and batch norm folded into one layer where that saves work.

        Adaptor, first layer and batch norm (at its running statistics) are affine maps in a
        row, so ``(N, k D) -> (N, hidden)`` is one ``Linear``: ``k D hidden`` multiplications a
        patch instead of ``k D D + D hidden`` (fewer whenever ``k D < D + hidden``, as for the
        feature alone). Otherwise the head itself, in eval mode.
        """
        self.eval()
        first, norm, _, last = self.discriminator
        inputs, dim = self.adaptor.in_features, self.adaptor.out_features
        if inputs * first.out_features >= inputs * dim + dim * first.out_features:
            return self
        with torch.no_grad():
            scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
            weight = scale[:, None] * (first.weight.double() @ self.adaptor.weight.double())
            bias = scale * (first.weight.double() @ self.adaptor.bias.double() + first.bias.double()
                            - norm.running_mean.double()) + norm.bias.double()
        folded = nn.Linear(inputs, first.out_features)
        folded.weight.data, folded.bias.data = weight.float(), bias.float()
        return _FoldedHead(folded, last).eval()


class _FoldedHead(nn.Module):
    """:meth:`_Head.for_scoring`'s folded form: one ``Linear``, the leaky ReLU, the output layer."""

    def __init__(self, first: nn.Linear, last: nn.Linear) -> None:
        super().__init__()
        self.first, self.last = first, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.leaky_relu(self.first(x), 0.2))[:, 0]


def coverage(mask: np.ndarray, geometry, grid: tuple[int, int]) -> np.ndarray:
    """Share of each grid cell that a defect mask covers, in the model input.

    Args:
        mask: ``(H, W)`` bool mask in the original image.
        geometry: The detector's :class:`~anomaly.geometry.Geometry`.
        grid: ``(h, w)`` of the feature grid.

    Returns:
        ``(h * w,)`` float32 in ``[0, 1]``.
    """
    model_mask, _ = geometry.forward(mask.astype(np.float32))
    model_mask = np.asarray(model_mask, dtype=np.float32).reshape(model_mask.shape[:2])
    return cv2.resize(model_mask, (grid[1], grid[0]), interpolation=cv2.INTER_AREA).reshape(-1)


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with good (0) and anomalous (1) examples weighted equally."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    bad = labels > 0.5
    parts = [losses[mask].mean() for mask in (bad, ~bad) if bool(mask.any())]
    return sum(parts) / len(parts)


@dataclass
class _NoiseSource:
    """Good patches that become feature-space anomalies every epoch, with what their inputs are measured against.

    Attributes:
        clean: ``(n, D)`` standardised good patches.
        cells: ``(n,)`` their grid cells.
        index: Search index of ``bank`` (``None`` without the residual).
        bank: ``(m, D)`` the good patches their residual is taken against.
        places: Per-cell mean and spread ``(P, D)``, or ``None`` without ``position``.
    """

    clean: np.ndarray
    cells: np.ndarray
    index: NearestNeighbours | None
    bank: np.ndarray
    places: tuple[np.ndarray, np.ndarray] | None


@hyperparameters
class FeatureDiscriminator(BackboneDetector):
    """A discriminator of good and anomalous backbone patch features (see the module docstring).

    Args:
        backbone, layers, image_size, resize, roi, patch_size, smoothing_sigma, batch_size:
            As for :class:`~anomaly.detectors.deep.BackboneDetector` (``resize="tile"``
            is not supported), but EfficientNet-Lite2 at its 260 px by default: on the
            dev sets it paid off over Lite0 at 256 px, at less cost than the residual's
            search (``benchmarks/discriminator.py``).
        residual: Feed the residual to the nearest good patch beside the feature (``False``,
            the default: the feature alone, as SimpleNet).
        residual_softness: ``0``: the residual to the nearest bank patch; ``> 0``: to the mean
            of the :data:`SOFT_NEIGHBOURS` nearest weighted by ``exp(-(d_j^2 - d_1^2) / (s
            m))``, ``m`` the goods' median squared nearest distance (see the module docstring).
        position: Also feed the residual to the goods at the same grid cell, over their
            spread there (see the module docstring).
        hidden_dim: Width of the discriminator's hidden layer (GLASS's 1,024).
        bank_size: Good patches kept (greedy coreset) to take residuals against.
        noise_std: Largest standard deviation of the feature-space noise, in units of the
            standardised features' per-channel spread (each noisy patch draws its own
            between half this and this).
        fresh_noise: Draw the feature-space noise afresh every epoch (``False``: once).
        ascent_steps: Gradient-ascent steps that push each epoch's noisy patches towards
            what the discriminator takes for good, within the noise's shell (GLASS); ``0``:
            none. Implies ``fresh_noise``.
        synthetic_per_image: Image-space synthetic defects made from each good image.
        patches_per_image: Good patches (and half as many noisy ones) taken from each image.
        epochs: Most training epochs.
        patience: Epochs without a better validation loss before training stops.
        learning_rate: Adam's learning rate.
        held_out_share: Share of the goods held out for early stopping (none where that is
            fewer than :data:`MIN_HELD_OUT` images: then every epoch runs).
        checkpoint_dir: Folder for a checkpoint after every epoch, to resume an interrupted run.
        random_state: Seed of every random choice (synthetic defects, samples, initial weights).
    """

    name = "discriminator"

    backbone: str = "efficientnet_lite2"
    image_size: int | Sequence[int] = 260
    layers: Sequence[int] = (2, 3)
    patch_size: int = 3
    residual: bool = False
    residual_softness: float = 0.0
    position: bool = False
    hidden_dim: int = 1024
    bank_size: int = 2048
    noise_std: float = 0.5
    fresh_noise: bool = False
    ascent_steps: int = 0
    synthetic_per_image: int = 2
    patches_per_image: int = 256
    epochs: int = 30
    patience: int = 4
    learning_rate: float = 1e-3
    held_out_share: float = 0.1
    checkpoint_dir: str | None = None

    coarse_sampling: ClassVar[str] = "linear"

    def _validate_params(self) -> None:
        self._validate_common()
        for key in ("hidden_dim", "bank_size", "epochs", "patches_per_image", "patience"):
            if int(getattr(self, key)) < 1:
                raise InvalidParameterError(f"{key} must be >= 1, got {getattr(self, key)}")
        if int(self.ascent_steps) < 0:
            raise InvalidParameterError(f"ascent_steps must be >= 0, got {self.ascent_steps}")
        if int(self.synthetic_per_image) < 0:
            raise InvalidParameterError(f"synthetic_per_image must be >= 0, got {self.synthetic_per_image}")
        if not float(self.residual_softness) >= 0:
            raise InvalidParameterError(f"residual_softness must be >= 0, got {self.residual_softness}")
        if float(self.residual_softness) > 0 and not self.residual:
            raise InvalidParameterError("residual_softness softens the residual: it needs residual=true")
        if not float(self.noise_std) > 0 or not float(self.learning_rate) > 0:
            raise InvalidParameterError("noise_std and learning_rate must be > 0")
        if not 0.0 <= float(self.held_out_share) < 0.5:
            raise InvalidParameterError(f"held_out_share must be in [0, 0.5), got {self.held_out_share}")

    # -- features -------------------------------------------------------------------------
    def _patch_features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """``(n, P, D)`` float32 patch features of images, in batches."""
        out = []
        for batch in self._batches(list(images)):
            feats, _ = self._features(batch)
            n, dim = feats.shape[:2]
            out.append(feats.reshape(n, dim, -1).permute(0, 2, 1).numpy().astype(np.float32))
        return np.concatenate(out, axis=0)

    def _synthetic(self, good: np.ndarray, index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Seeded synthetic defects made from one good image: images and cell coverages ``(P,)``."""
        from anomaly.detection_estimate import default_sizes
        from anomaly.synthesis import DefectSpec, make_defect

        rng = np.random.default_rng([int(self.random_state) + TRAIN_SEED_OFFSET, int(index)])
        sizes = default_sizes(min(good.shape[:2]))
        images, covers = [], []
        for _ in range(4 * int(self.synthetic_per_image)):
            if len(images) == int(self.synthetic_per_image):
                break
            spec = DefectSpec(TRAIN_KINDS[int(rng.integers(len(TRAIN_KINDS)))], float(rng.choice(sizes)),
                              float(rng.uniform(0.15, 0.5)))
            try:
                bad, mask = make_defect(good, spec, random_state=int(rng.integers(2**31)))
            except (InvalidImageError, InvalidParameterError, cv2.error):
                continue  # a kind that cannot change this image
            cover = coverage(mask, self.geometry, self.feature_grid)
            if (cover >= COVERED).any():
                images.append(bad)
                covers.append(cover)
        return images, covers

    def _cache(self, goods: list[np.ndarray]) -> dict[str, Any]:
        """Features of the goods and of their training defects' covered patches (by the good each came from)."""
        feats = self._patch_features(goods)
        owners, bad, cells = [], [], []
        for i in progress(range(len(goods)), desc="discriminator: synthetic defects"):
            made, covers = self._synthetic(goods[i], i)
            if made:
                for patches, cover in zip(self._patch_features(made), covers):
                    covered = np.flatnonzero(cover >= COVERED)
                    bad.append(patches[covered])
                    cells.append(covered)
                    owners.extend([i] * len(covered))
        dim = feats.shape[2]
        return {"feats": feats, "owners": np.asarray(owners, dtype=np.int64),
                "bad": np.concatenate(bad) if bad else np.zeros((0, dim), np.float32),
                "cells": np.concatenate(cells) if cells else np.zeros(0, np.int64)}

    # -- training -------------------------------------------------------------------------
    def _standard(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.feature_mean_) / self.feature_std_).astype(np.float32)

    def _bank(self, feats: np.ndarray, seed: Sequence[int]) -> np.ndarray:
        """A greedy coreset ``(m, D)`` of standardised patches ``(n, P, D)`` (random projection for speed)."""
        flat = self._standard(feats.reshape(-1, feats.shape[-1]))
        dim = flat.shape[1]
        state = int(np.random.default_rng(seed).integers(2**31))
        chosen = greedy_kcenter(flat, int(self.bank_size), random_state=state,
                                projection=random_projection(dim, CORESET_PROJECTION, state))
        return flat[np.sort(chosen)]

    def _places(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per grid cell mean and spread ``(P, D)`` of standardised patches ``(n, P, D)``.

        The spread is shrunk towards the standardised features' overall 1 (as four more
        images would pull it), so that a handful of goods gives no near-zero spread.
        """
        x = self._standard(feats.reshape(-1, feats.shape[-1])).reshape(feats.shape)
        n = len(x)
        var = (n * x.var(axis=0) + POSITION_PRIOR) / (n + POSITION_PRIOR)
        return x.mean(axis=0).astype(np.float32), np.sqrt(var).astype(np.float32)

    def _inputs(self, x: np.ndarray, nn_index: NearestNeighbours | None, bank: np.ndarray | None,
                cells: np.ndarray | None = None, places: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The feature and its residuals: ``(n, k D)`` from standardised ``(n, D)`` (see :meth:`_assemble`)."""
        nearest = self._nearest_patch(x, nn_index, bank) if self.residual else None
        return self._assemble(torch.from_numpy(x), nearest, cells, places).numpy()

    def _assemble(self, x: torch.Tensor, nearest: np.ndarray | None, cells: np.ndarray | None,
                  places: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor:
        """``[x, x - nearest, (x - mean at its cell) / spread there]`` ``(n, k D)``: the residuals the model feeds.

        Args:
            x: ``(n, D)`` standardised patches (a tensor, so that gradients can flow to it).
            nearest: ``(n, D)`` each one's nearest good patch (or their soft mean); ``None`` without the residual.
            cells: ``(n,)`` the patches' grid cells; used with ``position``.
            places: Per-cell mean and spread ``(P, D)``; used with ``position``.
        """
        parts = [x]
        if self.residual:
            parts.append(x - torch.from_numpy(nearest))
        if self.position:
            mean, spread = places
            parts.append((x - torch.from_numpy(mean[cells])) / torch.from_numpy(spread[cells]))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def _residual_scale(self, feats: np.ndarray, bank: np.ndarray) -> float:
        """Median squared distance of the goods' patches ``(m, P, D)`` to their nearest in ``bank`` (another half's).

        At most :data:`SCALE_SAMPLE` patches, evenly spaced, are measured.
        """
        x = self._standard(feats.reshape(-1, feats.shape[-1]))
        x = x[:: max(1, len(x) // SCALE_SAMPLE)]
        dist, _ = chunked_search(NearestNeighbours().fit(bank), x, 1)
        return max(float(np.median(dist.astype(np.float64) ** 2)), 1e-12)

    def _nearest_patch(self, x: np.ndarray, nn_index: NearestNeighbours, bank: np.ndarray) -> np.ndarray:
        """``(n, D)``: each row's nearest bank patch, or the softmin-weighted mean of its nearest few."""
        soft = float(self.residual_softness) > 0
        dist, idx = chunked_search(nn_index, x, min(SOFT_NEIGHBOURS, len(bank)) if soft else 1)
        if not soft:
            return bank[idx[:, 0]]
        weights = soft_weights(dist, float(self.residual_softness) * self.residual_scale_)
        return np.einsum("nk,nkd->nd", weights, bank[idx]).astype(np.float32)

    def _examples(self, cache: dict[str, Any], members: np.ndarray, bank: np.ndarray,
                  places: tuple[np.ndarray, np.ndarray] | None, rng: np.random.Generator,
                  fresh: bool = False) -> tuple[np.ndarray, np.ndarray, _NoiseSource | None]:
        """Labelled inputs ``(n, k D)`` and labels ``(n,)`` of the goods ``members`` against ``bank`` and ``places``.

        With ``fresh``, the patches to be made noisy are left out of the inputs and returned as
        a :class:`_NoiseSource`, for noise drawn every epoch; otherwise the third item is ``None``.
        """
        index = NearestNeighbours().fit(bank) if self.residual else None
        feats = cache["feats"][members]  # (m, P, D)
        per = min(int(self.patches_per_image), feats.shape[1])
        pick = np.stack([rng.choice(feats.shape[1], per, replace=False) for _ in range(len(members))])
        good = self._standard(np.take_along_axis(feats, pick[:, :, None], axis=1).reshape(-1, feats.shape[2]))
        good_cells = pick.reshape(-1)
        chosen = rng.choice(len(good), len(good) // 2, replace=False)
        noisy, noisy_cells = good[chosen], good_cells[chosen]
        source = None
        if fresh:
            source = _NoiseSource(noisy, noisy_cells, index, bank, places)
            noisy, noisy_cells = noisy[:0], noisy_cells[:0]
        else:
            scale = float(self.noise_std) * rng.uniform(0.5, 1.0, size=(len(noisy), 1))
            noisy = (noisy + scale * rng.standard_normal(noisy.shape)).astype(np.float32)
        mine = np.isin(cache["owners"], members)
        made, made_cells = self._standard(cache["bad"][mine]), cache["cells"][mine]
        parts = [self._inputs(part, index, bank, cells, places)
                 for part, cells in ((good, good_cells), (noisy, noisy_cells), (made, made_cells)) if len(part)]
        labels = np.concatenate([np.zeros(len(good)), np.ones(len(noisy) + len(made))]).astype(np.float32)
        return np.concatenate(parts), labels, source

    def _noisy(self, head: _Head, source: _NoiseSource, gen: torch.Generator) -> torch.Tensor:
        """This epoch's feature-space anomalies: inputs ``(n, k D)`` of fresh noise on ``source.clean``.

        Each patch draws its noise's scale between half ``noise_std`` and ``noise_std``. With
        ``ascent_steps``, the noise is then pushed along the normalised gradient of the
        discriminator's loss on them (as anomalies), towards what it takes for good; after
        each step its length is brought back into ``[0.5, 1] noise_std sqrt(D)``, the shell
        the Gaussian draws lie in (GLASS's truncated projection). The nearest good patch of
        the residual is held during the ascent and searched again after it.
        """
        clean = torch.from_numpy(source.clean)
        scale = float(self.noise_std) * (0.5 + 0.5 * torch.rand((len(clean), 1), generator=gen))
        delta = scale * torch.randn(clean.shape, generator=gen)
        if int(self.ascent_steps) > 0:
            outer = float(self.noise_std) * math.sqrt(clean.shape[1])
            nearest = self._nearest_patch((clean + delta).numpy(), source.index, source.bank) \
                if self.residual else None
            anomalous = torch.ones(len(clean))
            head.eval()
            for _ in range(int(self.ascent_steps)):
                delta.requires_grad_(True)
                logits = head(self._assemble(clean + delta, nearest, source.cells, source.places))
                (grad,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, anomalous), [delta])
                with torch.no_grad():
                    delta = delta + ASCENT_STEP * outer * grad / (grad.norm(dim=1, keepdim=True) + 1e-12)
                    length = delta.norm(dim=1, keepdim=True)
                    delta = delta * (length.clamp(0.5 * outer, outer) / (length + 1e-12))
            head.train()
        noisy = (clean + delta.detach()).numpy()
        return torch.from_numpy(self._inputs(noisy, source.index, source.bank, source.cells, source.places))

    def _train(self, cache: dict[str, Any], inside: np.ndarray, checkpoint: Path | None = None) -> None:
        """Train on the goods ``inside`` (indices into the cache) and the defects made from them."""
        seed = int(self.random_state)
        rng = np.random.default_rng([seed, 1])
        order = rng.permutation(np.asarray(inside))
        n_held = int(round(float(self.held_out_share) * len(order)))
        n_held = n_held if n_held >= MIN_HELD_OUT else 0
        held, fit = np.sort(order[:n_held]), np.sort(order[n_held:])
        if len(fit) < 2:
            raise DatasetError(f"the discriminator needs at least 2 good images to train on, got {len(fit)}")
        flat = cache["feats"][fit].reshape(-1, cache["feats"].shape[2])
        self.feature_mean_ = flat.mean(axis=0).astype(np.float32)
        self.feature_std_ = (flat.std(axis=0) + 1e-6).astype(np.float32)
        halves = np.array_split(rng.permutation(fit), 2)
        bank = (lambda members, key: self._bank(cache["feats"][members], [seed, *key])) if self.residual \
            else (lambda members, key: np.zeros((0, flat.shape[1]), np.float32))
        places = (lambda members: self._places(cache["feats"][members])) if self.position else (lambda members: None)
        banks = [bank(np.sort(halves[1 - h]), [2, h]) for h in (0, 1)]
        self.residual_scale_ = self._residual_scale(cache["feats"][np.sort(halves[0])], banks[0]) \
            if self.residual and float(self.residual_softness) > 0 else 1.0
        fresh = bool(self.fresh_noise) or int(self.ascent_steps) > 0
        parts = [self._examples(cache, np.sort(halves[h]), banks[h], places(np.sort(halves[1 - h])), rng, fresh)
                 for h in (0, 1)]
        x_fit = np.concatenate([p[0] for p in parts])
        y_fit = np.concatenate([p[1] for p in parts])
        sources = [p[2] for p in parts if p[2] is not None]
        self.bank_ = bank(fit, [3])
        self.places_ = places(fit)
        # the held-out goods' noisy patches are drawn once, so that the validation loss compares epochs
        x_val, y_val, _ = self._examples(cache, held, self.bank_, self.places_, rng) if len(held) \
            else (None, None, None)
        params = {k: v for k, v in sorted(self.get_params().items()) if k != "checkpoint_dir"}
        run_id = fingerprint(params, torch.from_numpy(x_fit), torch.from_numpy(y_fit),
                             *[torch.from_numpy(source.clean) for source in sources])
        self._head, self.history_, self.resumed_from_epoch_ = self._optimise(x_fit, y_fit, x_val, y_val,
                                                                             checkpoint, run_id, sources)
        self.n_train_ = int(len(fit))
        self.n_held_out_ = int(len(held))
        self.n_synthetic_patches_ = int(np.isin(cache["owners"], fit).sum())

    def _optimise(self, x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None,
                  checkpoint: Path | None, run_id: str,
                  sources: Sequence[_NoiseSource] = ()) -> tuple[_Head, list[dict[str, Any]], int]:
        """Adam on mini-batches until ``epochs`` or ``patience``; the best epoch's head, the history, the resumed epoch.

        ``sources`` add each epoch's fresh feature-space anomalies (:meth:`_noisy`) to ``x_fit``.
        """
        seed = int(self.random_state)
        torch.manual_seed(seed)  # the head's initial weights (torch has no per-module generator)
        head = _Head(len(self.feature_mean_), int(self.hidden_dim), x_fit.shape[1] // len(self.feature_mean_))
        optimiser = torch.optim.Adam(head.parameters(), lr=float(self.learning_rate), weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        state: dict[str, Any] = {"epoch": 0, "best": float("inf"), "best_state": None, "stale": 0, "history": []}
        resumed = 0
        if checkpoint is not None and _load_checkpoint(checkpoint, run_id, head, optimiser, gen, state):
            resumed = int(state["epoch"])
            log.info("discriminator: resuming from %s after epoch %d", checkpoint, resumed)
        x, y = torch.from_numpy(x_fit), torch.from_numpy(y_fit)
        xv = None if x_val is None else torch.from_numpy(x_val)
        yv = None if y_val is None else torch.from_numpy(y_val)
        bar = progress(range(state["epoch"], int(self.epochs)), desc="discriminator: epochs")
        for epoch in bar:
            if state["stale"] >= int(self.patience):
                break
            head.train()
            xe, ye = x, y
            if sources:
                noisy = torch.cat([self._noisy(head, source, gen) for source in sources])
                xe, ye = torch.cat([x, noisy]), torch.cat([y, torch.ones(len(noisy))])
            order, total = torch.randperm(len(xe), generator=gen), 0.0
            for start in range(0, len(xe), STEP):
                idx = order[start : start + STEP]
                loss = balanced_bce(head(xe[idx]), ye[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            train_loss = total / len(xe)
            head.eval()
            with torch.no_grad():
                val_loss = train_loss if xv is None else float(balanced_bce(head(xv), yv))
            state["history"].append({"epoch": epoch + 1, "train_loss": round(train_loss, 5),
                                     "val_loss": round(val_loss, 5)})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if val_loss < state["best"] - 1e-6:
                state.update(best=val_loss, stale=0,
                             best_state={k: v.detach().clone() for k, v in head.state_dict().items()})
            else:
                state["stale"] += 1
            state["epoch"] = epoch + 1
            if checkpoint is not None:
                _save_checkpoint(checkpoint, run_id, head, optimiser, gen, state)
        head.load_state_dict(state["best_state"])
        head.eval()
        best = min(state["history"], key=lambda h: h["val_loss"])
        log.info("discriminator: %d epochs, best validation loss %.4f (epoch %d)", len(state["history"]),
                 best["val_loss"], best["epoch"])
        return head, state["history"], resumed

    def _checkpoint(self, name: str = "") -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / name / CHECKPOINT_FILE if name else Path(self.checkpoint_dir) / CHECKPOINT_FILE

    def _fit(self, images: Sequence[ImageLike]) -> None:
        goods = [as_image(image) for image in images]
        self._train(self._cache(goods), np.arange(len(goods)), self._checkpoint())

    def training_meta(self) -> dict[str, Any]:
        history = list(self.history_)
        best = min(history, key=lambda h: h["val_loss"]) if history else None
        return {"n_train": self.n_train_, "n_held_out": self.n_held_out_, "history": history,
                "epochs": len(history), "best_epoch": None if best is None else best["epoch"],
                "stopped_early": len(history) < int(self.epochs), "resumed_from_epoch": self.resumed_from_epoch_,
                "bank_size": int(len(self.bank_)), "grid_shape": list(self.feature_grid),
                "random_state": int(self.random_state),
                "synthetic": {"kinds": list(TRAIN_KINDS), "seed": int(self.random_state) + TRAIN_SEED_OFFSET,
                              "defect_patches": self.n_synthetic_patches_,
                              "note": "training defects; the detection estimate uses other seeds, and the kinds "
                                      "missing and deform were never trained on"}}

    # -- score ----------------------------------------------------------------------------
    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        geometry, (gh, gw) = self.geometry, self.feature_grid
        scores, maps = [], []
        for batch in self._batches(list(images)):
            feats, placements = self._features(batch)
            n, dim = feats.shape[:2]
            x = self._standard(feats.reshape(n, dim, -1).permute(0, 2, 1).reshape(-1, dim).numpy())
            cells = np.tile(np.arange(gh * gw), n)
            with torch.no_grad():
                grid = self._scoring_head(torch.from_numpy(self._inputs(x, self._index, self.bank_, cells,
                                                                        self.places_))).numpy()
            grid = grid.reshape(n, gh, gw)
            for i in range(n):
                model_map = model_resolution_map(grid[i], geometry.size, float(self.smoothing_sigma),
                                                 self.feature_stride, self.feature_origin)
                scores.append(float(model_map.max()))
                maps.append(to_image_map(model_map, geometry, placements[i]))
        return AnomalyResult(scores=np.asarray(scores), maps=maps)

    @property
    def _scoring_head(self) -> nn.Module:
        """The head as scoring computes it (:meth:`_Head.for_scoring`), built once per trained head."""
        if getattr(self, "_scoring", (None, None))[0] is not self._head:
            self._scoring = (self._head, self._head.for_scoring())
        return self._scoring[1]

    @property
    def _index(self) -> NearestNeighbours | None:
        if not self.residual:
            return None
        if getattr(self, "_nn", None) is None or self._nn.size != len(self.bank_):
            self._nn = NearestNeighbours().fit(self.bank_)
        return self._nn

    # -- cross-fitting (anomaly.crossfit protocol) ------------------------------------------
    def cross_fit_scores(self, images: Sequence[ImageLike], n_folds: int = 5, random_state: int = 0, *,
                         max_map_side: int | None = None) -> AnomalyResult:
        """Fit on all images and score each one with a model trained without its fold.

        Features of the goods and of their synthetic defects are computed once; each fold
        model trains on the other folds' goods and the defects made from them only.
        """
        self._validate_params()
        goods = [as_image(image) for image in images]
        folds = assign_folds(len(goods), n_folds, random_state)
        cache = self._cache(goods)

        def fold_model(j: int, inside: np.ndarray) -> "FeatureDiscriminator":
            model = self._unfitted_copy()
            model._train(cache, np.flatnonzero(folds != j), self._checkpoint(f"fold-{j}"))
            model.fitted_ = True
            return model

        result = score_out_of_fold(goods, folds, fold_model, max_map_side, desc="discriminator: out-of-fold scores")
        self._train(cache, np.arange(len(goods)), self._checkpoint())
        self.fitted_ = True
        return result

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        arrays = {f"head.{k}": v.detach().numpy() for k, v in self._head.state_dict().items()}
        arrays.update(feature_mean=self.feature_mean_, feature_std=self.feature_std_, bank=self.bank_)
        if self.position:
            arrays.update(place_mean=self.places_[0], place_spread=self.places_[1])
        save_arrays(directory / "state.npz", arrays)
        return {"arrays": "state.npz", "head_keys": sorted(self._head.state_dict()), **self._backbone_state(),
                "n_train": self.n_train_, "n_held_out": self.n_held_out_,
                "n_synthetic_patches": self.n_synthetic_patches_, "history": self.history_,
                "residual_scale": float(self.residual_scale_),
                "resumed_from_epoch": self.resumed_from_epoch_}

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        keys = list(meta["head_keys"])
        places = ["place_mean", "place_spread"] if self.position else []
        arrays = load_arrays(directory / meta.get("arrays", "state.npz"),
                             [f"head.{k}" for k in keys] + ["feature_mean", "feature_std", "bank"] + places)
        self.feature_mean_, self.feature_std_ = arrays["feature_mean"], arrays["feature_std"]
        self.bank_ = np.ascontiguousarray(arrays["bank"], dtype=np.float32)
        self.places_ = (np.ascontiguousarray(arrays["place_mean"], dtype=np.float32),
                        np.ascontiguousarray(arrays["place_spread"], dtype=np.float32)) if self.position else None
        inputs = 1 + int(self.residual) + int(self.position)
        head = _Head(int(self.feature_mean_.shape[0]), int(self.hidden_dim), inputs)
        head.load_state_dict({k: torch.from_numpy(np.array(arrays[f"head.{k}"])) for k in keys})
        head.eval()
        self._head = head
        self.n_train_, self.n_held_out_ = int(meta.get("n_train", 0)), int(meta.get("n_held_out", 0))
        self.n_synthetic_patches_ = int(meta.get("n_synthetic_patches", 0))
        self.residual_scale_ = float(meta.get("residual_scale", 1.0))
        self.history_ = list(meta.get("history") or [])
        self.resumed_from_epoch_ = int(meta.get("resumed_from_epoch", 0))
        self._set_backbone_from_meta(meta)


def _save_checkpoint(path: Path, run_id: str, head: _Head, optimiser, gen: torch.Generator,
                     state: dict[str, Any]) -> None:
    write_checkpoint(path, {"format": _CHECKPOINT_FORMAT, "run_id": run_id, "head": head.state_dict(),
                            "optimiser": optimiser.state_dict(), "generator": gen.get_state(),
                            "epoch": int(state["epoch"]), "best": float(state["best"]),
                            "best_state": state["best_state"], "stale": int(state["stale"]),
                            "history": state["history"]})


def _load_checkpoint(path: Path, run_id: str, head: _Head, optimiser, gen: torch.Generator,
                     state: dict[str, Any]) -> bool:
    """Restore a run's state from ``path``; ``False`` (start afresh) when it is missing or another run's."""
    payload = read_checkpoint(path, _CHECKPOINT_FORMAT, run_id)
    if payload is None:
        return False
    head.load_state_dict(payload["head"])
    optimiser.load_state_dict(payload["optimiser"])
    gen.set_state(payload["generator"])
    state.update(epoch=int(payload["epoch"]), best=float(payload["best"]), best_state=payload["best_state"],
                 stale=int(payload["stale"]), history=list(payload["history"]))
    return True
