"""``anomaly eval``: fit on ``train/good``, score every test image alone, measure.

Timing is interleaved per test image so that machine noise hits every figure alike:
for each image, (1) decoding its file bytes alone, (2) the end-to-end call on the stored
bundle as the service makes it (:func:`anomaly.inspect.inspect`), timed in two parts:
``latency_ms`` from file bytes to score and full-resolution map, ``inspect_latency_ms`` on to
the verdict, regions and grading, (3) the backbone's own forward on that image's prepared
input, when the detector has a backbone. ``peak_rss_mb`` is the process's peak resident
memory over fit and scoring.

Thresholds are judged as a line would meet them: the model is calibrated on
``train/good`` alone (cross-fitting, :mod:`anomaly.calibration`), then ``good_only``
reports, at those thresholds, the false-reject rate on ``test/good`` with its 95 %
Clopper-Pearson interval, the recall on defective images (score >= ``t_ng``), the recall
of "flagged" (>= ``t_review``) and the REVIEW fractions; ``oracle`` gives the same at the
F1-optimal threshold chosen on the test set itself, for comparison only. ``regions`` gives,
at the pixel threshold with the bundle's area filter, the share of ground-truth defect
regions (8-connected components of the masks) that a reported region overlaps, and the
reported regions per good image (all false). ``per_defect_type`` repeats the image
figures per defect folder.

A test part that the detector cannot align to its template
(:class:`~anomaly.errors.AlignmentError`, the classical models) gets the service's verdict
``ALIGNMENT_FAILED``, one whose size or colour the model does not accept
(:class:`~anomaly.accepted_input.InputGeometryError`) ``INPUT_REFUSED``: it is rejected, so it ranks above every scored image in the image
figures and counts as rejected at the thresholds; it has no map, so the pixel and region
figures are over the images scored. ``n_refused`` and ``refused`` (image, defect type,
error) list them. ``image_scores`` holds every test image's raw score (``None`` where
refused), so that two runs can be compared image by image.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from anomaly.accepted_input import InputGeometryError
from anomaly.bundle import load_bundle
from anomaly.calibration import Calibration
from anomaly.datasets import MVTecCategory
from anomaly.errors import AlignmentError, AnomalyError
from anomaly.grading import min_area_px
from anomaly.imageio import decode_image
from anomaly.inspect import Inspection, accepted, judge
from anomaly.metrics import PixelMetrics, f1_max, image_auroc, quantile_thresholds, rank_refused_above
from anomaly.progress import progress
from anomaly.regions import region_mask
from anomaly.store import ModelStore
from anomaly.tails import clopper_pearson
from anomaly.training import TrainingOptions, train_into

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
    options: TrainingOptions | None = None,
) -> dict[str, Any]:
    """Evaluate a detector on one MVTec-layout category, as the line would run it.

    The model is trained with :func:`anomaly.training.train_into` into a scratch store,
    loaded back from its bundle, and every test image goes through
    :func:`anomaly.inspect.inspect`: the figures are those of the stored model and of the
    service's verdict path.

    Args:
        category_dir: Folder with ``train/good`` and ``test/``.
        detector_name: Registry name.
        params: Detector hyper-parameters.
        options: Training and calibration options (``max_images`` sub-samples ``train/good``
            with the seed).

    Returns:
        The JSON-able report: sizes, parameters, image and pixel metrics, timings, the
        thresholds, the figures at the good-only and the oracle thresholds, per defect
        type, regions and the detection estimate (see docs/calibration.md).
    """
    options = options or TrainingOptions()
    category = MVTecCategory(category_dir)
    samples = category.test_samples()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anomaly-eval-") as scratch:
        trained = train_into(ModelStore(scratch), "eval", detector_name, category.train_good(), options,
                             params=params, source=str(category.root))
        train_seconds = time.perf_counter() - start
        bundle = load_bundle(trained.path)
    model = trained.model
    fit_rss = peak_rss_mb()
    detector = bundle.detector
    cal = bundle.calibration
    region_rows: list[dict[str, Any]] = []
    graded: list[str] = []

    backbone_forward = _backbone_timer(detector)
    scores: list[float | None] = []
    labels, types, scored_types = [], [], []
    refused: list[dict[str, Any]] = []
    stored_maps, masks_available = [], True
    e2e_ms, inspect_ms, decode_ms, backbone_ms = [], [], [], []
    total_pixels = 0

    def timed_inspect(data: bytes) -> Inspection | AnomalyError:
        """The line's call, timed in two parts: file bytes to score and map (``e2e_ms``), then to
        verdict, regions and grading (``inspect_ms``, the whole); a refused part comes back as the error."""
        t0 = time.perf_counter()
        try:
            arrays = accepted(bundle, [data])
            result = detector.score(arrays)
            e2e_ms.append((time.perf_counter() - t0) * 1e3)
            return judge(bundle, arrays, result)[0]
        except (AlignmentError, InputGeometryError) as exc:  # the service's refusals: rejected
            e2e_ms.append((time.perf_counter() - t0) * 1e3)
            return exc
        finally:
            inspect_ms.append((time.perf_counter() - t0) * 1e3)

    for k, sample in enumerate(progress(samples, desc=f"eval {category.name}")):
        data = sample.path.read_bytes()
        # The floor (decode + backbone) and the end-to-end call are timed in alternating
        # order: whichever runs second finds the CPU's threads and caches warm, so a fixed
        # order would favour one of them.
        if k % 2 and backbone_forward is not None:
            result = timed_inspect(data)
        t0 = time.perf_counter()
        image = decode_image(data, label=str(sample.path))
        decode_ms.append((time.perf_counter() - t0) * 1e3)
        if backbone_forward is not None:
            backbone_ms.append(backbone_forward(image))
        if not (k % 2 and backbone_forward is not None):
            result = timed_inspect(data)
        labels.append(sample.label)
        types.append(sample.defect_type)
        if isinstance(result, AnomalyError):
            scores.append(None)
            refused.append({"image": str(sample.path), "defect_type": sample.defect_type, "error": str(result),
                            "code": result.code})
            if cal.pixel_threshold is not None:
                graded.append("ALIGNMENT_FAILED" if isinstance(result, AlignmentError) else "INPUT_REFUSED")
            continue
        amap = result.map
        scores.append(result.score)
        scored_types.append(sample.defect_type)
        mask = sample.read_mask(amap.shape)
        if mask is None:
            masks_available = False
        total_pixels += amap.size
        if cal.pixel_threshold is not None:
            graded.append(result.verdict)
            region_rows.append(_region_row(amap, cal.pixel_threshold, min_area_px(cal.grading, cal.pixel_size_mm),
                                           len(result.regions), mask))
        stored_maps.append((amap.astype(np.float16), None if mask is None else np.packbits(mask), amap.shape))
    score_rss = peak_rss_mb()
    image_scores = [{"image": str(sample.path.relative_to(category.root)), "score": score}
                    for sample, score in zip(samples, scores)]
    # Refused parts rank above every scored image and every threshold (rejected).
    scores = rank_refused_above(scores, float(cal.t_ng), float(cal.t_review))

    report: dict[str, Any] = {
        "dataset": str(category.root),
        "category": category.name,
        "detector": detector_name,
        "params": detector.get_params(),
        "backbone": detector.backbone_info(),
        "n_train": model.training.n_images,
        "n_fit": model.training.extra["n_fit"],
        "n_folds": model.training.extra["n_folds"],
        "limit_train": options.max_images,
        "options": options.to_dict(),
        "n_test": len(samples),
        "n_test_defective": int(np.sum(labels)),
        "n_refused": len(refused),
        "refused": refused,
        "image_auroc": image_auroc(labels, scores),
        "f1_max_image": f1_max(labels, scores)[0],
        "fit_seconds": round(model.fit_seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "calibration_seconds": round(model.calibration_seconds, 3),
        "detection_seconds": round(model.detection_seconds, 3),
        "latency_ms": {"p50": _pct(e2e_ms, 50), "p90": _pct(e2e_ms, 90)},
        "inspect_latency_ms": {"p50": _pct(inspect_ms, 50), "p90": _pct(inspect_ms, 90)},
        "decode_ms_p50": _pct(decode_ms, 50),
        "backbone_ms_p50": _pct(backbone_ms, 50) if backbone_ms else None,
        "peak_rss_mb": round(score_rss, 1),
        "fit_peak_rss_mb": round(fit_rss, 1),
    }
    if backbone_ms:
        floor = report["decode_ms_p50"] + report["backbone_ms_p50"]
        report["latency_over_floor"] = round(report["latency_ms"]["p50"] / floor, 3)
    figures, per_type = threshold_report(np.asarray(scores), np.asarray(labels), types, cal, graded)
    report.update(figures)
    report["per_defect_type"] = {
        t: {"n": int(sum(1 for x in types if x == t)), "image_auroc": image_auroc(
            [l for l, x in zip(labels, types) if x in (t, "good")],
            [s for s, x in zip(scores, types) if x in (t, "good")]),
            **per_type.get(t, {})}
        for t in sorted(set(types) - {"good"})
    }
    report["regions"] = region_report(region_rows, scored_types, masks_available) if region_rows else None
    report.update(_pixel_report(stored_maps, masks_available, total_pixels))
    report["image_scores"] = image_scores
    return report


def _rate(hits: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(hits, n) if n else (None, None)
    return {"rate": hits / n if n else None, "k": int(hits), "n": int(n), "ci95": [lo, hi]}


def threshold_report(scores: np.ndarray, labels: np.ndarray, types: list[str], cal: Calibration,
                     graded: list[str] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Figures at the good-only thresholds and at the F1-optimal oracle threshold.

    Args:
        scores: ``(N,)`` test scores.
        labels: ``(N,)`` 0 good / 1 defective.
        types: Defect type per image (``"good"`` for good ones).
        cal: The calibration (``t_ng``, ``t_review``, ``target_frr``, ``expected``).
        graded: Optional final verdicts after region grading, one per image (``NG``,
            ``ALIGNMENT_FAILED`` and ``INPUT_REFUSED`` count as rejected).

    Returns:
        ``({"thresholds", "detection_estimate", "good_only", "oracle"}, {defect type:
        {"recall", "flagged_recall", "recall_oracle"}})``.
    """
    good, bad = labels == 0, labels == 1
    t_ng, t_review = float(cal.t_ng), float(cal.t_review)
    ng, flagged = scores >= t_ng, scores >= t_review
    review = flagged & ~ng
    out: dict[str, Any] = {"thresholds": {k: getattr(cal, k) for k in (
        "t_review", "t_ng", "pixel_threshold", "target_frr", "review_rate", "pixel_rate", "n_good", "n_folds")}}
    out["thresholds"]["expected"] = cal.expected
    out["thresholds"]["method"] = cal.method
    det = cal.detection or {}
    out["detection_estimate"] = {"summary": det.get("summary"), "min_size_90": det.get("min_size_90"),
                                 "all_kinds": (det.get("rates") or {}).get("all")} if det else None
    good_only = {
        "frr_test_good": _rate(int(np.sum(ng & good)), int(good.sum())),
        "recall": _rate(int(np.sum(ng & bad)), int(bad.sum())),
        "flagged_recall": _rate(int(np.sum(flagged & bad)), int(bad.sum())),
        "review_fraction": float(review.mean()) if len(review) else None,
        "review_fraction_good": float(review[good].mean()) if good.any() else None,
        "review_fraction_defective": float(review[bad].mean()) if bad.any() else None,
        "good_flagged": _rate(int(np.sum(flagged & good)), int(good.sum())),
    }
    if graded is not None and len(graded) == len(scores):
        g = np.asarray(graded)
        rejected = np.isin(g, ("NG", "ALIGNMENT_FAILED", "INPUT_REFUSED"))
        good_only["graded"] = {
            "frr_test_good": _rate(int(np.sum(rejected & good)), int(good.sum())),
            "recall": _rate(int(np.sum(rejected & bad)), int(bad.sum())),
            "review_fraction": float(np.mean(g == "REVIEW")),
        }
    out["good_only"] = good_only
    f1, t_oracle = f1_max(labels, scores) if good.any() and bad.any() else (None, None)
    if t_oracle is not None:
        hit = scores >= t_oracle
        out["oracle"] = {"f1": f1, "threshold": t_oracle,
                         "frr_test_good": _rate(int(np.sum(hit & good)), int(good.sum())),
                         "recall": _rate(int(np.sum(hit & bad)), int(bad.sum()))}
    else:
        out["oracle"] = None
    per_type = {}
    for t in sorted(set(types) - {"good"}):
        sel = np.array([x == t for x in types])
        per_type[t] = {
            "recall": float(ng[sel].mean()),
            "flagged_recall": float(flagged[sel].mean()),
            "recall_oracle": float((scores[sel] >= t_oracle).mean()) if t_oracle is not None else None,
        }
    return out, per_type


