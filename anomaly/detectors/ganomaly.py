"""Reconstruction models trained adversarially on good images: GANomaly and Skip-GANomaly.

GANomaly: Akcay, Atapour-Abarghouei, Breckon, "GANomaly: Semi-Supervised Anomaly
Detection via Adversarial Training", ACCV 2018 (arXiv:1805.06725).

* generator = encoder ``G_E`` - decoder ``G_D`` - encoder ``E`` (DCGAN blocks), so an image
  ``x`` gives a reconstruction ``x_hat = G_D(G_E(x))``, its code ``z = G_E(x)`` and the code
  of the reconstruction ``z_hat = E(x_hat)``; a DCGAN discriminator ``D``;
* generator loss ``w_adv * L_adv + w_con * L_con + w_enc * L_enc`` with the paper's weights
  1, 50, 1: feature matching ``||f(x) - f(x_hat)||_2^2`` on ``D``'s last feature map,
  contextual ``|x - x_hat|_1`` and latent consistency ``||z - z_hat||_2^2`` (means over
  elements, as in the authors' code); ``D`` learns real vs. reconstructed (cross-entropy);
* image score: the latent distance ``mean((z - z_hat)^2)`` (the authors' code; the paper
  writes an L1 norm); optionally a combination with the reconstruction error (below).

Skip-GANomaly: Akcay, Atapour-Abarghouei, Breckon, "Skip-GANomaly: Skip Connected and
Adversarially Trained Encoder-Decoder Anomaly Detection", IJCNN 2019 (arXiv:1901.08954).

* generator = U-Net encoder-decoder with skip connections: the decoder gets the encoder's
  feature maps at every resolution, so fine structure is rebuilt from the image itself
  instead of squeezed through a 100-number code; GANomaly's bottleneck cannot hold a
  textured surface or a circuit layout, so its reconstruction is blurred everywhere and
  a defect hardly stands out of that blur. The paper connects every level; by default
  here the two finest levels (1/2 and 1/4 of the input) have no skip (``skip_from=3``):
  a shortcut at those resolutions lets the generator copy a small defect straight into
  its reconstruction, which lowered image AUROC in a trial on ELPV; ``skip_from=1`` is
  the paper's;
* generator loss ``w_adv * L_adv + w_con * L_con + w_lat * L_lat`` with the paper's
  weights 1, 40, 1: adversarial cross-entropy, contextual L1, and latent loss
  ``||f(x) - f(x_hat)||_2^2`` on the discriminator's last feature map;
* image score ``lambda * R(x) + (1 - lambda) * L(x)`` with the paper's ``lambda = 0.9``,
  ``R`` the reconstruction error and ``L`` the discriminator-feature distance.

Both, as built here:

* the anomaly map is the per-pixel L1 reconstruction error (mean over channels),
  Gaussian-smoothed at model resolution and brought back to the input image's own size;
* the reconstruction term of an image is the largest value of that smoothed map (a small
  defect is not diluted by a mean over the whole image);
* the paper normalises scores to [0, 1] with the minimum and maximum of the *test* set,
  which makes one image's score depend on the others; here a combined score adds terms
  standardised with the mean and spread of the *good held-out* images, saved in the
  bundle, and a score never depends on any other scored image;
* training (adversarial loop, augmentation, early stopping, checkpoints) is in
  :mod:`anomaly.detectors.gan_training`; the networks are in
  :mod:`anomaly.detectors.ganomaly_nets`.

How they compare with anomalib's GANomaly, and when to use them: docs/gan.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from anomaly.arrays import load_arrays, save_arrays
from anomaly.detectors.base import AnomalyResult, Detector, hyperparameters
from anomaly.detectors.checkpoints import fingerprint
from anomaly.detectors.gan_training import (
    FLIPS,
    TrainingRecord,
    TrainSettings,
    plot_history,
    train_gan,
)
from anomaly.detectors.ganomaly_nets import (
    Discriminator,
    GanomalyGenerator,
    UNetGenerator,
    init_weights,
    num_stages,
)
from anomaly.errors import InvalidParameterError
from anomaly.features.preprocess import prepare_batch
from anomaly.geometry import Geometry
from anomaly.imageio import ImageLike
from anomaly.maps import to_image_map
from anomaly.progress import progress

log = logging.getLogger(__name__)

#: Images go to the networks in [-1, 1] (the decoders end in tanh).
_MEAN = np.full(3, 0.5, dtype=np.float32)
_STD = np.full(3, 0.5, dtype=np.float32)
SCORES = ("latent", "reconstruction", "combined")
#: Fewer held-out images than this: the score statistics come from the training images.
MIN_STAT_IMAGES = 5
_TERMS = ("latent", "reconstruction")


@hyperparameters
class _AdversarialReconstruction(Detector):
    """What GANomaly and Skip-GANomaly share: parameters, data, training, scoring and persistence.

    The hyper-parameters both take are declared here (documented in :class:`GANomaly`);
    ``w_con`` and ``image_score`` have no default here, each model gives its paper's.
    Subclasses are declared with :func:`~anomaly.detectors.base.hyperparameters`, add
    their own parameters (the third loss weight, ...) and define ``_make_generator``,
    ``_objective`` (the losses, for :func:`~anomaly.detectors.gan_training.train_gan`) and
    ``_forward_terms`` (what scoring needs from the networks).
    """

    image_size: int | Sequence[int] = 128
    resize: str = "stretch"
    roi: Sequence[int] | None = None
    n_features: int = 32
    latent_dim: int = 100
    w_adv: float = 1.0
    w_con: float
    lr: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 16
    max_epochs: int = 15
    max_steps: int | None = None
    patience: int | None = 5
    validation_fraction: float = 0.1
    shift: int = 4
    flip: str = "none"
    image_score: str
    reconstruction_weight: float = 0.9
    smoothing_sigma: float = 2.0
    checkpoint_dir: str | None = None
    random_state: int = 0

    #: Parameters that do not change what a training step does: a checkpoint written under
    #: other values of these is still resumed from (a larger budget continues a run).
    _RESUMABLE_PARAMS: ClassVar[tuple[str, ...]] = (
        "max_epochs", "max_steps", "patience", "checkpoint_dir", "image_score", "reconstruction_weight",
        "smoothing_sigma",
    )
    #: Name of the weight of the third generator loss (``w_enc`` or ``w_lat``).
    _third_weight: ClassVar[str] = ""

    # -- parameters -----------------------------------------------------------------------
    @property
    def geometry(self) -> Geometry:
        return Geometry.from_params(self.image_size, self.resize, self.roi)

    def _settings(self) -> TrainSettings:
        return TrainSettings(
            batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs),
            max_steps=None if self.max_steps is None else int(self.max_steps),
            lr=float(self.lr),
            beta1=float(self.beta1),
            beta2=float(self.beta2),
            patience=None if self.patience is None else int(self.patience),
            shift=int(self.shift),
            flip=str(self.flip),
            seed=int(self.random_state),
            checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
            desc=f"{self.name}: training",
        )

    def _validate_params(self) -> None:
        num_stages(self.geometry.size)
        for key in ("n_features", "latent_dim", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise InvalidParameterError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("w_adv", "w_con", self._third_weight):
            if float(getattr(self, key)) < 0:
                raise InvalidParameterError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.image_score not in SCORES:
            raise InvalidParameterError(f"image_score must be one of {SCORES}, got {self.image_score!r}")
        if not 0.0 <= float(self.reconstruction_weight) <= 1.0:
            raise InvalidParameterError(f"reconstruction_weight must be in [0, 1], got {self.reconstruction_weight}")
        if float(self.smoothing_sigma) < 0:
            raise InvalidParameterError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")
        if not 0.0 <= float(self.validation_fraction) <= 0.5:
            raise InvalidParameterError(f"validation_fraction must be in [0, 0.5], got {self.validation_fraction}")
        if self.flip not in FLIPS:
            raise InvalidParameterError(f"flip must be one of {FLIPS}, got {self.flip!r}")
        self._settings().validate()

    # -- networks (subclasses) ------------------------------------------------------------
    def _build(self) -> None:
        """Create ``self.generator_`` and ``self.discriminator_`` with DCGAN initial weights."""
        size = self.geometry.size
        # Constructing torch layers draws their default initial weights from the global
        # generator; fork it so fitting leaves the process-wide random state as it was.
        with torch.random.fork_rng(devices=[]):
            self.generator_ = self._make_generator(size)
            self.discriminator_ = Discriminator(size, 3, int(self.n_features))
        init = torch.Generator().manual_seed(int(self.random_state))
        init_weights(self.generator_, init)
        init_weights(self.discriminator_, init)

    def _make_generator(self, size: tuple[int, int]) -> torch.nn.Module:
        raise NotImplementedError

    def _objective(self):
        raise NotImplementedError

    def _forward_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, h, w)`` L1 error maps and ``(N,)`` latent distances, eval mode."""
        raise NotImplementedError

    # -- fit ------------------------------------------------------------------------------
    def _prepare(self, images: Sequence[ImageLike], *, show: bool = False) -> tuple[torch.Tensor, list]:
        chunks, placements = [], []
        step = max(1, int(self.batch_size))
        starts = range(0, len(images), step)
        for start in progress(starts, desc=f"{self.name}: reading images") if show else starts:
            batch, where = prepare_batch(images[start : start + step], self.geometry, _MEAN, _STD)
            # The loader fills the batch channels-last, for the backbones; given that layout,
            # torch runs the GANs' whole networks in it, and they score slower there, so the
            # batch goes back to the plain layout (see docs/gan.md).
            chunks.append(torch.from_numpy(np.ascontiguousarray(batch)))
            placements += where
        return torch.cat(chunks), placements

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded split into (training, held-out) indices; nothing held out below 4 images."""
        n_val = int(round(float(self.validation_fraction) * n)) if n >= 4 else 0
        if float(self.validation_fraction) > 0 and n >= 4:
            n_val = max(1, n_val)
        order = np.random.default_rng(int(self.random_state)).permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _fit(self, images: Sequence[ImageLike]) -> None:
        start = time.perf_counter()
        data, _ = self._prepare(images, show=True)
        train_idx, val_idx = self._split(data.shape[0])
        train_x = data[torch.from_numpy(train_idx)]
        val_x = data[torch.from_numpy(val_idx)] if len(val_idx) else None
        self._build()
        params = {k: v for k, v in self.get_params().items() if k not in self._RESUMABLE_PARAMS}
        run_id = fingerprint(self.name, sorted(params.items()), train_x, val_x)
        record = train_gan(self._objective(), train_x, val_x, self._settings(), run_id=run_id)
        self.generator_.eval()
        self.discriminator_.eval()
        self.record_ = record
        self.history_ = {k: np.asarray(v, dtype=np.float64) for k, v in record.history.items()}
        stat_x = val_x if val_x is not None and val_x.shape[0] >= MIN_STAT_IMAGES else train_x
        self.stats_source_ = "held-out" if stat_x is val_x else "training"
        terms = self._raw_scores(stat_x)
        self.score_stats_ = {
            f"{t}_{s}": float(f(terms[t])) for t in _TERMS for s, f in (("mean", np.mean), ("std", np.std))
        }
        self.n_fit_, self.n_validation_ = len(train_idx), len(val_idx)
        self.train_seconds_ = time.perf_counter() - start

    def training_meta(self) -> dict[str, Any]:
        record: TrainingRecord | None = getattr(self, "record_", None)
        last = {k: float(v[-1]) for k, v in self.history_.items() if len(v)}
        meta = {
            "n_fit": int(self.n_fit_),
            "n_validation": int(self.n_validation_),
            "score_statistics": dict(self.score_stats_),
            "score_statistics_from": self.stats_source_,
            "last_epoch": last,
            "random_state": int(self.random_state),
        }
        if record is not None:
            meta.update(
                steps=record.steps,
                epochs=record.epochs,
                best_epoch=record.best_epoch,
                stopped_early=record.stopped_early,
                resumed_from_step=record.resumed_from_step,
                discriminator_resets=record.discriminator_resets,
                train_seconds=round(float(self.train_seconds_), 3),
            )
        return meta

    # -- score ----------------------------------------------------------------------------
    def _raw_scores(self, x: torch.Tensor, *, maps: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Latent and reconstruction terms of a prepared batch; smoothed maps appended to ``maps``."""
        latent, recon = [], []
        step = max(1, int(self.batch_size))
        for start in range(0, x.shape[0], step):
            with torch.inference_mode():
                err, lat = self._forward_terms(x[start : start + step])
            latent.append(lat.numpy().astype(np.float64))
            for e in err.numpy():
                smooth = smooth_map(e, float(self.smoothing_sigma))
                recon.append(float(smooth.max()))
                if maps is not None:
                    maps.append(smooth)
        return {"latent": np.concatenate(latent), "reconstruction": np.asarray(recon, dtype=np.float64)}

    def _combine(self, terms: dict[str, np.ndarray]) -> np.ndarray:
        if self.image_score == "latent":
            return terms["latent"]
        if self.image_score == "reconstruction":
            return terms["reconstruction"]
        z = {}
        for t in _TERMS:
            std = self.score_stats_[f"{t}_std"]
            z[t] = (terms[t] - self.score_stats_[f"{t}_mean"]) / (std if std > 0 else 1.0)
        lam = float(self.reconstruction_weight)
        return lam * z["reconstruction"] + (1.0 - lam) * z["latent"]

    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        geometry = self.geometry
        scores, maps = [], []
        step = max(1, int(self.batch_size))
        for start in range(0, len(images), step):
            x, placements = self._prepare(images[start : start + step])
            model_maps: list[np.ndarray] = []
            terms = self._raw_scores(x, maps=model_maps)
            scores.append(self._combine(terms))
            maps += [to_image_map(m, geometry, p) for m, p in zip(model_maps, placements)]
        return AnomalyResult(scores=np.concatenate(scores), maps=maps)

    def score_terms(self, images: Sequence[ImageLike]) -> dict[str, np.ndarray]:
        """The raw latent and reconstruction terms, ``(N,)`` each (for studies and reports)."""
        self.check_fitted()
        x, _ = self._prepare(list(images))
        return self._raw_scores(x)

    # -- persistence ----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        torch.save(self.generator_.state_dict(), directory / "generator.pt")
        files = {"generator": "generator.pt"}
        if self._needs_discriminator():
            torch.save(self.discriminator_.state_dict(), directory / "discriminator.pt")
            files["discriminator"] = "discriminator.pt"
        stats = {k: np.asarray(v, dtype=np.float64) for k, v in self.score_stats_.items()}
        history = {f"history_{k}": np.asarray(v, dtype=np.float64) for k, v in self.history_.items()}
        save_arrays(directory / "state.npz", {**stats, **history})
        plot_history(self.history_, directory / "loss_curves.png", f"{self.name}: training losses per epoch")
        return {
            **files,
            "arrays": "state.npz",
            "loss_curves": "loss_curves.png",
            "input_size": list(self.geometry.size),
            "n_fit": int(self.n_fit_),
            "n_validation": int(self.n_validation_),
            "score_statistics_from": self.stats_source_,
        }

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        self._build()
        self.generator_.load_state_dict(
            torch.load(directory / meta.get("generator", "generator.pt"), map_location="cpu", weights_only=True)
        )
        if self._needs_discriminator():
            self.discriminator_.load_state_dict(
                torch.load(directory / meta.get("discriminator", "discriminator.pt"), map_location="cpu",
                           weights_only=True)
            )
        self.generator_.eval()
        self.discriminator_.eval()
        stat_keys = [f"{t}_{s}" for t in _TERMS for s in ("mean", "std")]
        arrays = load_arrays(directory / meta.get("arrays", "state.npz"), stat_keys)
        self.score_stats_ = {k: float(arrays[k]) for k in stat_keys}
        self.history_ = {k[len("history_"):]: v for k, v in arrays.items() if k.startswith("history_")}
        self.n_fit_ = int(meta.get("n_fit", 0))
        self.n_validation_ = int(meta.get("n_validation", 0))
        self.stats_source_ = meta.get("score_statistics_from", "")
        self.record_ = None

    def _needs_discriminator(self) -> bool:
        return False


