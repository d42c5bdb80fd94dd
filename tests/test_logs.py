"""Quiet by default: our log lines at INFO, the libraries' (faiss's loader, gunicorn, warnings) only when asked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from anomaly.imageio import write_png
from anomaly.logs import configure_logging, log_levels
from tests.conftest import make_part

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    monkeypatch.delenv("ANOMALY_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), {n: logging.getLogger(n).level for n in ("anomaly", "service")})
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)


def test_levels_by_flag_and_variable(monkeypatch) -> None:
    assert log_levels() == (logging.INFO, logging.WARNING)
    assert log_levels(quiet=True) == (logging.WARNING, logging.WARNING)
    assert log_levels(verbose=1) == (logging.DEBUG, logging.INFO)
    assert log_levels(verbose=2) == (logging.DEBUG, logging.DEBUG)
    monkeypatch.setenv("ANOMALY_LOG_LEVEL", "debug")
    assert log_levels() == (logging.DEBUG, logging.INFO)
    monkeypatch.setenv("ANOMALY_LOG_LEVEL", "WARNING")
    assert log_levels() == (logging.WARNING, logging.WARNING)
    monkeypatch.setenv("ANOMALY_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="ANOMALY_LOG_LEVEL"):
        log_levels()


def test_library_chatter_hidden_ours_shown(capsys) -> None:
    configure_logging()
    logging.getLogger("anomaly.training").info("ours at info")
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    logging.getLogger("faiss.loader").warning("a library's warning")
    err = capsys.readouterr().err
    assert "ours at info" in err and "a library's warning" in err and "AVX2" not in err

    configure_logging(verbose=1)  # reconfiguring replaces the handler: each line printed once
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    logging.getLogger("anomaly.training").debug("ours at debug")
    err = capsys.readouterr().err
    assert err.count("AVX2") == 1 and "ours at debug" in err


def test_library_warnings_hidden_unless_verbose(capsys) -> None:
    configure_logging()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("a library's deprecation", UserWarning, "/site-packages/timm/x.py", 1)
        warnings.warn_explicit("ours", UserWarning, str(ROOT / "anomaly" / "x.py"), 1)
        err = capsys.readouterr().err
        assert "a library's deprecation" not in err and "ours" in err
        configure_logging(verbose=1)
        warnings.warn_explicit("a library's deprecation", UserWarning, "/site-packages/timm/x.py", 1)
        assert "a library's deprecation" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_prints_only_its_own_lines(tmp_path) -> None:
    # A fresh interpreter, where faiss really loads and logs its fall-back from the AVX2 build.
    good = tmp_path / "part" / "train" / "good"
    good.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(good / f"{i:03d}.png", make_part(rng))
    env = {k: v for k, v in os.environ.items() if k != "ANOMALY_LOG_LEVEL"}

    def anomaly(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "anomaly.cli.main", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    store = str(tmp_path / "store")
    trained = anomaly("train", str(good), "--name", "part", "--image-size", "64", "--store", store)
    assert trained.returncode == 0, trained.stderr
    scored = anomaly("score", str(good / "000.png"), "--name", "part", "--store", store)
    assert scored.returncode == 0, scored.stderr
    for run in (trained, scored):
        for marker in ("faiss", "AVX", "ModuleNotFoundError", "Warning", "timm"):
            assert marker not in run.stderr, run.stderr
    assert "good parts are rejected" in trained.stderr  # our own INFO line stays
    loud = anomaly("-v", "score", str(good / "000.png"), "--name", "part", "--store", store)
    assert loud.returncode == 0 and "Loading faiss" in loud.stderr, loud.stderr