def _region_row(amap: np.ndarray, pixel: float, min_area: float, n_regions: int,
                mask: np.ndarray | None) -> dict[str, Any]:
    """Per image: regions reported, and with a mask: GT regions hit and regions missing the GT."""
    row: dict[str, Any] = {"n_regions": n_regions}
    if mask is None:
        return row
    reported = region_mask(amap, pixel, min_area=min_area)
    n_gt, gt = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    hit = np.unique(gt[reported & mask]) if mask.any() else np.zeros(0)
    row["gt_regions"] = int(n_gt - 1)
    row["gt_hit"] = int(np.sum(hit > 0))
    n_rep, rep = cv2.connectedComponents(reported.astype(np.uint8), connectivity=8)
    on_gt = np.unique(rep[reported & mask]) if mask.any() else np.zeros(0)
    row["false_regions"] = int(n_rep - 1 - np.sum(on_gt > 0))
    return row


def region_report(rows: list[dict[str, Any]], types: list[str], masks_available: bool) -> dict[str, Any]:
    """Region figures over a test set (see the module docstring)."""
    good = [r for r, t in zip(rows, types) if t == "good"]
    bad = [r for r, t in zip(rows, types) if t != "good" and "gt_regions" in r]
    out: dict[str, Any] = {
        "false_regions_per_good_image": float(np.mean([r["n_regions"] for r in good])) if good else None,
        "good_images_with_region": float(np.mean([r["n_regions"] > 0 for r in good])) if good else None,
    }
    if bad and masks_available:
        n_gt = sum(r["gt_regions"] for r in bad)
        out["gt_regions"] = int(n_gt)
        out["gt_regions_overlapped"] = (sum(r["gt_hit"] for r in bad) / n_gt) if n_gt else None
        out["false_regions_per_defective_image"] = float(np.mean([r["false_regions"] for r in bad]))
    return out


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

    extractor, geometry, tiling = detector.extractor, detector.geometry, detector.tiling

    def forward(image: np.ndarray) -> float:
        inputs = [image] if tiling is None else tiling.cut(image)[0]  # a tiled frame: all its tiles
        batch, _ = prepare_batch(inputs, geometry, extractor.mean, extractor.std)
        t0 = time.perf_counter()
        extractor(batch)
        return (time.perf_counter() - t0) * 1e3

    return forward
