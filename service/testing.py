"""Helpers for tests of the service (and of anything that needs a small stored model).

:func:`tiny_store` trains a small PatchCore once per process (64 px input, a handful of
images: seconds, not minutes) and copies that store wherever a test wants one, so test
modules share the training cost without sharing state.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

_TEMPLATES: dict[tuple[str, str, int], Path] = {}


def build_store(root: Path, name: str, images: Sequence[np.ndarray], *, detector: str = "patchcore",
                image_size: int = 64) -> int:
    """Train ``detector`` on ``images`` and store it as ``name`` (promoted); returns the version."""
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into

    return train_into(ModelStore(root), name, detector, list(images), TrainingOptions(n_folds=2, detection=False),
                      params={"image_size": image_size}, source="tests", promote=True).version


def tiny_store(dest: Path, images: Callable[[], Sequence[np.ndarray]], *, name: str = "tiny",
               detector: str = "patchcore", image_size: int = 64) -> Path:
    """A copy at ``dest`` of a store holding one trained model ``name`` (version 1, in production).

    Args:
        dest: Folder to create (must not exist).
        images: Called (once per process) for the good training images.
        name: Model name.
        detector: Detector name.
        image_size: Model input size.

    Returns:
        ``dest``.
    """
    key = (name, detector, image_size)
    template = _TEMPLATES.get(key)
    if template is None or not template.is_dir():
        template = Path(tempfile.mkdtemp(prefix="anomaly-tiny-store-"))
        atexit.register(shutil.rmtree, template, True)
        build_store(template, name, images(), detector=detector, image_size=image_size)
        _TEMPLATES[key] = template
    shutil.copytree(template, dest)
    return dest


def make_test_config(tmp: Path, store: Path | None, **overrides: object) -> dict[str, object]:
    """A test configuration: its own instance folder, SQLite file and archive under ``tmp``."""
    config: dict[str, object] = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-" + tmp.name,  # per test, never a shared constant
        "INSTANCE_PATH": str(tmp / "instance"),
        "STORE": str(store) if store is not None else str(tmp / "empty-store"),
        "DATABASE_URL": f"sqlite:///{tmp / 'records.sqlite'}",
        "ARCHIVE": "rejected",
        "PRELOAD_MODELS": False,
        "WARMUP": False,
    }
    config.update(overrides)
    return config


def service_app(store: Path, tmp: Path, **overrides: object):
    """An application on a copy of ``store`` (under ``tmp``), with :func:`make_test_config` and ``overrides``."""
    from service import create_app

    root = tmp / "store"
    shutil.copytree(store, root)
    return create_app(make_test_config(tmp, root, **overrides))


def tiny_goods() -> list[np.ndarray]:
    """The eight generated good parts the shared tiny store is trained on (seed 0)."""
    rng = np.random.default_rng(0)
    return [make_part(rng) for _ in range(8)]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of an image array."""
    from anomaly.imageio import encode_png

    return encode_png(image)


def make_part(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A plain generated part: a textured plate with two holes on a noisy background.

    The same recipe as the shared test fixtures, so service tests need no data on disk.

    Returns:
        ``(size, size, 3)`` uint8 RGB.
    """
    import cv2

    img = np.full((size, size), 90, np.float32) + rng.normal(0, 4, (size, size)).astype(np.float32)
    c = size // 2
    cv2.rectangle(img, (c - size // 3, c - size // 4), (c + size // 3, c + size // 4), 170, -1)
    for ox in (-size // 6, size // 6):
        cv2.circle(img, (c + ox, c), size // 14, 60, -1)
    img = np.clip(cv2.GaussianBlur(img, (3, 3), 0.8), 0, 255).astype(np.uint8)
    return np.stack([img, img, (img * 0.9).astype(np.uint8)], axis=2)


def finished_job(client, accepted: dict, *, timeout: float = 300.0, every: float = 0.3) -> dict:
    """Poll a training job the API accepted (its 202 answer) until it ends or ``timeout`` passes; the last answer."""
    import time

    job, status_url, deadline = accepted, accepted["status_url"], time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(every)
        job = client.get(status_url).get_json()
    return job
