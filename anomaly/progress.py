"""Progress of long steps: tqdm bars switched on by the command line, and listeners for the service.

Library calls stay quiet by default; ``enable_progress()`` is called by the CLI, not on
import, so importing the library changes no global state. A training job in the service
follows the same steps with :func:`listen` (its thread only), to show each step's name and
how far it got.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
_ENABLED = False
_LOCAL = threading.local()

#: ``listener(step, done, total)``: ``done`` of ``total`` items of the step named ``step`` are through.
Listener = Callable[[str, int, int], None]


def enable_progress(enabled: bool = True) -> None:
    """Show progress bars on standard error from now on (for the CLI)."""
    global _ENABLED
    _ENABLED = enabled


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Call ``listener`` for every item of every :func:`progress` loop this thread runs meanwhile."""
    previous = getattr(_LOCAL, "listener", None)
    _LOCAL.listener = listener
    try:
        yield
    finally:
        _LOCAL.listener = previous


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when progress is enabled, and report it to this thread's listener."""
    listener = getattr(_LOCAL, "listener", None)
    if listener is not None:
        iterable = _reported(iterable, desc, total, listener)
    if not _ENABLED:
        return iterable
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def _reported(iterable: Iterable[T], desc: str, total: int | None, listener: Listener) -> Iterator[T]:
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = 0
    listener(desc, 0, total)
    for done, item in enumerate(iterable, start=1):
        yield item
        listener(desc, done, total)
