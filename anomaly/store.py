"""The model store: ``<root>/<name>/<version>/`` bundles with one production mark per name.

Versions are immutable integers allocated with an atomic ``mkdir``; files of a stored
version are made read-only. Promotion and rollback only move the mark, which is a small
JSON file (``<root>/<name>/production.json``) replaced atomically and keeping the history
of marks, so rollback returns to the version that was in production before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from anomaly.bundle import Bundle, load_bundle, read_manifest
from anomaly.calibration import Calibration
from anomaly.errors import BundleError, InvalidParameterError, ModelNotFoundError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MARK = "production.json"


def folder_bytes(root: str | os.PathLike) -> int:
    """Bytes of the regular files below ``root`` (symbolic links not followed; unreadable files skipped)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def default_store_root() -> Path:
    """``ANOMALY_STORE`` or ``./models``."""
    return Path(os.environ.get("ANOMALY_STORE", "models"))


def check_model_name(name: str) -> str:
    """Model names are used as folder names: letters, digits, ``_ . -``; at most 64."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidParameterError(
            f"model name must be 1-64 characters of letters, digits, '_', '.', '-' "
            f"starting with a letter or digit, got {name!r}"
        )
    return name


@dataclass
class VersionInfo:
    """One stored version, as listed."""

    name: str
    version: int
    path: Path
    production: bool
    manifest: dict[str, Any]

    @property
    def calibration(self) -> Calibration:
        """The version's thresholds (empty when it was never calibrated)."""
        return Calibration.from_manifest(self.manifest.get("calibration"))

    def summary(self) -> dict[str, Any]:
        cal = self.calibration
        return {
            "name": self.name,
            "version": self.version,
            "production": self.production,
            "detector": self.manifest.get("detector"),
            "created": self.manifest.get("created"),
            "n_train": (self.manifest.get("training_data") or {}).get("n_images"),
            "t_review": cal.t_review,
            "t_ng": cal.t_ng,
            "parent_version": (self.manifest.get("notes") or {}).get("parent_version"),
        }


class ModelStore:
    """Versioned bundles on disk.

    Args:
        root: Folder holding one sub-folder per model name.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_store_root()

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name) and self.versions(p.name))

    #: The file that makes a version folder a version (a bundle's manifest).
    MARKER = "manifest.json"

    def versions(self, name: str) -> list[int]:
        folder = self.root / check_model_name(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()
                      and (p / self.MARKER).is_file())

    def path(self, name: str, version: int | None = None) -> Path:
        """Folder of ``name``'s ``version`` (default: the production version)."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no model named {name!r} in the store at {self.root}")
        if version is None:
            version = self.production(name)
            if version is None:
                raise ModelNotFoundError(f"model {name!r} has no production version; promote one of {versions}")
        if int(version) not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version}; versions: {versions}")
        return self.root / name / str(int(version))

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        return self._read(self.path(name, version))

    def _read(self, folder: Path) -> dict[str, Any]:
        """The version folder's description (a bundle's manifest)."""
        return read_manifest(folder)

    def load(self, name: str, version: int | None = None) -> Bundle:
        return load_bundle(self.path(name, version))

    def production(self, name: str) -> int | None:
        mark = self._read_mark(name)
        return mark.get("version")

    def history(self, name: str) -> list[dict[str, Any]]:
        return list(self._read_mark(name).get("history", []))

    def list(self, name: str | None = None) -> list[VersionInfo]:
        out = []
        for model in [check_model_name(name)] if name else self.names():
            prod = self.production(model)
            for version in self.versions(model):
                path = self.root / model / str(version)
                out.append(VersionInfo(model, version, path, version == prod, self._read(path)))
        return out

    # -- writing -------------------------------------------------------------------------
    def add(self, name: str, write: Callable[[Path], Any], *, promote: bool | None = None) -> int:
        """Store a new version.

        Args:
            name: Model name.
            write: Called with a folder path that does not exist yet; it must write the
                bundle there (e.g. ``lambda p: save_bundle(det, p, ...)``).
            promote: Mark it for production; by default only when it is the first version.

        Returns:
            The new version number.
        """
        folder = self.root / check_model_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".new-{os.getpid()}-{datetime.now().timestamp():.6f}"
        try:
            write(staging)
            read_manifest(staging)
            version = self._claim_version(folder, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _make_read_only(folder / str(version))
        if promote or (promote is None and self.production(name) is None):
            self.promote(name, version)
        return version

    def promote(self, name: str, version: int) -> None:
        """Mark ``version`` for production (remembering the previous mark for rollback)."""
        version = int(version)
        self.path(name, version)  # raises if absent
        mark = self._read_mark(name)
        history = mark.get("history", [])
        history.append({"version": version, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        self._write_mark(name, {"version": version, "history": history})

    def rollback(self, name: str) -> int:
        """Move the mark back to the version in production before the current one.

        Returns:
            The version now in production.

        Raises:
            ModelNotFoundError: no earlier production version to return to.
        """
        mark = self._read_mark(name)
        history = mark.get("history", [])
        current = mark.get("version")
        previous = [h["version"] for h in history if h["version"] != current]
        if current is None or not previous:
            raise ModelNotFoundError(f"model {name!r} has no earlier production version to roll back to")
        target = previous[-1]
        # Drop the current mark's trailing entries so repeated rollbacks walk back in time.
        while history and history[-1]["version"] == current:
            history.pop()
        history.append({"version": target, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rollback": True})
        self._write_mark(name, {"version": target, "history": history})
        return target

    # -- internals ---------------------------------------------------------------------------
    def _claim_version(self, folder: Path, staging: Path) -> int:
        for _ in range(1000):
            version = max(self.versions(folder.name), default=0) + 1
            target = folder / str(version)
            try:
                os.rename(staging, target)  # fails if another writer took the number
                return version
            except OSError:
                if target.exists():
                    continue
                raise
        raise BundleError(f"could not allocate a version number under {folder}")

    def _read_mark(self, name: str) -> dict[str, Any]:
        path = self.root / check_model_name(name) / _MARK
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise BundleError(f"production mark {path} is corrupt: {exc}") from None

    def _write_mark(self, name: str, mark: dict[str, Any]) -> None:
        path = self.root / name / _MARK
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(mark, indent=2))
        os.replace(tmp, path)


def _make_read_only(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
