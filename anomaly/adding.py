"""More good images for an onboarded model: a new version without recomputing what it has.

``anomaly onboard MORE_DIR --name NAME --add`` (and :func:`add_goods`): the stored version
keeps its configuration (onboarding's choice) and learns the new goods through
:meth:`~anomaly.detectors.base.Detector.extend` (PatchCore: the banks selected again from the
stored banks and the new patches; PaDiM: its sums grown), so the first goods are neither
needed nor featurised again. Models that cannot extend say so (onboard again with all goods).

The thresholds need scores of goods a model had not seen. The stored cross-fitted scores
of the first goods are kept, and the new goods are scored by the stored version before it
learns them: held-out scores by construction. The model that learns them scores goods
no higher, so the false-reject rate is if anything lower than expected; the record says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Sequence

import numpy as np

from anomaly.accepted_input import AcceptedInput
from anomaly.bundle import TrainingData, fingerprint_images, load_bundle
from anomaly.calibration import calibrate
from anomaly.errors import AlignmentError, DatasetError, InvalidParameterError
from anomaly.folds import score_or_refuse
from anomaly.goods import names_of, read_goods
from anomaly.imageio import ImageLike
from anomaly.onboarding import PROVISIONAL_BELOW, Candidate, Onboarded
from anomaly.store import ModelStore
from anomaly.training import DETECTION_BASE_IMAGES, TrainedModel, store_model

log = logging.getLogger(__name__)


def add_goods(
    store: ModelStore,
    name: str,
    images: Sequence[ImageLike],
    *,
    names: Sequence[str] | None = None,
    version: int | None = None,
    seed: int = 0,
    promote: bool | None = None,
    notes: dict[str, Any] | None = None,
) -> Onboarded:
    """Teach a stored version more good images and store the result as a new version.

    Args:
        store: The model store.
        name: Model name.
        images: The new good images (paths, bytes or arrays), at least 2.
        names: Their names for messages.
        version: The version to start from (default: production, else the latest).
        seed: Seed of the synthetic defects of the detection estimate and the report.
        promote: As :func:`anomaly.training.store_model`.
        notes: More facts for the manifest's notes.

    Raises:
        ModelNotFoundError: no such model or version.
        DatasetError: fewer than 2 new goods, or unreadable ones (named).
        InputGeometryError: a new good the model does not accept (its size or colour differ).
        InvalidParameterError: the model cannot add goods, or stores no good-score sample.
    """
    from anomaly import onboarding_report
    from anomaly.detection_estimate import estimate_detection

    if len(images) < 2:
        raise DatasetError(f"adding goods needs at least 2 new good images, got {len(images)}")
    start = time.perf_counter()
    available = store.versions(name) or [None]  # none: store.path below says there is no such model
    source_version = version or store.production(name) or available[-1]
    bundle = load_bundle(store.path(name, source_version))
    old = bundle.calibration
    if len(old.good_scores) < 2 or old.target_frr is None:
        raise InvalidParameterError(f"{name} version {source_version} stores no good-score sample to add to: "
                                    "onboard again with every good")
    names = list(names) if names else names_of(images)
    goods = read_goods(images, names)
    geometry = (bundle.manifest.get("training_data") or {}).get("accepted_input")
    if geometry:  # as anomaly.inspect.accepted checks a part, each new good named
        check = AcceptedInput.from_dict(geometry)
        for label, image in zip(names, goods):
            check.check(image, label=label)
    detector = bundle.detector
    # Held out by construction: the stored version has not seen the new goods.
    scores, maps = score_or_refuse(detector, goods)
    kept = [i for i, s in enumerate(scores) if s is not None]
    if len(kept) < len(goods):
        log.warning("%d of %d added goods could not be aligned by version %d", len(goods) - len(kept), len(goods),
                    source_version)
    if not kept:
        raise AlignmentError(f"none of the {len(goods)} added goods could be aligned by {name} version "
                             f"{source_version}")
    detector.extend(goods)
    fit_seconds = time.perf_counter() - start

    start_cal = time.perf_counter()
    new_scores = [float(scores[i]) for i in kept]
    new_maxima = [float(maps[i].max()) for i in kept]
    values = np.concatenate([maps[i].ravel()[:: max(1, maps[i].size // 2000)] for i in kept])
    maxima = (list(old.good_map_maxima) + new_maxima) if old.good_map_maxima else None
    calibration = calibrate(list(old.good_scores) + new_scores, target_frr=old.target_frr,
                            review_rate=old.review_rate, good_map_maxima=maxima, good_map_values=values,
                            pixel_rate=old.pixel_rate, n_folds=old.n_folds, split_seed=old.split_seed)
    calibration = calibration.replace(
        method=(f"{old.n_good} cross-fitted good scores from version {source_version} and {len(kept)} scores of "
                f"the added goods by version {source_version}, which had not seen them; " + calibration.method),
        pixel_size_mm=old.pixel_size_mm, grading=old.grading, alignment_refused=old.alignment_refused)
    calibration_seconds = time.perf_counter() - start_cal

    start_det = time.perf_counter()
    if old.detection is not None:
        pick = np.sort(np.random.default_rng(seed).choice(len(goods), min(len(goods), DETECTION_BASE_IMAGES),
                                                          replace=False))
        calibration = calibration.replace(detection=estimate_detection(
            detector, [goods[i] for i in pick], calibration, random_state=seed,
            pixel_size_mm=calibration.pixel_size_mm))
    detection_seconds = time.perf_counter() - start_det

    before = bundle.manifest.get("training_data") or {}
    new_fingerprint = fingerprint_images(goods)
    n_total = int(before.get("n_images") or 0) + len(goods)
    training = TrainingData(
        fingerprint=hashlib.sha256(f"{before.get('fingerprint', '')}+{new_fingerprint}".encode()).hexdigest(),
        n_images=n_total, source="onboarding --add",
        extra={k: v for k, v in before.items() if k not in ("fingerprint", "n_images", "source")}
        | {"added": {"from_version": source_version, "n_added": len(goods), "fingerprint_added": new_fingerprint,
                     "fingerprint_before": before.get("fingerprint")}},
    )
    order = sorted(kept, key=lambda i: scores[i])
    examples = {i: (float(scores[i]), maps[i]) for i in dict.fromkeys([order[0], order[len(order) // 2], order[-1]])}
    model = TrainedModel(detector, calibration, training, fit_seconds, calibration_seconds, detection_seconds,
                         [], examples)

    previous = dict(((bundle.manifest.get("notes") or {}).get("onboarding")) or {})
    added = {"from_version": source_version, "n_added": len(goods), "n_refused": len(goods) - len(kept),
             "n_total": n_total, "seconds": round(time.perf_counter() - start, 1),
             "method": "the stored model extended with the new goods (no refit of the first ones); thresholds from "
                       "the stored cross-fitted scores and the new goods' scores by the stored version"}
    record = {**previous, "added": [*previous.get("added", []), added], "provisional": n_total < PROVISIONAL_BELOW}
    if record["provisional"]:
        record["note"] = f"{n_total} goods give wide intervals on the false-reject rate; add more goods"
    else:
        record.pop("note", None)
    record.setdefault("winner", bundle.manifest["detector"])
    record.setdefault("why", f"{bundle.manifest['detector']} as stored in version {source_version}")
    record.setdefault("candidates", [])
    record.setdefault("survey", {"n": n_total, "notes": []})
    files = onboarding_report.build(record, calibration, detector, goods, examples, seed=seed + 2000, name=name,
                                    names=names)
    record["report"] = {"files": sorted(files)}
    stored = store_model(store, name, model, {**(notes or {}), "onboarding": record}, promote=promote,
                         extra_files=files)
    log.info("%s: version %d = version %d + %d goods (%d in all)", name, stored.version, source_version, len(goods),
             n_total)
    winner = Candidate(str(record["winner"]), bundle.manifest["detector"], dict(bundle.manifest.get("params") or {}))
    return Onboarded(stored, winner, record)
