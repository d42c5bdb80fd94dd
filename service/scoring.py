"""Judge parts and record them: the one path shared by the JSON API and the inspect page.

All or nothing: images are decoded and judged first; only then are archive files written
and the records committed in one transaction. If anything fails before the commit,
nothing is kept (archive files written so far are removed) and no verdict is answered; a
verdict that is answered has been recorded.

A part that cannot be aligned to its template (:class:`anomaly.errors.AlignmentError`)
is a judgement too: it is recorded with the verdict ``ALIGNMENT_FAILED``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
from flask import current_app
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from anomaly.detectors.base import batch_or_each
from anomaly.errors import AlignmentError
from anomaly.imageio import decode_image, encode_png
from service.archive import Archive, map_to_png
from service.auth import current_principal
from service.db import Database, IdempotentRequest, InspectionRecord, iso, new_id, utcnow
from service.errors import (BadRequestError, DeadlineExceededError, IdempotencyKeyReusedError, ServiceBusyError,
                            StorageError)
from service.registry import LoadedModel, ModelRegistry

log = logging.getLogger(__name__)

ALIGNMENT_FAILED = "ALIGNMENT_FAILED"
MAX_PART_ID = 128


@dataclass
class Part:
    """One part to judge: the encoded image and the line's id for it."""

    data: bytes
    part_id: str | None = None


@dataclass
class Judgement:
    """What scoring one part gave, before it is recorded."""

    image: np.ndarray
    verdict: str
    score: float | None = None
    calibrated_score: float | None = None
    amap: np.ndarray | None = None
    map_stats: dict[str, Any] | None = None
    regions: list[dict[str, Any]] | None = None
    score_verdict: str | None = None
    reasons: list[str] | None = None
    error: AlignmentError | None = None


def check_part_id(part_id: str | None) -> str | None:
    """A part id is optional, at most 128 printable characters."""
    if part_id is None or part_id == "":
        return None
    if len(part_id) > MAX_PART_ID or not part_id.isprintable():
        raise BadRequestError(f"part_id must be at most {MAX_PART_ID} printable characters, got {part_id[:40]!r}...")
    return part_id


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays inside dicts and lists as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def map_scale(model: LoadedModel, amap: np.ndarray) -> tuple[float, float]:
    """The fixed colour scale of the model (good-map level to twice the pixel threshold)."""
    cal = model.bundle.calibration
    pixel = cal.get("pixel_threshold") or float(np.percentile(amap, 99))
    return float(cal.get("map_floor") or 0.0), 2.0 * float(pixel)


def _judge(model: LoadedModel, images: list[np.ndarray]) -> list[Judgement]:
    from anomaly.inspect import inspect

    # The parts of the batch that could not be aligned, told apart from the others.
    results = batch_or_each(lambda batch: inspect(model.bundle, batch), images)
    out = []
    for image, result in zip(images, results):
        if isinstance(result, AlignmentError):
            out.append(Judgement(image, ALIGNMENT_FAILED, error=result))
        elif result.verdict == ALIGNMENT_FAILED:
            out.append(Judgement(image, ALIGNMENT_FAILED, amap=result.map, map_stats=jsonable(result.map_stats),
                                 regions=jsonable(result.regions or [])))
        else:
            out.append(Judgement(image, result.verdict, float(result.score), float(result.calibrated_score),
                                 result.map, jsonable(result.map_stats), jsonable(result.regions or []),
                                 getattr(result, "score_verdict", None),
                                 jsonable(list(getattr(result, "reasons", None) or []))))
    return out


