"""Our detectors as a system under test (runs inside a bench worker).

Per test image, in one pass: decode the file with the project's loader, then
``detector.score([image])`` (resize, normalise, backbone, nearest neighbours or
Mahalanobis, and the map brought back to the image's own resolution). End to end is the
sum, the model call is the second part; then, outside both, the backbone's own forward on
that image's prepared input (the floor the rest is compared with).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.bench.provenance import package_versions
from anomaly.store import folder_bytes


def _short(meta: dict[str, Any]) -> dict[str, Any]:
    """Scalars and short lists of a training summary (not, e.g., 100 channel indices)."""
    return {k: v for k, v in meta.items() if not isinstance(v, (list, tuple)) or len(v) <= 4}


class OursSystem:
    """Fit and score one of our registered detectors."""

    name = "ours"

    def __init__(self) -> None:
        # Imported up front (timm is otherwise imported by the first backbone), so that the
        # import footprint is counted as anomalib's is, and not in the model's load time.
        import timm  # noqa: F401
        import torch  # noqa: F401

        from anomaly.detectors.registry import create_detector

        self._create = create_detector
        self.detector = None

    def versions(self) -> dict[str, str]:
        return package_versions()

    def fit(self, model: str, params: dict[str, Any], train: list[str], bundle_dir: Path) -> dict[str, Any]:
        """Fit on ``train`` (paths), save a bundle to measure it, and describe the result."""
        from anomaly.bundle import save_bundle

        from anomaly.detectors.deep import BackboneDetector

        detector = self._create(model, params)
        # Built and loaded before the fit is timed, as anomalib's model is (its constructor loads it).
        start = time.perf_counter()
        if isinstance(detector, BackboneDetector):
            detector.extractor
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        detector.fit(train)
        fit_seconds = time.perf_counter() - start
        self.detector = detector
        target = bundle_dir / "ours"
        if target.exists():
            shutil.rmtree(target)
        save_bundle(detector, target)
        size = folder_bytes(target)
        shutil.rmtree(target, ignore_errors=True)
        return {
            "fit_seconds": round(fit_seconds, 3),
            "model_load_seconds": round(load_seconds, 3),
            "bundle_mb": round(size / 1e6, 3),
            "bundle_holds_backbone": False,
            "params": detector.get_params(),
            "backbone": detector.backbone_info(),
            "training": _short(detector.training_meta()),
        }

    def score(self, path: str) -> tuple[float, np.ndarray, dict[str, float | None]]:
        """Score one image file; return its score, map at its resolution, and timings (ms)."""
        from anomaly.imageio import read_image

        detector = self.detector
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        result = detector.score([image])
        t2 = time.perf_counter()
        timings = {
            "e2e_ms": (t2 - t0) * 1e3,
            "model_ms": (t2 - t1) * 1e3,
            "decode_ms": (t1 - t0) * 1e3,
            "backbone_ms": self._backbone_ms(image),
        }
        return float(result.scores[0]), result.maps[0], timings

    def _backbone_ms(self, image: np.ndarray) -> float | None:
        from anomaly.detectors.deep import BackboneDetector

        detector = self.detector
        if not isinstance(detector, BackboneDetector):
            return None
        from anomaly.features.preprocess import prepare_batch

        extractor = detector.extractor
        batch, _ = prepare_batch([image], detector.geometry, extractor.mean, extractor.std)
        t0 = time.perf_counter()
        extractor(batch)
        return (time.perf_counter() - t0) * 1e3