def smooth_map(error: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth a per-pixel error map at model resolution.

    Args:
        error: ``(h, w)`` float map.
        sigma: Gaussian sigma in pixels (0 = none).

    Returns:
        ``(h, w)`` float32 map.
    """
    out = np.ascontiguousarray(error, dtype=np.float32)
    if sigma > 0:
        ksize = 2 * int(round(4 * sigma)) + 1
        out = cv2.GaussianBlur(out, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return out


@dataclass(eq=False)
class _AdversarialObjective:
    """The networks and loss weights an objective for :func:`~anomaly.detectors.gan_training.train_gan` holds.

    Subclasses add the weight of their third loss and define ``loss_names``,
    ``generator_loss`` and ``validation_loss``.
    """

    generator: torch.nn.Module
    discriminator: Discriminator
    w_adv: float
    w_con: float

    def generator_forward(self, x: torch.Tensor):
        return self.generator(x)


@dataclass(eq=False)
class _GanomalyObjective(_AdversarialObjective):
    """GANomaly's generator losses (feature matching, contextual L1, latent L2)."""

    loss_names: ClassVar[tuple[str, ...]] = ("adversarial", "contextual", "encoder")

    w_enc: float

    def generator_loss(self, x: torch.Tensor):
        x_hat, z, z_hat = self.generator(x)
        with torch.no_grad():
            real_features = self.discriminator.features(x)
        adv = F.mse_loss(self.discriminator.features(x_hat), real_features)
        con = F.l1_loss(x_hat, x)
        enc = F.mse_loss(z_hat, z)
        total = self.w_adv * adv + self.w_con * con + self.w_enc * enc
        return total, {"adversarial": adv.detach(), "contextual": con.detach(), "encoder": enc.detach()}, x_hat

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        x_hat, z, z_hat = self.generator(x)
        con = (x_hat - x).abs().flatten(1).mean(1)
        enc = (z_hat - z).pow(2).flatten(1).mean(1)
        return self.w_con * con + self.w_enc * enc


@hyperparameters
class GANomaly(_AdversarialReconstruction):
    """GANomaly (Akcay et al., ACCV 2018): encoder-decoder-encoder generator, latent score.

    Args:
        image_size: Model input, an int (square) or ``(height, width)``; both sides
            divisible by ``2**n`` with ``n = floor(log2(min side / 4))`` (e.g. 32, 64, 96,
            128, 256). 128 keeps training of 200 images to a few minutes on 2 CPU cores.
        resize: ``"stretch"`` or ``"letterbox"`` (keep aspect ratio, pad).
        roi: Optional ``(x, y, w, h)`` region of interest in original pixels.
        n_features: Channels of the first convolution, doubled at every stage (the paper's
            DCGAN uses 64; 32 here to fit the CPU budget).
        latent_dim: Length of the code ``z`` (paper: 100).
        w_adv: Weight of the adversarial (feature-matching) loss (paper: 1).
        w_con: Weight of the contextual L1 loss (paper: 50).
        w_enc: Weight of the latent-consistency loss (paper: 1).
        lr: Adam learning rate for both networks (paper: 0.0002).
        beta1: Adam beta1 (paper: 0.5).
        beta2: Adam beta2 (0.999).
        batch_size: Images per step (and per scoring call).
        max_epochs: Epoch budget.
        max_steps: Optional cap on optimisation steps (a bounded run; resume later from
            the checkpoint with a larger budget).
        patience: Stop after this many epochs without a better held-out loss (``None``:
            never); the networks of the best held-out epoch are kept.
        validation_fraction: Fraction of the good images held out for early stopping and
            for the score statistics (seeded; none held out below 4 images).
        shift: Largest random shift of a training image, in model pixels (0 = off).
        flip: Random flips of training images: ``"none"``, ``"horizontal"``,
            ``"vertical"`` or ``"both"`` (only where a flipped good part is still good).
        image_score: ``"latent"`` (paper), ``"reconstruction"`` (largest smoothed map value) or
            ``"combined"`` (both standardised on good images, weighted by
            ``reconstruction_weight``).
        reconstruction_weight: Weight ``lambda`` of the reconstruction term in the
            combined score.
        smoothing_sigma: Gaussian sigma of the anomaly map, in model pixels.
        checkpoint_dir: Folder for ``checkpoint.pt`` (resume after an interruption);
            ``None``: no checkpoints.
        random_state: Seed of initial weights, data order, augmentation and the split.
    """

    name = "ganomaly"
    _third_weight = "w_enc"

    w_con: float = 50.0
    w_enc: float = 1.0
    image_score: str = "latent"

    def _make_generator(self, size):
        return GanomalyGenerator(size, 3, int(self.n_features), int(self.latent_dim))

    def _objective(self):
        return _GanomalyObjective(self.generator_, self.discriminator_, float(self.w_adv), float(self.w_con),
                                  float(self.w_enc))

    def _forward_terms(self, x):
        x_hat, z, z_hat = self.generator_(x)
        return (x_hat - x).abs().mean(1), (z_hat - z).pow(2).flatten(1).mean(1)


@dataclass(eq=False)
class _SkipGanomalyObjective(_AdversarialObjective):
    """Skip-GANomaly's generator losses (adversarial BCE, contextual L1, latent L2 on D features)."""

    loss_names: ClassVar[tuple[str, ...]] = ("adversarial", "contextual", "latent")

    w_lat: float

    def generator_loss(self, x: torch.Tensor):
        x_hat = self.generator(x)
        with torch.no_grad():
            real_features = self.discriminator.features(x)
        fake_features = self.discriminator.features(x_hat)
        logits = self.discriminator.logits(fake_features)
        adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        con = F.l1_loss(x_hat, x)
        lat = F.mse_loss(fake_features, real_features)
        total = self.w_adv * adv + self.w_con * con + self.w_lat * lat
        return total, {"adversarial": adv.detach(), "contextual": con.detach(), "latent": lat.detach()}, x_hat

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        # The discriminator changes from epoch to epoch, so only the contextual loss is
        # comparable across epochs.
        return self.w_con * (self.generator(x) - x).abs().flatten(1).mean(1)


@hyperparameters
class SkipGANomaly(_AdversarialReconstruction):
    """Skip-GANomaly (Akcay et al., IJCNN 2019): U-Net generator, combined score.

    Takes GANomaly's parameters (see :class:`GANomaly`) with these differences:

    Args:
        w_con: Weight of the contextual L1 loss (paper: 40).
        w_lat: Weight of the latent loss on discriminator features (paper: 1).
        skip_from: Finest encoder level with a skip connection (1 = half the input
            resolution, the paper's full U-Net); finer levels have none. Default 3 (at
            128 px: skips at 16, 8 and 4 px): the finest shortcuts let the generator copy
            small defects straight through (see the module docstring).
        image_score: Default ``"combined"``: ``lambda * R + (1 - lambda) * L`` as in the paper,
            each term standardised on good images; ``"latent"`` is the
            discriminator-feature distance alone.
        reconstruction_weight: The paper's ``lambda`` (0.9).
    """

    name = "skip-ganomaly"
    _third_weight = "w_lat"

    skip_from: int = 3
    w_con: float = 40.0
    w_lat: float = 1.0
    image_score: str = "combined"

    def _validate_params(self) -> None:
        super()._validate_params()
        n = num_stages(self.geometry.size)
        if not 1 <= int(self.skip_from) <= n + 1:
            raise InvalidParameterError(f"skip_from must be in [1, {n + 1}] for this image_size, got {self.skip_from}")

    def _make_generator(self, size):
        return UNetGenerator(size, 3, int(self.n_features), int(self.latent_dim), skip_from=int(self.skip_from))

    def _objective(self):
        return _SkipGanomalyObjective(self.generator_, self.discriminator_, float(self.w_adv), float(self.w_con),
                                      float(self.w_lat))

    def _forward_terms(self, x):
        x_hat = self.generator_(x)
        f_real = self.discriminator_.features(x)
        f_fake = self.discriminator_.features(x_hat)
        return (x_hat - x).abs().mean(1), (f_real - f_fake).pow(2).flatten(1).mean(1)

    def _needs_discriminator(self) -> bool:
        return True
