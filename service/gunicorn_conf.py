"""gunicorn hooks used by ``anomaly serve`` (``-c python:service.gunicorn_conf``).

Kept free of the application's imports: the master process never imports torch, and the
workers build the application themselves (no ``preload_app``), so nothing is forked after
a deep model has started its thread pools.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from anomaly.logs import configure_logging, log_levels

_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

# gunicorn's own lines (booting workers, listening at) are library lines too: warnings and errors only,
# unless ANOMALY_LOG_LEVEL=DEBUG (``anomaly serve`` prints where it serves itself).
loglevel = logging.getLevelName(log_levels()[1]).lower()


def _logging() -> None:
    configure_logging(fmt=_FORMAT)


def on_starting(server: Any) -> None:
    _logging()


def post_fork(server: Any, worker: Any) -> None:
    _logging()


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's gauges must not be reported any more (prometheus_client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
