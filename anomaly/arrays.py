"""Plain arrays on disk: ``.npz`` files written and read without pickle.

A leaf module: detectors write their learned state with it, and the bundle code, which
builds detectors, never has to be imported by them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from anomaly.errors import BundleError


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write plain arrays as ``.npz``.

    Args:
        path: Target file.
        arrays: Name -> array of any shape and numeric or boolean dtype.

    Raises:
        BundleError: an array of dtype object (it would need pickle).
    """
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise BundleError(f"array {key!r} has dtype object; bundles hold plain arrays only")
    np.savez(path, **arrays)


def load_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_arrays`, without pickle.

    Args:
        path: The ``.npz`` file.
        names: Arrays that must be there.

    Returns:
        Every array in the file, by name (``names`` and any others).

    Raises:
        BundleError: unreadable file, or one of ``names`` missing.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise BundleError(f"{path} lacks arrays {missing}")
            return {n: data[n] for n in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read arrays from {path}: {exc}") from None
