"""What is compared, and on which images: model settings and the seeded sub-sampling rules.

Two comparisons per model (PatchCore and PaDiM here; GANomaly and Skip-GANomaly below):

* ``matched``: the same backbone weights, layers, input size (stretch to a square) and
  normalisation on both sides, and the same model settings: coreset ratio and neighbours
  for PatchCore (and no cap on our bank, so both banks have ``ratio * patches`` rows; all
  channels of both layers, as anomalib concatenates them);
  layers, channel subset and feature grid (the finest layer's, stride 4) for PaDiM, whose
  random channel subset is the same on both sides (ours, drawn from the seed, given to
  anomalib): a second, independent draw per side would add its own spread (image AUROC
  0.85 to 1.00 over three draws on ``grid``) to the implementation difference measured.
  Both sides fit with batches of 16.
* ``defaults``: what each side gives a user who changes nothing but the backbone (which the
  comparison fixes for both: EfficientNet-Lite0 ImageNet weights). Our defaults are the
  detectors' own. anomalib's are its model defaults (PatchCore: 10 % coreset, 9
  neighbours, its ``layer2``/``layer3`` = the stride-8 and stride-16 stages; PaDiM: its
  ``layer1..3`` = the stride-4, 8 and 16 stages, 100 channels because anomalib has no
  default for this backbone, drawn by its own seeded ``torch.randperm``) with its
  datamodule's training batch of 32.

GANomaly and Skip-GANomaly (``--models ganomaly skip-ganomaly``; not in the default run,
whose hour they would exceed) are compared with anomalib's GANomaly, trained by the steps
of its ``training_step`` for the same number of epochs on the same images at the same
input size (``gan_image_size``, 128 px by default; ``gan_epochs``, 15): ``matched`` gives
anomalib our widths and batch (32 features, latent 100, batch 16), ``defaults`` its own
(64 features, latent 100, batch 32; anomalib sets no epoch count, so the budget is shared).
Ours may stop early on its held-out good images, which is part of its method. Both
Skip-GANomaly comparisons reuse the anomalib run of GANomaly's (same configuration).

Sub-sampling, identical for both systems, seeded: at most ``max_train`` training images,
chosen as ``anomaly eval --limit-train`` chooses them (``numpy.random.default_rng(seed)
.choice`` without replacement, kept in path order); at most ``max_test`` test images,
stratified by defect type (good included: largest-remainder quotas proportional to each
type's count, at least one image per type), chosen with the same seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from anomaly.datasets import Sample

#: The comparisons, in the order reports show them.
SETTINGS = ("matched", "defaults")

#: Models the default run compares (our registry name for each).
BENCH_MODELS = ("patchcore", "padim")
#: Models compared with anomalib's GANomaly (run on request: each fit trains a GAN).
GAN_MODELS = ("ganomaly", "skip-ganomaly")

#: anomalib's own defaults that the ``defaults`` comparison uses.
ANOMALIB_PATCHCORE_RATIO = 0.1
ANOMALIB_NEIGHBOURS = 9
ANOMALIB_PADIM_FEATURES = 100
ANOMALIB_TRAIN_BATCH = 32
ANOMALIB_GANOMALY_FEATURES = 64
GAN_LATENT = 100
#: Our GANomaly's width and batch (its defaults), given to anomalib in the matched comparison.
GAN_FEATURES = 32
GAN_BATCH = 16

#: Our detectors' backbone stages (timm ``feature_info`` indices) for each model.
PATCHCORE_LAYERS = (2, 3)
PADIM_LAYERS = (1, 2, 3)


@dataclass(frozen=True)
class ModelSetting:
    """One comparison: our detector's parameters and the peer's configuration.

    Attributes:
        model: Our registry name (``patchcore``, ``padim``).
        setting: ``"matched"`` or ``"defaults"``.
        ours: Parameters of our detector (``{}`` = its defaults).
        peer: The peer's configuration (``model``, ``layers`` as timm stage indices,
            ``image_size``, ``batch_size``, and the model's own settings), or ``None``
            when the peer has no counterpart.
        peer_shared_with: A setting whose peer run this one reuses (same configuration).
        peer_shared_model: The model whose peer run (of ``peer_shared_with``, or of this
            setting) this one reuses; ``None`` = this model.
        peer_max_patches: Run the peer only when ``n_fit * patches per image`` is at most
            this (its budget), else record why it was skipped; ``None`` = always.
    """

    model: str
    setting: str
    ours: dict[str, Any]
    peer: dict[str, Any] | None
    peer_shared_with: str | None = None
    peer_shared_model: str | None = None
    peer_max_patches: int | None = None
    notes: list[str] = field(default_factory=list)


def model_settings(
    model: str,
    *,
    image_size: int = 256,
    matched_coreset_ratio: float = 0.01,
    peer_defaults_max_patches: int | None = 40_000,
    seed: int = 0,
    gan_image_size: int = 128,
    gan_epochs: int = 15,
) -> list[ModelSetting]:
    """The comparisons for one model.

    Args:
        model: Our registry name.
        image_size: Square model input of both sides.
        matched_coreset_ratio: PatchCore coreset ratio of the matched comparison.
        peer_defaults_max_patches: anomalib's default PatchCore (10 % coreset, a sequential
            greedy loop over every training patch) runs only where the training patches
            are at most this many; ``None`` = everywhere.
        seed: Seed of every random choice on our side (the peer seeds torch with it).
        gan_image_size: Square input of both GANs.
        gan_epochs: Training epochs of both GANs (ours may stop earlier).

    Returns:
        One :class:`ModelSetting` per comparison, in :data:`SETTINGS` order; a model with no
        anomalib counterpart has the ``defaults`` one only.
    """
    size = int(image_size)
    if model == "patchcore":
        ours_base = {"image_size": size, "random_state": seed}
        matched_ours = {
            **ours_base,
            "layers": list(PATCHCORE_LAYERS),
            "coreset_ratio": matched_coreset_ratio,
            # No cap: the bank then holds ratio * patches rows, as anomalib's does.
            "max_bank_size": 1_000_000_000,
            "num_neighbors": ANOMALIB_NEIGHBOURS,
            "patch_size": 3,
            # anomalib concatenates the layers' channels as they come.
            "channels_per_layer": None,
            # anomalib searches every stride-8 patch.
            "grid_stride": None,
            "batch_size": 16,
        }
        peer_base = {"model": "patchcore", "layers": list(PATCHCORE_LAYERS), "image_size": size,
                     "num_neighbors": ANOMALIB_NEIGHBOURS}
        return [
            ModelSetting("patchcore", "matched", matched_ours,
                         {**peer_base, "coreset_ratio": matched_coreset_ratio, "batch_size": 16}),
            ModelSetting("patchcore", "defaults", ours_base,
                         {**peer_base, "coreset_ratio": ANOMALIB_PATCHCORE_RATIO, "batch_size": ANOMALIB_TRAIN_BATCH},
                         peer_max_patches=peer_defaults_max_patches),
        ]
    if model == "padim":
        ours_base = {"image_size": size, "random_state": seed}
        peer = {"model": "padim", "layers": list(PADIM_LAYERS), "image_size": size,
                "n_features": ANOMALIB_PADIM_FEATURES, "batch_size": 16}
        matched_ours = {**ours_base, "layers": list(PADIM_LAYERS), "n_features": ANOMALIB_PADIM_FEATURES,
                        "grid_stride": 4, "batch_size": 16}
        return [
            ModelSetting("padim", "matched", matched_ours, {**peer, "channels_of_seed": seed},
                         notes=["matched: anomalib's PaDiM keeps the channels ours draws for the seed"]),
            ModelSetting("padim", "defaults", ours_base, {**peer, "batch_size": ANOMALIB_TRAIN_BATCH},
                         notes=["anomalib's PaDiM defaults: its own channel draw (torch.randperm, seeded)"]),
        ]
    if model in GAN_MODELS:
        size, epochs = int(gan_image_size), int(gan_epochs)
        ours = {"image_size": size, "max_epochs": epochs, "random_state": seed}
        peer = {"model": "ganomaly", "image_size": size, "epochs": epochs, "latent_vec_size": GAN_LATENT}
        shared = "ganomaly" if model != "ganomaly" else None
        return [
            ModelSetting(model, "matched", {**ours, "batch_size": GAN_BATCH, "n_features": GAN_FEATURES,
                                            "latent_dim": GAN_LATENT},
                         {**peer, "n_features": GAN_FEATURES, "batch_size": GAN_BATCH}, peer_shared_model=shared),
            ModelSetting(model, "defaults", ours,
                         {**peer, "n_features": ANOMALIB_GANOMALY_FEATURES, "batch_size": ANOMALIB_TRAIN_BATCH},
                         peer_shared_model=shared,
                         notes=["both sides at the shared input size and epoch budget; anomalib sets no epoch count"]),
        ]
    # No counterpart in anomalib (the classical difference and GMM models): ours alone, with
    # its defaults and the seed (a "matched" run would repeat the same fit).
    return [ModelSetting(model, "defaults", {"random_state": seed}, None,
                         notes=["no anomalib counterpart: ours alone, with its defaults"])]


def subsample_train(paths: Sequence[Any], max_train: int | None, seed: int) -> list[Any]:
    """At most ``max_train`` training items, seeded, kept in their given order."""
    paths = list(paths)
    if not max_train or len(paths) <= max_train:
        return paths
    pick = np.sort(np.random.default_rng(seed).choice(len(paths), int(max_train), replace=False))
    return [paths[i] for i in pick]


def subsample_test(samples: Sequence[Sample], max_test: int | None, seed: int) -> list[Sample]:
    """At most ``max_test`` test samples, stratified by defect type, seeded, order kept.

    Each type (``good`` included) gets a quota proportional to its count (largest
    remainders round up), at least one image.
    """
    samples = list(samples)
    if not max_test or len(samples) <= max_test:
        return samples
    types = sorted({s.defect_type for s in samples})
    groups = {t: [i for i, s in enumerate(samples) if s.defect_type == t] for t in types}
    exact = {t: max_test * len(groups[t]) / len(samples) for t in types}
    quota = {t: max(1, math.floor(exact[t])) for t in types}
    for t in sorted(types, key=lambda t: exact[t] - math.floor(exact[t]), reverse=True):
        if sum(quota.values()) >= max_test:
            break
        if quota[t] < len(groups[t]):
            quota[t] += 1
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for t in types:
        members = groups[t]
        k = min(quota[t], len(members))
        keep.extend(members[i] for i in rng.choice(len(members), k, replace=False))
    return [samples[i] for i in sorted(keep)]
