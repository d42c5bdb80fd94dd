"""Training checkpoints of the trained models: written atomically, read back only by the run they belong to.

A checkpoint is a ``torch.save`` dict of tensors and plain values, read with
``weights_only=True`` (no pickled code). Its ``run_id`` (:func:`fingerprint` of the
configuration and the training data) must match the resuming run's; a checkpoint of other
parameters or other images, a torn file or another trainer's file starts the run afresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def fingerprint(*parts: object) -> str:
    """sha256 over configuration values and tensors, to match a checkpoint to its run."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().contiguous().numpy().tobytes())
            digest.update(str(tuple(part.shape)).encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save ``payload`` to ``path`` atomically: an interruption leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, fmt: str, run_id: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it is a ``fmt`` checkpoint of run ``run_id``, else ``None`` (said in the log)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start afresh, say why
        log.warning("checkpoint %s is unreadable (%s); training from scratch", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        log.warning("%s is not a checkpoint of this trainer; training from scratch", path)
        return None
    if payload.get("run_id") != run_id:
        log.warning("checkpoint %s belongs to another configuration or other images; training from scratch", path)
        return None
    return payload
