"""Shared fixtures: small generated parts (no real data needed) and the real-data location."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
POSTGRES_URL = os.environ.get("ANOMALY_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


def postgres_or_skip() -> None:
    """Skip where no PostgreSQL server answers at :data:`POSTGRES_URL`; under CI, fail instead."""
    import sqlalchemy as sa

    from service.db import normalize_url

    try:
        engine = sa.create_engine(normalize_url(POSTGRES_URL), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {str(exc)[:200]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)


def listening_or_skip(host: str, port: int, what: str) -> None:
    """Skip where nothing listens at ``host:port`` (a loopback service: Redis, Mosquitto); under CI, fail instead."""
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"no {what} at {host}:{port} ({exc})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + f" (CI must run the {what} tests)")
        pytest.skip(message)


@contextlib.contextmanager
def postgres_schema() -> Iterator[dict[str, str]]:
    """Service settings for the test PostgreSQL server, in a schema of its own (dropped after)."""
    import sqlalchemy as sa

    from service.db import normalize_url

    postgres_or_skip()
    schema = f"anomaly_test_{uuid.uuid4().hex[:12]}"
    yield {"DATABASE_URL": POSTGRES_URL, "DATABASE_SCHEMA": schema}
    engine = sa.create_engine(normalize_url(POSTGRES_URL))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def postgres_settings():
    """:func:`postgres_schema` for one test."""
    with postgres_schema() as settings:
        yield settings


def make_part(rng: np.random.Generator, size: int = 96, shift: tuple[int, int] = (0, 0),
              channels: int = 3) -> np.ndarray:
    """A plain generated part: a textured plate with two holes on a noisy background.

    Returns:
        ``(size, size, 3)`` (or ``(size, size)``) uint8.
    """
    img = np.full((size, size), 90, np.float32) + rng.normal(0, 4, (size, size)).astype(np.float32)
    c = size // 2
    dx, dy = shift
    cv2.rectangle(img, (c - size // 3 + dx, c - size // 4 + dy), (c + size // 3 + dx, c + size // 4 + dy), 170, -1)
    for ox in (-size // 6, size // 6):
        cv2.circle(img, (c + ox + dx, c + dy), size // 14, 60, -1)
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 3:
        img = np.stack([img, img, (img * 0.9).astype(np.uint8)], axis=2)
    return img


@pytest.fixture(scope="session")
def good_parts() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [make_part(rng, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))) for _ in range(12)]


@pytest.fixture(scope="session")
def test_parts() -> tuple[list[np.ndarray], np.ndarray]:
    """Three good parts and three with a bright square pasted at (60..72, 30..42)."""
    rng = np.random.default_rng(1)
    good = [make_part(rng) for _ in range(3)]
    bad = []
    for _ in range(3):
        img = make_part(rng)
        img[30:42, 60:72] = 250
        bad.append(img)
    mask = np.zeros((96, 96), bool)
    mask[30:42, 60:72] = True
    return good + bad, mask


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store of this test module's own holding ``tiny`` (PatchCore at 64 px, trained once per run)."""
    from service.testing import tiny_goods, tiny_store

    return tiny_store(tmp_path_factory.mktemp("store") / "store", tiny_goods)


@pytest.fixture
def client(app):
    """A test client of the module's ``app`` fixture."""
    return app.test_client()


@pytest.fixture(scope="module")
def part_png() -> bytes:
    """A good part, PNG-encoded."""
    from service.testing import make_part as service_part, png_bytes

    return png_bytes(service_part(np.random.default_rng(42)))


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    if not DATASETS.is_dir():
        pytest.skip("../shared/datasets is absent")
    return DATASETS
