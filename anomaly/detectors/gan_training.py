"""Adversarial training of a reconstruction model on good images: the loop both GAN detectors share.

One step, as in GANomaly's reference code (Akcay et al. 2018): update the generator on its
weighted losses with the discriminator frozen, then the discriminator on real vs.
reconstructed images (binary cross-entropy); a discriminator whose loss collapses below
``1e-5`` is re-initialised, as the reference code does, so the generator keeps a signal.

Around it, what a CPU user needs:

* augmentations that keep good images good: small random shifts (reflected border) and,
  where the part allows, flips;
* an epoch budget and a step cap (``max_steps``), and early stopping on held-out good
  images (the generator's non-adversarial loss on them, in eval mode); the returned
  networks are those of the best held-out epoch;
* batch-norm statistics recomputed over the training images before every evaluation
  ("precise BN"), so scoring in eval mode sees the statistics of the finished weights
  rather than a running average of earlier ones;
* checkpoints (``torch.save``, read back with ``weights_only=True``) after every epoch and
  when the step cap interrupts an epoch, holding both networks, both optimisers, the data
  generator's random state, the current epoch's order and the early-stopping state, so a
  resumed run continues exactly where the interrupted one stopped;
* a progress bar with the losses, and a per-epoch loss history (plotted by
  :func:`plot_history`).

Every random draw (data order, shifts, flips, re-initialisation) comes from one seeded
``torch.Generator``; the process-wide random state is not touched.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from anomaly.detectors.checkpoints import read_checkpoint, write_checkpoint
from anomaly.detectors.ganomaly_nets import Discriminator, init_weights
from anomaly.errors import InvalidParameterError
from anomaly.progress import progress

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
_CHECKPOINT_FORMAT = "anomaly-gan-checkpoint-1"
#: A discriminator loss below this means it has won outright; it is re-initialised.
D_COLLAPSE = 1e-5
FLIPS = ("none", "horizontal", "vertical", "both")


class Objective(Protocol):
    """What a GAN variant tells the loop: its networks and its generator losses."""

    generator: nn.Module
    discriminator: Discriminator
    loss_names: tuple[str, ...]

    def generator_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Weighted total, its unweighted parts by name, and the reconstruction ``x_hat``."""

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` non-adversarial generator loss per held-out image, in eval mode."""

    def generator_forward(self, x: torch.Tensor) -> object:
        """A forward pass of the generator (for batch-norm statistics)."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train (see the detectors' docstrings for each value's meaning)."""

    batch_size: int
    max_epochs: int
    max_steps: int | None
    lr: float
    beta1: float
    beta2: float
    patience: int | None
    shift: int
    flip: str
    seed: int
    checkpoint_dir: Path | None = None
    desc: str = "training"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_epochs < 1:
            raise InvalidParameterError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidParameterError(f"max_steps must be None or >= 1, got {self.max_steps}")
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise InvalidParameterError(f"need lr > 0 and betas in [0, 1), got {self.lr}, {self.beta1}, {self.beta2}")
        if self.patience is not None and self.patience < 1:
            raise InvalidParameterError(f"patience must be None (off) or >= 1, got {self.patience}")
        if self.shift < 0:
            raise InvalidParameterError(f"shift must be >= 0 pixels, got {self.shift}")
        if self.flip not in FLIPS:
            raise InvalidParameterError(f"flip must be one of {FLIPS}, got {self.flip!r}")


@dataclass
class TrainingRecord:
    """What happened in a training run.

    Attributes:
        history: Per evaluated epoch: ``epoch``, ``step``, the mean of every generator loss
            part, ``generator``, ``discriminator`` and ``validation`` (NaN without held-out
            images).
        steps: Optimisation steps done in total (including those before a resume).
        epochs: Epochs completed.
        best_epoch: Epoch whose networks were kept (``-1``: the last state, mid-epoch).
        stopped_early: Whether early stopping ended the run.
        resumed_from_step: Step the run resumed from (0 = fresh start).
        discriminator_resets: How often a collapsed discriminator was re-initialised.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0
    epochs: int = 0
    best_epoch: int = -1
    stopped_early: bool = False
    resumed_from_step: int = 0
    discriminator_resets: int = 0


def augment(x: torch.Tensor, shift: int, flip: str, rng: torch.Generator) -> torch.Tensor:
    """Random shifts of up to ``shift`` pixels (reflected border) and optional flips.

    Args:
        x: ``(N, C, h, w)`` float batch.
        shift: Largest shift in pixels along each axis (0 = none).
        flip: One of :data:`FLIPS`; each allowed flip is applied with probability 1/2.
        rng: Source of every random draw.

    Returns:
        The augmented ``(N, C, h, w)`` batch (a new tensor).
    """
    n, _, h, w = x.shape
    out = x
    if shift > 0:
        s = min(shift, h - 1, w - 1)
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=rng)
        out = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    if flip in ("horizontal", "both"):
        mask = torch.rand(n, generator=rng) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    if flip in ("vertical", "both"):
        mask = torch.rand(n, generator=rng) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(2), out)
    return out.contiguous()


def recalibrate_batchnorm(module: nn.Module, data: torch.Tensor, batch_size: int,
                          forward: Callable[[torch.Tensor], object]) -> None:
    """Recompute every batch-norm layer's running statistics as exact averages over ``data``.

    Leaves ``module`` in eval mode.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    module.train()
    with torch.no_grad():
        for start in range(0, data.shape[0], batch_size):
            forward(data[start : start + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    module.eval()


class _State:
    """The mutable state of a run: exactly what a checkpoint holds."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0  # completed epochs
        self.order: torch.Tensor | None = None  # data order of the current epoch
        self.sums: dict[str, float] = {}
        self.count = 0
        self.best: dict[str, dict] | None = None
        self.best_val = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.stopped_early = False
        self.history: dict[str, list[float]] = {}
        self.d_resets = 0


def train_gan(
    objective: Objective,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    settings: TrainSettings,
    *,
    run_id: str,
) -> TrainingRecord:
    """Train ``objective``'s generator and discriminator in place.

    Args:
        objective: The variant (networks already initialised).
        train_x: ``(N, C, h, w)`` float32 good images in ``[-1, 1]``.
        val_x: ``(M, C, h, w)`` held-out good images, or ``None`` (no early stopping).
        settings: Budget, optimiser, augmentation, seed, checkpoint folder.
        run_id: Fingerprint of configuration and data; a checkpoint with another one is
            not resumed from (it is replaced).

    Returns:
        The :class:`TrainingRecord`; the networks hold the weights of the best held-out
        epoch, batch-norm statistics recomputed, in eval mode.
    """
    settings.validate()
    gen, disc = objective.generator, objective.discriminator
    betas = (settings.beta1, settings.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=settings.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=settings.lr, betas=betas)
    rng = torch.Generator().manual_seed(int(settings.seed))
    state = _State()

    ckpt_path = None if settings.checkpoint_dir is None else Path(settings.checkpoint_dir) / CHECKPOINT_FILE
    if ckpt_path is not None and ckpt_path.is_file():
        if _load_checkpoint(ckpt_path, run_id, gen, disc, opt_g, opt_d, rng, state):
            log.info("%s: resuming from %s at step %d (epoch %d)", settings.desc, ckpt_path, state.step, state.epoch)
            # Judged with this run's patience, so a larger one continues a stopped run.
            state.stopped_early = settings.patience is not None and state.bad_epochs >= settings.patience
    resumed_from = state.step

    n = train_x.shape[0]
    bs = min(settings.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * settings.max_epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    bar = progress(range(state.step, max(total, state.step)), desc=settings.desc, total=max(0, total - state.step))
    iterator = iter(bar)
    ones = torch.ones(bs)

    while state.step < total and not state.stopped_early:
        position = state.step - state.epoch * steps_per_epoch
        if position == 0 or state.order is None:
            state.order = torch.randperm(n, generator=rng)
            state.sums, state.count = {}, 0
        idx = state.order[position * bs : (position + 1) * bs]
        x = augment(train_x[idx], settings.shift, settings.flip, rng)

        gen.train()
        disc.train()
        disc.requires_grad_(False)
        loss_g, parts, x_hat = objective.generator_loss(x)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        disc.requires_grad_(True)

        logit_real, _ = disc(x)
        logit_fake, _ = disc(x_hat.detach())
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(logit_real, ones[: len(idx)])
            + F.binary_cross_entropy_with_logits(logit_fake, 1.0 - ones[: len(idx)])
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if loss_d.item() < D_COLLAPSE:
            init_weights(disc, rng)
            state.d_resets += 1

        state.step += 1
        state.count += 1
        values = {name: float(v) for name, v in parts.items()}
        values["generator"] = float(loss_g.detach())
        values["discriminator"] = float(loss_d.detach())
        for key, value in values.items():
            state.sums[key] = state.sums.get(key, 0.0) + value
        next(iterator, None)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)

        if state.step - state.epoch * steps_per_epoch == steps_per_epoch:
            _end_epoch(objective, train_x, val_x, settings, state)
            if ckpt_path is not None:
                _save_checkpoint(ckpt_path, run_id, gen, disc, opt_g, opt_d, rng, state)
        elif state.step == total and ckpt_path is not None:
            # Interrupted mid-epoch by max_steps: keep what a resume needs.
            _save_checkpoint(ckpt_path, run_id, gen, disc, opt_g, opt_d, rng, state)
    if hasattr(bar, "close"):
        bar.close()

    best_epoch = _select_final(objective, train_x, val_x, settings, state, steps_per_epoch)
    return TrainingRecord(
        history=state.history,
        steps=state.step,
        epochs=state.epoch,
        best_epoch=best_epoch,
        stopped_early=state.stopped_early,
        resumed_from_step=resumed_from,
        discriminator_resets=state.d_resets,
    )


def _recalibrate(objective: Objective, train_x: torch.Tensor, batch_size: int) -> None:
    recalibrate_batchnorm(objective.generator, train_x, batch_size, objective.generator_forward)
    disc = objective.discriminator
    recalibrate_batchnorm(disc, train_x, batch_size, disc.features)


def _validation(objective: Objective, val_x: torch.Tensor | None, batch_size: int) -> float:
    if val_x is None or val_x.shape[0] == 0:
        return math.nan
    with torch.no_grad():
        losses = [objective.validation_loss(val_x[s : s + batch_size]) for s in range(0, val_x.shape[0], batch_size)]
    return float(torch.cat(losses).mean())


def _end_epoch(objective: Objective, train_x, val_x, settings: TrainSettings, state: _State) -> None:
    state.epoch += 1
    _recalibrate(objective, train_x, settings.batch_size)
    val = _validation(objective, val_x, settings.batch_size)
    row = {"epoch": float(state.epoch), "step": float(state.step)}
    row.update({k: v / max(1, state.count) for k, v in state.sums.items()})
    row["validation"] = val
    for key, value in row.items():
        state.history.setdefault(key, []).append(value)
    improved = math.isnan(val) or val < state.best_val
    if improved:
        state.best_val = val if not math.isnan(val) else state.best_val
        state.best_epoch = state.epoch
        state.bad_epochs = 0
        state.best = {
            "generator": copy.deepcopy(objective.generator.state_dict()),
            "discriminator": copy.deepcopy(objective.discriminator.state_dict()),
        }
    else:
        state.bad_epochs += 1
        if settings.patience is not None and state.bad_epochs >= settings.patience:
            state.stopped_early = True
    log.info(
        "%s: epoch %d step %d  %s  validation %.5g%s", settings.desc, state.epoch, state.step,
        "  ".join(f"{k} {row[k]:.4g}" for k in state.sums), val, "  (best)" if improved else "",
    )


def _select_final(objective: Objective, train_x, val_x, settings: TrainSettings, state: _State,
                  steps_per_epoch: int) -> int:
    """Put the networks kept at the end in place: the best held-out epoch, or the last state.

    A run cut mid-epoch by ``max_steps`` is evaluated once more here (not written to the
    checkpoint, so a resumed run follows the uninterrupted one exactly).
    """
    partial = state.step != state.epoch * steps_per_epoch
    if state.best is None or (partial and val_x is None):
        _recalibrate(objective, train_x, settings.batch_size)
        return -1
    if partial:
        _recalibrate(objective, train_x, settings.batch_size)
        if _validation(objective, val_x, settings.batch_size) < state.best_val:
            return -1
    objective.generator.load_state_dict(state.best["generator"])
    objective.discriminator.load_state_dict(state.best["discriminator"])
    objective.generator.eval()
    objective.discriminator.eval()
    return state.best_epoch


def _save_checkpoint(path: Path, run_id: str, gen, disc, opt_g, opt_d, rng: torch.Generator, state: _State) -> None:
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "run_id": run_id,
        "step": state.step,
        "epoch": state.epoch,
        "order": state.order,
        "sums": dict(state.sums),
        "count": state.count,
        "generator": gen.state_dict(),
        "discriminator": disc.state_dict(),
        "optimizer_generator": opt_g.state_dict(),
        "optimizer_discriminator": opt_d.state_dict(),
        "rng_state": rng.get_state(),
        "best": state.best,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "discriminator_resets": state.d_resets,
    }
    write_checkpoint(path, payload)


def _load_checkpoint(path: Path, run_id: str, gen, disc, opt_g, opt_d, rng: torch.Generator, state: _State) -> bool:
    payload = read_checkpoint(path, _CHECKPOINT_FORMAT, run_id)
    if payload is None:
        return False
    gen.load_state_dict(payload["generator"])
    disc.load_state_dict(payload["discriminator"])
    opt_g.load_state_dict(payload["optimizer_generator"])
    opt_d.load_state_dict(payload["optimizer_discriminator"])
    rng.set_state(payload["rng_state"])
    state.step = int(payload["step"])
    state.epoch = int(payload["epoch"])
    state.order = payload["order"]
    state.sums = dict(payload["sums"])
    state.count = int(payload["count"])
    state.best = payload["best"]
    state.best_val = float(payload["best_val"])
    state.best_epoch = int(payload["best_epoch"])
    state.bad_epochs = int(payload["bad_epochs"])
    state.stopped_early = bool(payload["stopped_early"])
    state.history = {k: list(v) for k, v in payload["history"].items()}
    state.d_resets = int(payload["discriminator_resets"])
    return True


def plot_history(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Write the loss curves as a PNG: generator parts, discriminator, held-out loss.

    Args:
        history: As in :attr:`TrainingRecord.history`.
        path: Output file.
        title: Figure title.
    """
    # Lazy: matplotlib is heavy to import and only this plot needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = history.get("epoch", [])
    fig = Figure(figsize=(10, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    skip = {"epoch", "step", "generator", "discriminator", "validation"}
    for key in history:
        if key not in skip:
            axes[0].plot(epochs, history[key], marker=".", label=key)
    axes[0].set_title("generator loss parts")
    axes[1].plot(epochs, history.get("generator", []), marker=".", label="generator (weighted)")
    axes[1].plot(epochs, history.get("discriminator", []), marker=".", label="discriminator")
    axes[1].set_title("adversarial game")
    axes[2].plot(epochs, history.get("validation", []), marker=".", color="tab:red")
    axes[2].set_title("held-out good images")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    parts = [v for key in history if key not in skip for v in history[key]]
    if parts and min(parts) > 0:
        axes[0].set_yscale("log")
    fig.suptitle(title)
    fig.savefig(path, format="png")
