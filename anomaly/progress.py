"""Progress bars for long steps (tqdm), switched on by the command line.

Library calls stay quiet by default; ``enable_progress()`` is called by the CLI, not on
import, so importing the library changes no global state.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
_ENABLED = False


def enable_progress(enabled: bool = True) -> None:
    """Show progress bars on standard error from now on (for the CLI)."""
    global _ENABLED
    _ENABLED = enabled


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when progress is enabled."""
    if not _ENABLED:
        return iterable
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
