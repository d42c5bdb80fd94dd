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

The manifest's ``params`` are every hyper-parameter the detector is constructed with, and
loading never changes one: the loaded detector's ``get_params()`` equals them. An older
format is read through one step, :func:`migrate_manifest`, which writes out the values an
old bundle relied on, or refuses a model fitted with a behaviour since removed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from anomaly.calibration import Calibration
from anomaly.detectors.base import Detector
from anomaly.detectors.registry import create_detector
from anomaly.errors import BundleError
from anomaly.features.weights import sha256_file
from anomaly.jsonable import jsonable
from anomaly.packages import installed_versions

FORMAT = "anomaly-bundle"
FORMAT_VERSION = 3
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
    def calibration(self) -> Calibration:
        """The thresholds stored with the model (an empty one when it was never calibrated)."""
        return Calibration.from_manifest(self.manifest.get("calibration"))

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
    calibration: Calibration | None = None,
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
            path = _safe_child(staging, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "detector": detector.name,
            "params": detector.get_params(),
            "packages": package_versions(),
            "backbone": detector.backbone_info(),
            "training_data": training.to_dict() if training else None,
            "training": jsonable(detector.training_meta()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "calibration": jsonable(calibration.to_dict()) if calibration else None,
            "metrics": jsonable(metrics) if metrics else None,
            "notes": jsonable(notes) if notes else None,
            "state": jsonable(state_meta),
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
    """Read and check a bundle's manifest (format, version, own hash) without loading the model.

    Returns:
        The manifest in the current format (:func:`migrate_manifest`).
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a model bundle: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") not in _MIGRATIONS and manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {manifest.get('format_version')}, this program reads versions "
            f"{', '.join(map(str, sorted({*_MIGRATIONS, FORMAT_VERSION})))}; retrain the model"
        )
    recorded = manifest.get("sha256")
    if recorded is not None and recorded != manifest_digest(manifest):
        raise BundleError(
            f"{path} changed after the bundle was written (its sha256 no longer matches): an edited "
            "calibration or parameter is refused like an edited weight file; move thresholds with "
            "`anomaly models set-threshold`, which writes a new version"
        )
    return migrate_manifest(manifest)


def migrate_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest in the current format: one step per older version, as a new dict.

    Format 2 to 3: PatchCore's tiling parameters (``tile_overlap``, ``tile_scale``) are
    filled with their defaults; a format-2 model did not tile, so they do not change it.

    Format 1 to 2: ``params`` become exactly what the detector is constructed with.

    * Filled, where a format-1 manifest lacks them, with the value the model was fitted
      with (the behaviour before the parameter existed): PatchCore ``grid_stride=None``
      (the finest grid; the default became ``"auto"`` later) and ``channels_per_layer=None``.
    * Dropped, being no longer parameters, where the model was fitted with the behaviour
      format 2 keeps: PatchCore's and PaDiM's ``grid_origin`` (``"layer"``) and
      ``coarse_sampling`` (PatchCore ``"linear"``, PaDiM ``"nearest"``), both read from
      the state as format 1 read them (absent: ``"input"`` and ``"linear"``, the
      behaviour before they existed); PatchCore's ``refine_cells`` (8 where the bundle
      holds a finest-grid bank; without one the score is the grid's own, which PatchCore
      refuses at loading if its grid is coarser than the finest) and
      ``coarse_bank_size`` (any value: it only chose the stored bank).
    * Removed: the same options where the model was fitted otherwise (a grid anchored on
      pixel ``(0, 0)``, PaDiM's bilinear sampling, another number of refined cells). No
      parameter gives that behaviour any more, so :func:`load_bundle` refuses such a
      model, saying to retrain it; its manifest stays readable (listing, inspection).

    What was filled, dropped and removed is kept under ``"migration"``; ``"sha256"`` stays
    that of the stored manifest.

    Args:
        manifest: A manifest as read from ``manifest.json``.

    Returns:
        A manifest of :data:`FORMAT_VERSION` (``manifest`` itself when it is one).

    Raises:
        BundleError: a format version this program does not read.
    """
    version = manifest.get("format_version")
    while version != FORMAT_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise BundleError(f"bundle format version {version} cannot be read by this program; retrain the model")
        manifest = step(copy.deepcopy(manifest))
        version = manifest["format_version"]
    return manifest


#: Parameters added while format 1 was written: the value a format-1 bundle without them was fitted with.
_V1_ADDED = {"patchcore": {"grid_stride": None, "channels_per_layer": None}}
#: Options format 2 fixed, recorded in a format-1 bundle's state: the value kept, and the value
#: a bundle that does not record the option was fitted with.
_V1_FIXED_IN_STATE = {
    "patchcore": {"grid_origin": ("layer", "input"), "coarse_sampling": ("linear", "linear")},
    "padim": {"grid_origin": ("layer", "input"), "coarse_sampling": ("nearest", "linear")},
}


def _migrate_v1(manifest: dict[str, Any]) -> dict[str, Any]:
    """Format 1 to 2 (see :func:`migrate_manifest`); ``manifest`` is a copy, changed in place."""
    name = manifest.get("detector")
    params = manifest["params"] = manifest.get("params") or {}
    state = manifest["state"] = manifest.get("state") or {}
    filled = {key: value for key, value in _V1_ADDED.get(name, {}).items() if key not in params}
    params.update(filled)
    dropped, removed = {}, {}
    for option, (kept, before) in _V1_FIXED_IN_STATE.get(name, {}).items():
        params.pop(option, None)
        fitted = state.pop(option, before)
        (dropped if fitted == kept else removed)[option] = fitted
    if name == "patchcore":
        refine = params.pop("refine_cells", 0)
        # Only a bundle with a finest-grid bank was refined, in ``refine`` cells.
        (removed if "fine_index_file" in state and refine != 8 else dropped)["refine_cells"] = refine
        if "coarse_bank_size" in params:
            dropped["coarse_bank_size"] = params.pop("coarse_bank_size")
    manifest["format_version"] = 2
    manifest["migration"] = {"from_format_version": 1, "filled": filled, "dropped": dropped, "removed": removed}
    return manifest


#: Parameters added with format 3 (tiling): a format-2 model did not tile, so these do not
#: change it; they are filled with their defaults.
_V2_ADDED = {"patchcore": {"tile_overlap": 32, "tile_scale": 1.0}}


def _migrate_v2(manifest: dict[str, Any]) -> dict[str, Any]:
    """Format 2 to 3 (see :func:`migrate_manifest`); ``manifest`` is a copy, changed in place."""
    params = manifest["params"] = manifest.get("params") or {}
    filled = {key: value for key, value in _V2_ADDED.get(manifest.get("detector"), {}).items() if key not in params}
    params.update(filled)
    manifest["format_version"] = 3
    migration = manifest.setdefault("migration", {"from_format_version": 2, "filled": {}, "dropped": {},
                                                  "removed": {}})
    migration["filled"] = {**migration.get("filled", {}), **filled}
    return manifest


#: Format version -> the step that turns such a manifest into the next version's.
_MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2}


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

    The detector is constructed from the manifest's (migrated) parameters and its state
    read back; nothing rewrites a parameter, so its ``get_params()`` equals them.

    Raises:
        BundleError: not a bundle, an unreadable format version, a missing or changed
            file, a parameter missing from the manifest, or a model fitted with a
            behaviour since removed.
        UnknownDetectorError: the detector named in the manifest is not installed.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    removed = (manifest.get("migration") or {}).get("removed")
    if removed:
        raise BundleError(
            f"{root}: this {manifest['detector']} was fitted with "
            f"{', '.join(f'{k}={v!r}' for k, v in removed.items())} (bundle format "
            f"{manifest['migration']['from_format_version']}), a behaviour since removed: retrain the model")
    params = manifest.get("params") or {}
    detector = create_detector(manifest["detector"], params)
    missing = sorted(set(detector.param_names()) - set(params))
    if missing:
        # The default would stand in for the value the model was fitted with.
        raise BundleError(f"{root}: the manifest lacks parameter(s) {', '.join(missing)} of {manifest['detector']}; "
                          f"a parameter added since format {manifest['format_version']} needs a migration step")
    detector._load_state(root, manifest.get("state") or {})
    detector.fitted_ = True
    return Bundle(detector=detector, manifest=manifest, path=root)


def _safe_child(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle file name {rel!r} points outside the bundle")
    return path
