"""``anomaly eval``: fit on ``train/good``, score every test image alone, measure.

Timing is interleaved per test image so that machine noise hits every figure alike:
for each image, (1) decoding its file bytes alone, (2) the end-to-end score (file bytes to
score and full-resolution map), (3) the backbone's own forward on that image's prepared
input, when the detector has a backbone. ``peak_rss_mb`` is the process's peak resident
memory over fit and scoring.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from anomaly.datasets import MVTecCategory
from anomaly.imageio import decode_image
from anomaly.metrics import PixelMetrics, f1_max, image_auroc, quantile_thresholds
from anomaly.progress import progress
from anomaly.training import train

log = logging.getLogger(__name__)

#: Above this many map pixels in a test set, maps are kept at half resolution for the
#: pixel metrics (memory), and the output says so.
MAX_METRIC_PIXELS = 600_000_000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate(
    category_dir: str | Path,
    detector_name: str,
    *,
    params: dict[str, Any] | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    limit_train: int | None = None,
    extra: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a detector on one MVTec-layout category.

    Args:
        category_dir: Folder with ``train/good`` and ``test/``.
        detector_name: Registry name.
        params: Detector hyper-parameters.
        holdout_fraction: Fraction of ``train/good`` held out to calibrate thresholds.
        seed: Seed of the hold-out split and of any sub-sampling.
        limit_train: Use at most this many training images (seeded choice), if set.
        extra: Optional hook ``extra(report, state)`` adding figures (the state holds
            ``scores``, ``labels``, ``types``, ``model``).

    Returns:
        The JSON-able report (see README for the keys).
    """
    category = MVTecCategory(category_dir)
    train_paths = category.train_good()
    if limit_train and len(train_paths) > limit_train:
        pick = np.sort(np.random.default_rng(seed).choice(len(train_paths), limit_train, replace=False))
        train_paths = [train_paths[i] for i in pick]
    samples = category.test_samples()

    start = time.perf_counter()
    model = train(detector_name, train_paths, params=params, holdout_fraction=holdout_fraction, seed=seed,
                  source=str(category.root))
    train_seconds = time.perf_counter() - start
    fit_rss = peak_rss_mb()
    detector = model.detector

    backbone_forward = _backbone_timer(detector)
    scores, labels, types = [], [], []
    stored_maps, masks_available = [], True
    e2e_ms, decode_ms, backbone_ms = [], [], []
    total_pixels = 0
    for sample in progress(samples, desc=f"eval {category.name}"):
        data = sample.path.read_bytes()
        t0 = time.perf_counter()
        image = decode_image(data, label=str(sample.path))
        t1 = time.perf_counter()
        result = detector.score([data])
        t2 = time.perf_counter()
        decode_ms.append((t1 - t0) * 1e3)
        e2e_ms.append((t2 - t1) * 1e3)
        if backbone_forward is not None:
            backbone_ms.append(backbone_forward(image))
        amap = result.maps[0]
        scores.append(float(result.scores[0]))
        labels.append(sample.label)
        types.append(sample.defect_type)
        mask = sample.read_mask(amap.shape)
        if mask is None:
            masks_available = False
        total_pixels += amap.size
        stored_maps.append((amap.astype(np.float16), None if mask is None else np.packbits(mask), amap.shape))
    score_rss = peak_rss_mb()

    report: dict[str, Any] = {
        "dataset": str(category.root),
        "category": category.name,
        "detector": detector_name,
        "params": detector.get_params(),
        "backbone": detector.backbone_info(),
        "n_train": len(train_paths),
        "n_fit": model.training.extra["n_fit"],
        "n_holdout": model.training.extra["n_holdout"],
        "n_test": len(samples),
        "n_test_defective": int(np.sum(labels)),
        "image_auroc": image_auroc(labels, scores),
        "f1_max_image": f1_max(labels, scores)[0],
        "fit_seconds": round(model.fit_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "latency_ms": {"p50": _pct(e2e_ms, 50), "p90": _pct(e2e_ms, 90)},
        "decode_ms_p50": _pct(decode_ms, 50),
        "backbone_ms_p50": _pct(backbone_ms, 50) if backbone_ms else None,
        "peak_rss_mb": round(score_rss, 1),
        "fit_peak_rss_mb": round(fit_rss, 1),
    }
    if backbone_ms:
        floor = report["decode_ms_p50"] + report["backbone_ms_p50"]
        report["latency_over_floor"] = round(report["latency_ms"]["p50"] / floor, 3)
    report["per_defect_type"] = {
        t: {"n": int(sum(1 for x in types if x == t)), "image_auroc": image_auroc(
            [l for l, x in zip(labels, types) if x in (t, "good")],
            [s for s, x in zip(scores, types) if x in (t, "good")])}
        for t in sorted(set(types) - {"good"})
    }
    report.update(_pixel_report(stored_maps, masks_available, total_pixels))
    if extra is not None:
        extra(report, {"scores": np.asarray(scores), "labels": np.asarray(labels), "types": types, "model": model,
                       "maps": stored_maps})
    return report


def _pixel_report(stored, masks_available: bool, total_pixels: int) -> dict[str, Any]:
    if not masks_available or not any(m is not None and np.any(m) for _, m, _ in stored):
        return {"pixel_auroc": None, "aupro": None, "pixel_metrics_note": "no ground-truth masks"}
    step = 2 if total_pixels > MAX_METRIC_PIXELS else 1
    maps = [np.asarray(a, dtype=np.float32)[::step, ::step] for a, _, _ in stored]
    thresholds = quantile_thresholds(maps)
    acc = PixelMetrics(thresholds)
    for amap, (_, packed, shape) in zip(maps, stored):
        mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)[::step, ::step]
        acc.add(amap, mask)
    out = {"pixel_auroc": acc.auroc(), "aupro": acc.aupro()}
    out["pixel_metrics_note"] = (
        f"binned over {len(thresholds)} thresholds at the images' own resolution"
        + (" (every 2nd pixel: set too large)" if step > 1 else "")
    )
    return out


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _backbone_timer(detector) -> Callable[[np.ndarray], float] | None:
    """A function timing the detector's backbone forward on one prepared image, or None."""
    from anomaly.detectors.deep import BackboneDetector

    if not isinstance(detector, BackboneDetector):
        return None
    from anomaly.features.preprocess import prepare_batch

    extractor, geometry = detector.extractor, detector.geometry

    def forward(image: np.ndarray) -> float:
        batch, _ = prepare_batch([image], geometry, extractor.mean, extractor.std)
        t0 = time.perf_counter()
        extractor(batch)
        return (time.perf_counter() - t0) * 1e3

    return forward
