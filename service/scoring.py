"""Judge parts and record them: the one path shared by the JSON API and the inspect page.

Three steps, each in its own module: :func:`~service.judging.judge` decodes and inspects
the parts while holding a scoring slot; :func:`~service.recording.record` archives and
commits them in one transaction; :func:`~service.answering.answer` builds the JSON answer
from the committed records. Maps and overlays are drawn from each part's own inspection
(:func:`~service.answering.draw`) between judging and recording.

All or nothing: images are decoded and judged first; only then are archive files written
and the records committed in one transaction. If anything fails before the commit,
nothing is kept (archive files written so far are removed) and no verdict is answered; a
verdict that is answered has been recorded.

A part that cannot be aligned to its template (:class:`anomaly.errors.AlignmentError`)
is a judgement too: it is recorded with the verdict ``ALIGNMENT_FAILED``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from flask import current_app

from anomaly.errors import InvalidImageError

from service.answering import answer, draw, inspection_answer
from service.archive import Archive
from service.auth import current_principal
from service.db import Database, InspectionRecord
from service.errors import BadRequestError, DeadlineExceededError
from service.judging import Judged, Part, judge, scoring_slot
from service.metrics import Metrics
from service.recording import AnsweredMeanwhile, Idempotency, record, replayed
from service.registry import LoadedModel, ModelRegistry

__all__ = ["MAX_PART_ID", "Part", "check_part_id", "inspection_answer", "score_parts"]

MAX_PART_ID = 128


def check_part_id(part_id: str | None) -> str | None:
    """A part id is optional, at most 128 printable characters."""
    if part_id is None or part_id == "":
        return None
    if len(part_id) > MAX_PART_ID or not part_id.isprintable():
        raise BadRequestError(f"part_id must be at most {MAX_PART_ID} printable characters, got {part_id[:40]!r}...")
    return part_id


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
            maps or timings) instead of a second record (see :func:`service.recording.replayed`).

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
    app = current_app
    registry: ModelRegistry = app.extensions["anomaly_registry"]
    db: Database = app.extensions["anomaly_db"]
    archive: Archive = app.extensions["anomaly_archive"]
    client = current_principal().name
    start = time.perf_counter()
    idempotency = None
    if idempotency_key is not None:
        idempotency = Idempotency.of(idempotency_key, name, version, parts, source, return_map, return_overlay)
        prior = replayed(db, client, idempotency)
        if prior is not None:
            return prior

    model = registry.get(name, version)
    with scoring_slot(app):
        judged = judge(model, parts, max_pixels=int(app.config["MAX_PIXELS"]),
                       max_bytes=int(app.config["MAX_IMAGE_BYTES"]))
        elapsed = time.perf_counter() - start
    deadline = float(app.config["SCORING_DEADLINE_SECONDS"])
    if elapsed > deadline:  # the client has most likely given up: no verdict on record it never got
        raise DeadlineExceededError(f"judging took {elapsed:.1f} s, more than the {deadline:g} s deadline; "
                                    "nothing was recorded")
    pictures = draw(model, judged.judgements, return_map=return_map, return_overlay=return_overlay)

    stored_at = time.perf_counter()
    try:
        records = record(db, archive, model, parts, judged, source=source, client=client, idempotency=idempotency,
                         outbox=app.extensions.get("anomaly_verdict_topic"))
    except AnsweredMeanwhile as race:
        return race.answer
    store_seconds = time.perf_counter() - stored_at
    count(app.extensions["anomaly_metrics"], registry, model, judged, records)
    return answer(model, records, pictures, judged=judged, store_seconds=store_seconds, started=start,
                  return_map=return_map, return_overlay=return_overlay)


def score_job_parts(app: Any, name: str, version: int | None, images: Sequence[bytes], *,
                    part_ids: Sequence[str | None] | None = None, batch_id: str, client: str,
                    report: Callable[[str, int, int], None] | None = None) -> tuple[int, dict[str, int]]:
    """Judge and record the parts of a scoring job one at a time, all under ``batch_id``.

    The same verdict path as a request (judging, archive, record, MQTT outbox, drift tests,
    metrics); a part whose image is bad is counted and skipped, not the end of the batch.

    Args:
        app: The application whose registry, database, archive and outbox are used.
        name: Model name.
        version: Model version; None for the production version (read once, at the start).
        images: Encoded images, in order.
        part_ids: The line's id of each part (checked when the job was asked for); None: none.
        batch_id: The batch id of every record (the job's id).
        client: Who asked (recorded).
        report: Progress callback ``(step, done, total)``.

    Returns:
        The version that judged, and counts by verdict (``GOOD``, ``REVIEW``, ``NG``,
        ``ALIGNMENT_FAILED``) and ``bad_image``.

    Raises:
        ModelNotFoundError, ModelNotReadyError: no such model or version.
        StorageError: a part's record could not be committed (the parts before it are kept).
    """
    registry: ModelRegistry = app.extensions["anomaly_registry"]
    model = registry.get(name, version)
    counts = {"GOOD": 0, "REVIEW": 0, "NG": 0, "ALIGNMENT_FAILED": 0, "bad_image": 0}
    for i, data in enumerate(images):
        part = Part(data, part_ids[i] if part_ids else None)
        try:
            judged = judge(model, [part], max_pixels=int(app.config["MAX_PIXELS"]),
                           max_bytes=int(app.config["MAX_IMAGE_BYTES"]))
        except InvalidImageError:  # too large ones too (ImageTooLargeError)
            counts["bad_image"] += 1
        else:
            records = record(app.extensions["anomaly_db"], app.extensions["anomaly_archive"], model, [part], judged,
                             source="batch", client=client, idempotency=None, batch_id=batch_id,
                             outbox=app.extensions.get("anomaly_verdict_topic"))
            count(app.extensions["anomaly_metrics"], registry, model, judged, records)
            counts[records[0].verdict] = counts.get(records[0].verdict, 0) + 1
        if report is not None:
            report("scoring", i + 1, len(images))
    return model.version, counts


def count(metrics: Metrics, registry: ModelRegistry, model: LoadedModel, judged: Judged,
          records: Sequence[InspectionRecord]) -> None:
    """Count recorded parts by verdict, time the request's inference, and note the models loaded."""
    metrics.inference.labels(model.name).observe(judged.inference_seconds)
    metrics.models_loaded.set(len(registry.loaded()))
    for row in records:
        metrics.count_verdict(model.name, row.verdict)