#: An ``Idempotency-Key``: printable ASCII without spaces, as the IETF draft's examples (UUIDs, ULIDs).
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,128}$")


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` and a hash of the request it came with.

    Attributes:
        key: The key as sent.
        request_sha256: sha256 over the model, version, options and every part's bytes and id,
            so that a key reused for another request is refused instead of answered wrongly.
    """

    key: str
    request_sha256: str

    @classmethod
    def of(cls, key: str, name: str, version: int | None, parts: Sequence[Part], source: str,
           return_map: bool, return_overlay: bool) -> Idempotency:
        """Check the key (400 if malformed) and hash the request."""
        if not _IDEMPOTENCY_KEY.match(key):
            raise BadRequestError("Idempotency-Key must be 1 to 128 printable ASCII characters without spaces")
        digest = hashlib.sha256(json.dumps([name, version, source, return_map, return_overlay]).encode())
        for part in parts:
            digest.update(hashlib.sha256(part.data).digest())
            digest.update(json.dumps(part.part_id).encode())
        return cls(key, digest.hexdigest())


def replayed(db: Database, client: str, idempotency: Idempotency) -> dict[str, Any] | None:
    """The stored answer of the request this client sent before with this key, or None.

    Raises:
        IdempotencyKeyReusedError: the key came before with another request (409).
    """
    with db.session() as session:
        row = session.scalar(sa.select(IdempotentRequest).where(IdempotentRequest.client == client,
                                                                 IdempotentRequest.key == idempotency.key))
        if row is None:
            return None
        if row.request_sha256 != idempotency.request_sha256:
            raise IdempotencyKeyReusedError(f"Idempotency-Key {idempotency.key!r} was used before for another "
                                            "request; send a new key for a new part")
        answer = dict(row.answer)
    answer["replayed"] = True
    return answer


@contextlib.contextmanager
def scoring_slot(app: Any) -> Iterator[None]:
    """Hold one of the worker's scoring slots (``SCORING_SLOTS``) while parts are decoded and judged.

    Raises:
        ServiceBusyError: none came free within ``SCORING_WAIT_SECONDS`` (503 with Retry-After).
    """
    slots = app.extensions["anomaly_scoring_slots"]
    wait = float(app.config["SCORING_WAIT_SECONDS"])
    if not slots.acquire(timeout=wait):
        raise ServiceBusyError(f"this worker judged other parts for the last {wait:g} s; retry (Retry-After)")
    try:
        yield
    finally:
        slots.release()


def score_parts(name: str, version: int | None, parts: Sequence[Part], *, source: str,
                return_map: bool = False, return_overlay: bool = False,
                idempotency_key: str | None = None) -> dict[str, Any]:
    """Judge parts with a model, record every judgement, and build the answer.

    Args:
        name: Model name.
        version: Model version; None for the production version.
        parts: The parts, in order.
        source: ``api``, ``batch`` or ``page`` (recorded).
        return_map: Put each anomaly map in the answer (8-bit PNG, base64, with its scale).
        return_overlay: Put each heat-map overlay in the answer (PNG, base64).
        idempotency_key: The client's ``Idempotency-Key``: a request that repeats one already
            answered gets the stored answer (``"replayed": true``; verdicts, regions and ids, no
            maps or timings) instead of a second record (see :func:`replayed`).

    Returns:
        ``{"model": ..., "results": [...], "timings_ms": ..., "batch_id": ...}``.

    Raises:
        ModelNotFoundError, ModelNotReadyError: no such model or version / none in production.
        IdempotencyKeyReusedError: the idempotency key came before with another request (409).
        ServiceBusyError: no scoring slot came free in time (503, Retry-After).
        DeadlineExceededError: judging ended past ``SCORING_DEADLINE_SECONDS`` after the
            request came; nothing is stored (503).
        InvalidImageError, ImageTooLargeError: a part's image (400, 413); nothing is stored.
        StorageError: the records could not be committed (503); nothing is stored.
    """
    from anomaly.inspect import render_overlay

    app = current_app
    registry: ModelRegistry = app.extensions["anomaly_registry"]
    db: Database = app.extensions["anomaly_db"]
    archive: Archive = app.extensions["anomaly_archive"]
    metrics = app.extensions["anomaly_metrics"]
    principal = current_principal()
    start = time.perf_counter()
    idempotency = None
    if idempotency_key is not None:
        idempotency = Idempotency.of(idempotency_key, name, version, parts, source, return_map, return_overlay)
        prior = replayed(db, principal.name, idempotency)
        if prior is not None:
            return prior

    model = registry.get(name, version)
    with scoring_slot(app):
        slot_start = time.perf_counter()
        images = []
        for i, part in enumerate(parts):
            label = "image" if len(parts) == 1 else f"image {i}"
            images.append(decode_image(part.data, max_pixels=int(app.config["MAX_PIXELS"]),
                                       max_bytes=int(app.config["MAX_IMAGE_BYTES"]), label=label))
        decoded = time.perf_counter()
        judgements = _judge(model, images)
        judged = time.perf_counter()
    deadline = float(app.config["SCORING_DEADLINE_SECONDS"])
    if judged - start > deadline:  # the client has most likely given up: no verdict on record it never got
        raise DeadlineExceededError(f"judging took {judged - start:.1f} s, more than the {deadline:g} s deadline; "
                                    "nothing was recorded")
    decode_ms = (decoded - slot_start) * 1000 / len(parts)
    inference_ms = (judged - decoded) * 1000 / len(parts)

    batch_id = new_id() if source == "batch" else None
    created = utcnow()
    records, extras = [], []
    for part, judgement in zip(parts, judgements):
        record_id = new_id()
        overlay_png = map_png = None
        scale = None
        if judgement.amap is not None:
            scale = map_scale(model, judgement.amap)
            if return_map:
                map_png = map_to_png(judgement.amap, *scale)
            if return_overlay and judgement.score is not None:
                from anomaly.inspect import Inspection

                shown = Inspection(judgement.verdict, judgement.score, judgement.calibrated_score or 0.0,
                                   judgement.amap, judgement.map_stats or {}, judgement.regions or [])
                overlay_png = encode_png(render_overlay(model.bundle, judgement.image, shown))
        stats = dict(judgement.map_stats or {})
        if scale is not None:
            stats["vmin"], stats["vmax"] = scale
            stats["pixel_threshold"] = model.thresholds["pixel_threshold"]
        records.append(InspectionRecord(
            id=record_id, created_at=created, model_name=model.name, model_version=model.version,
            detector=model.detector, part_id=part.part_id, verdict=judgement.verdict,
            score_verdict=judgement.score_verdict, reasons=judgement.reasons, score=judgement.score,
            calibrated_score=judgement.calibrated_score, t_review=model.thresholds["t_review"],
            t_ng=model.thresholds["t_ng"], error_code=judgement.error.code if judgement.error else None,
            message=str(judgement.error) if judgement.error else None, regions=judgement.regions,
            map_stats=stats or None, image_sha256=hashlib.sha256(part.data).hexdigest(),
            image_width=int(judgement.image.shape[1]), image_height=int(judgement.image.shape[0]),
            decode_ms=round(decode_ms, 3), inference_ms=round(inference_ms, 3), source=source,
            batch_id=batch_id, client=principal.name,
        ))
        extras.append((part, judgement, map_png, overlay_png))

    stored_at = time.perf_counter()
    written: list[str] = []
    try:
        for record, (part, judgement, map_png, overlay_png) in zip(records, extras):
            if archive.wants(judgement.verdict):
                record.archive_path = archive.write(record.id, model.name, created, part.data, judgement.amap)
                written.append(record.archive_path)
        rows = [{c.key: getattr(r, c.key) for c in InspectionRecord.__table__.columns} for r in records]
        with db.session() as session:  # a Core insert: the ORM's unit of work costs more than the row
            session.execute(sa.insert(InspectionRecord), rows)
            if idempotency is not None:  # in the same transaction: a retry finds both or neither
                stored = {"model": {"name": model.name, "version": model.version, "detector": model.detector},
                          "batch_id": batch_id, "results": [inspection_answer(r, model) for r in records]}
                session.execute(sa.insert(IdempotentRequest).values(
                    client=principal.name, key=idempotency.key, request_sha256=idempotency.request_sha256,
                    answer=jsonable(stored), created_at=created))
    except (SQLAlchemyError, OSError) as exc:
        for rel in written:
            archive.remove(rel)
        if isinstance(exc, IntegrityError) and idempotency is not None:
            prior = replayed(db, principal.name, idempotency)  # the same key won a race a moment ago
            if prior is not None:
                return prior
        log.error("could not store %d inspection record(s): %s", len(records), exc)
        raise StorageError("the inspection could not be recorded, so no verdict is given; "
                           "the database or the archive is unavailable") from None
    done = time.perf_counter()

    metrics.inference.labels(model.name).observe(judged - decoded)
    metrics.models_loaded.set(len(registry.loaded()))
    for record in records:
        metrics.count_verdict(model.name, record.verdict)
    store_ms = (done - stored_at) * 1000
    results = []
    for record, (part, judgement, map_png, overlay_png) in zip(records, extras):
        item = inspection_answer(record, model)
        item["timings_ms"] = {"decode": round(decode_ms, 2), "inference": round(inference_ms, 2),
                              "store": round(store_ms / len(records), 2)}
        if return_map:
            item["map"] = None if map_png is None else {
                "png_base64": base64.b64encode(map_png).decode("ascii"),
                "vmin": record.map_stats["vmin"], "vmax": record.map_stats["vmax"],
                "encoding": "8-bit gray PNG, linear from vmin (0) to vmax (255)",
            }
        if return_overlay:
            item["overlay_png_base64"] = None if overlay_png is None else base64.b64encode(overlay_png).decode("ascii")
        results.append(item)
    total_ms = (time.perf_counter() - start) * 1000
    return {
        "model": {"name": model.name, "version": model.version, "detector": model.detector},
        "batch_id": batch_id,
        "results": results,
        "timings_ms": {"decode": round(decode_ms * len(parts), 2), "inference": round(inference_ms * len(parts), 2),
                       "store": round(store_ms, 2), "total": round(total_ms, 2)},
    }


def inspection_answer(record: InspectionRecord, model: LoadedModel | None = None) -> dict[str, Any]:
    """The JSON form of a stored inspection (the scoring answer and the records API share it)."""
    thresholds: dict[str, Any] = {"t_review": record.t_review, "t_ng": record.t_ng}
    if model is not None:
        thresholds = model.thresholds
    out = {
        "inspection_id": record.id,
        "created_at": iso(record.created_at),
        "part_id": record.part_id,
        "model": {"name": record.model_name, "version": record.model_version, "detector": record.detector},
        "verdict": record.verdict,
        "score_verdict": record.score_verdict,
        "reasons": record.reasons or [],
        "score": record.score,
        "calibrated_score": record.calibrated_score,
        "thresholds": thresholds,
        "regions": record.regions or [],
        "map_stats": record.map_stats,
        "image": {"sha256": record.image_sha256, "width": record.image_width, "height": record.image_height},
        "source": record.source,
        "batch_id": record.batch_id,
        "client": record.client,
        "archived": record.archive_path is not None,
    }
    if record.error_code:
        out["error"] = {"code": record.error_code, "message": record.message}
    return out
