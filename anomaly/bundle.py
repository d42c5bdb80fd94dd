"""Model bundles: a self-describing folder that loads offline, without pickle.

Layout::

    manifest.json     format version, detector name and parameters, package versions,
                      backbone (name, layers, weights sha256), training-data fingerprint
                      and image count, creation time, calibration, metrics, and the
                      sha256 of every other file
    state.npz         plain arrays (np.load with allow_pickle=False)
    *.faiss, *.pt     faiss indexes, torch state dicts (loaded with weights_only=True)
    ...               anything else a detector or calibration writes (PNG curves)

Loading checks the format version, the manifest's own sha256 (``"sha256"``: over the rest
of the manifest, which lists every other file's hash, so it covers the whole bundle) and
every file hash, and refuses a bundle that does not match, saying why: a calibration edited
by hand is refused as an edited weight file is. The hashes catch changes, not a forger who
rewrites them; bundles written before the manifest was hashed load without that check.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anomaly.detectors.base import Detector
from anomaly.detectors.registry import create_detector
from anomaly.errors import BundleError
from anomaly.features.weights import sha256_file
from anomaly.packages import installed_versions

FORMAT = "anomaly-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_PACKAGES = ("anomaly-inspect", "numpy", "opencv-python-headless", "scikit-learn", "torch", "timm", "faiss-cpu")


@dataclass
class Bundle:
    """A loaded bundle.

    Attributes:
        detector: The fitted detector.
        manifest: The manifest as a dict.
        path: Folder the bundle was loaded from (``None`` if not saved yet).
    """

    detector: Detector
    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def calibration(self) -> dict[str, Any]:
        return self.manifest.get("calibration") or {}

    @property
    def name(self) -> str:
        return self.manifest.get("detector", "")


@dataclass
class TrainingData:
    """Fingerprint of the images a model was trained on.

    Attributes:
        fingerprint: sha256 over the sorted per-image content hashes.
        n_images: How many images.
        source: Where they came from (a folder, "upload", ...), informational.
    """

    fingerprint: str
    n_images: int
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "n_images": self.n_images, "source": self.source, **self.extra}


def fingerprint_images(images: Iterable[Any]) -> str:
    """sha256 over per-image hashes (file bytes for paths/bytes, pixels for arrays), order-free."""
    hashes = []
    for image in images:
        if isinstance(image, np.ndarray):
            h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
            h.update(str(image.shape).encode())
            hashes.append(h.hexdigest())
        elif isinstance(image, (bytes, bytearray)):
            hashes.append(hashlib.sha256(image).hexdigest())
        else:
            hashes.append(sha256_file(image))
    digest = hashlib.sha256()
    for h in sorted(hashes):
        digest.update(h.encode())
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages a bundle depends on (missing ones left out)."""
    return {"python": platform.python_version(), **installed_versions(_PACKAGES)}


def save_bundle(
    detector: Detector,
    directory: str | os.PathLike,
    *,
    training: TrainingData | None = None,
    calibration: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a fitted detector as a bundle folder (atomically: written aside, then renamed).

    Args:
        detector: A fitted detector.
        directory: Target folder; must not exist yet.
        training: Fingerprint of the training images.
        calibration: Thresholds and the good-score statistics they came from.
        metrics: Evaluation figures, if any.
        extra_files: More files to ship (e.g. ``{"calibration.png": b"..."}``).
        notes: Free-form JSON-able facts (who, why).

    Returns:
        The manifest written.

    Raises:
        BundleError: the folder exists already.
    """
    detector.check_fitted()
    target = Path(directory)
    if target.exists():
        raise BundleError(f"bundle folder {target} exists already; bundles are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        state_meta = detector._save_state(staging)
        for rel, payload in (extra_files or {}).items():
            _safe_child(staging, rel).write_bytes(payload)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "detector": detector.name,
            "params": detector.get_params(),
            "packages": package_versions(),
            "backbone": detector.backbone_info(),
            "training_data": training.to_dict() if training else None,
            "training": _jsonable(detector.training_meta()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "calibration": _jsonable(calibration) if calibration else None,
            "metrics": _jsonable(metrics) if metrics else None,
            "notes": _jsonable(notes) if notes else None,
            "state": _jsonable(state_meta),
            "files": {
                str(p.relative_to(staging)): sha256_file(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            },
        }
        write_manifest(staging, manifest)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON, its own ``sha256`` entry left out."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with its ``sha256`` set (``manifest`` gains the entry too).

    Raises:
        ValueError: the manifest holds a NaN or an infinity (not JSON).
    """
    manifest.pop("sha256", None)
    manifest["sha256"] = manifest_digest(manifest)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False))


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bundle's manifest (format, version) without loading the model."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {manifest.get('format_version')}, this program reads "
            f"version {FORMAT_VERSION}; retrain or convert the model"
        )
    recorded = manifest.get("sha256")
    if recorded is not None and recorded != manifest_digest(manifest):
        raise BundleError(
            f"{path} changed after the bundle was written (its sha256 no longer matches): an edited "
            "calibration or parameter is refused like an edited weight file; move thresholds with "
            "`anomaly models set-threshold`, which writes a new version"
        )
    return manifest


def verify_files(directory: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check that every file the manifest lists is there with the recorded sha256."""
    root = Path(directory)
    for rel, expected in (manifest.get("files") or {}).items():
        path = _safe_child(root, rel)
        if not path.is_file():
            raise BundleError(f"bundle {root} is incomplete: {rel} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle {root}: {rel} has sha256 {actual[:16]}..., the manifest says {expected[:16]}... "
                "(file changed after the bundle was written)"
            )


def load_bundle(directory: str | os.PathLike) -> Bundle:
    """Load a bundle: check format, hashes, then rebuild the detector.

    Raises:
        BundleError: not a bundle, other format version, a missing or changed file.
        UnknownDetectorError: the detector named in the manifest is not installed.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    detector = create_detector(manifest["detector"], manifest.get("params") or {})
    detector._load_state(root, manifest.get("state") or {})
    detector.fitted_ = True
    return Bundle(detector=detector, manifest=manifest, path=root)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write plain arrays as ``.npz`` (never object arrays)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise BundleError(f"array {key!r} has dtype object; bundles hold plain arrays only")
    np.savez(path, **arrays)


def load_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_arrays`, without pickle; all ``names`` must be there."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in names if n not in data.files]
            if missing:
                raise BundleError(f"{path} lacks arrays {missing}")
            return {n: data[n] for n in data.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read arrays from {path}: {exc}") from None


def _safe_child(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle file name {rel!r} points outside the bundle")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
