"""Log set-up shared by the command line and the service: our messages by default, libraries' only when asked.

Libraries log at INFO about their own loading (faiss names the SIMD build it falls back from, with a
``ModuleNotFoundError`` that is not an error); a line engineer should see none of it. Our loggers
(``anomaly``, ``service``, ``alignment``) print at ``ANOMALY_LOG_LEVEL`` (default INFO); every other
logger prints warnings and errors only, unless ``-v`` or ``ANOMALY_LOG_LEVEL=DEBUG`` asks for more.
Imports nothing but the standard library, so the gunicorn master can use it without loading the app.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: The loggers of this project, by package.
OWN_LOGGERS = ("anomaly", "service", "alignment")

#: Folders of our packages, to tell our own Python warnings from the libraries'.
_OWN_DIRS = tuple(str(Path(__file__).resolve().parent.parent / name) + os.sep for name in OWN_LOGGERS)

#: Environment variable that sets our log level (a name such as ``DEBUG`` or ``WARNING``).
LEVEL_VARIABLE = "ANOMALY_LOG_LEVEL"


def log_levels(verbose: int = 0, quiet: bool = False) -> tuple[int, int]:
    """Our loggers' level and every other logger's level.

    Args:
        verbose: Number of ``-v`` flags: 1 shows our debug lines and the libraries' INFO lines,
            2 the libraries' debug lines too.
        quiet: Warnings and errors only from our loggers (``--quiet``), unless ``verbose`` says more.

    Returns:
        ``(own_level, library_level)`` as :mod:`logging` level numbers.

    Raises:
        ValueError: ``ANOMALY_LOG_LEVEL`` names no logging level.
    """
    name = os.environ.get(LEVEL_VARIABLE, "").strip().upper()
    if name:
        own = logging.getLevelName(name)
        if not isinstance(own, int):
            raise ValueError(f"{LEVEL_VARIABLE}={name!r} is not a log level; expected DEBUG, INFO, WARNING or ERROR")
    else:
        own = logging.WARNING if quiet else logging.INFO
    if verbose >= 1:
        own = min(own, logging.DEBUG)
    if verbose >= 2:
        return own, logging.DEBUG
    return own, logging.INFO if own <= logging.DEBUG else logging.WARNING


def configure_logging(verbose: int = 0, quiet: bool = False, fmt: str = "%(message)s") -> None:
    """Send log records to standard error: ours at their level, the libraries' at theirs.

    Args:
        verbose: Number of ``-v`` flags (see :func:`log_levels`).
        quiet: Our loggers at WARNING (see :func:`log_levels`).
        fmt: :class:`logging.Formatter` format of every line.
    """
    own, libraries = log_levels(verbose, quiet)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(libraries)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    # Python warnings go through logging; those raised in the libraries' own code show only with -v.
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    for old in [f for f in warnings_logger.filters if isinstance(f, _OwnWarnings)]:
        warnings_logger.removeFilter(old)
    if libraries > logging.INFO:
        warnings_logger.addFilter(_OwnWarnings())


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _OwnWarnings(logging.Filter):
    """Passes the warnings raised in our packages' files (``py.warnings`` records start with the file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().startswith(_OWN_DIRS)
