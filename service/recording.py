"""Record judgements: archive files, inspection rows and an idempotent answer, in one transaction.

All or nothing: the archive files are written first, then the inspection rows (and, for a
request with an ``Idempotency-Key``, its answer) are committed together. If anything
fails before the commit, the archive files written so far are removed and nothing is
kept, so a verdict that is answered has always been recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from anomaly.jsonable import jsonable
from service.answering import recorded_answer
from service.archive import Archive
from service.db import Database, IdempotentRequest, InspectionRecord, OutboxMessage, new_id, utcnow
from service.errors import BadRequestError, IdempotencyKeyReusedError, StorageError
from service.judging import Judged, Judgement, Part, map_scale
from service.drift import advance
from service.outbox import VerdictTopic, outbox_rows
from service.registry import LoadedModel

log = logging.getLogger(__name__)

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


class AnsweredMeanwhile(Exception):
    """The same request, with the same ``Idempotency-Key``, was recorded by another worker a moment ago.

    Attributes:
        answer: That request's stored answer (``"replayed": true``), to give instead.
    """

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__("the same Idempotency-Key was recorded a moment ago")
        self.answer = answer


def record(db: Database, archive: Archive, model: LoadedModel, parts: Sequence[Part], judged: Judged, *,
           source: str, client: str, idempotency: Idempotency | None,
           outbox: VerdictTopic | None = None, batch_id: str | None = None) -> list[InspectionRecord]:
    """Archive and record every judgement, and the request's answer if it came with a key, in one transaction.

    Args:
        db: The inspection database.
        archive: Where images and maps are kept (only for the verdicts it wants).
        model: The model that judged the parts.
        parts: The parts, in order.
        judged: Their judgements, one per part, and what judging cost.
        source: ``api``, ``batch`` or ``page``; a ``batch`` gets one batch id for all its parts.
        client: The name of the principal who sent the parts.
        idempotency: The request's key, whose answer is stored with the records; None without one.
        outbox: Where verdicts go to the line; each record's message is stored in the same
            transaction (:mod:`service.outbox`). None: no messages.
        batch_id: The batch the parts belong to (a scoring job records its parts one call at a
            time under its own id); None: a new id for a ``batch``, none otherwise.

    Returns:
        The committed records, one per part, in order.

    Raises:
        AnsweredMeanwhile: another worker recorded the same request with the same key first;
            nothing of this one was kept.
        IdempotencyKeyReusedError: that other request had the same key but was another request.
        StorageError: the archive or the database failed; nothing was kept (503).
    """
    if batch_id is None and source == "batch":
        batch_id = new_id()
    created = utcnow()
    records = [_new_record(model, part, judgement, judged, created=created, source=source, batch_id=batch_id,
                           client=client) for part, judgement in zip(parts, judged.judgements)]
    written: list[str] = []
    try:
        for row, part, judgement in zip(records, parts, judged.judgements):
            if archive.wants(judgement.verdict):
                row.archive_path = archive.write(row.id, model.name, created, part.data, judgement.amap)
                written.append(row.archive_path)
        rows = [{c.key: getattr(r, c.key) for c in InspectionRecord.__table__.columns} for r in records]
        with db.session() as session:  # a Core insert: the ORM's unit of work costs more than the row
            session.execute(sa.insert(InspectionRecord), rows)
            if outbox is not None:  # in the same transaction: a recorded verdict always has its message
                session.execute(sa.insert(OutboxMessage), outbox_rows(outbox, records))
            advance(session, model.drift_reference, records, outbox)  # the drift tests, with the records
            if idempotency is not None:  # in the same transaction: a retry finds both or neither
                session.execute(sa.insert(IdempotentRequest).values(
                    client=client, key=idempotency.key, request_sha256=idempotency.request_sha256,
                    answer=jsonable(recorded_answer(model, batch_id, records)), created_at=created))
    except (SQLAlchemyError, OSError) as exc:
        for rel in written:
            archive.remove(rel)
        if isinstance(exc, IntegrityError) and idempotency is not None:
            prior = replayed(db, client, idempotency)  # the same key won a race a moment ago
            if prior is not None:
                raise AnsweredMeanwhile(prior) from None
        log.error("could not store %d inspection record(s): %s", len(records), exc)
        raise StorageError("the inspection could not be recorded, so no verdict is given; "
                           "the database or the archive is unavailable") from None
    return records


def _new_record(model: LoadedModel, part: Part, judgement: Judgement, judged: Judged, *, created: datetime,
                source: str, batch_id: str | None, client: str) -> InspectionRecord:
    """One part's record, not yet archived or committed; a part not aligned has its error and no scores."""
    found, error = judgement.inspection, judgement.error
    stats = None
    if found is not None:
        stats = jsonable(found.map_stats)
        stats["vmin"], stats["vmax"] = map_scale(model, found.map)
        stats["pixel_threshold"] = model.thresholds["pixel_threshold"]
    return InspectionRecord(
        id=new_id(), created_at=created, model_name=model.name, model_version=model.version,
        detector=model.detector, part_id=part.part_id, verdict=judgement.verdict,
        score_verdict=None if found is None else found.score_verdict,
        reasons=None if found is None else jsonable(list(found.reasons or [])),
        score=None if found is None else float(found.score),
        calibrated_score=None if found is None else float(found.calibrated_score),
        t_review=model.thresholds["t_review"], t_ng=model.thresholds["t_ng"],
        error_code=None if error is None else error.code, message=None if error is None else str(error),
        regions=None if found is None else jsonable(found.regions or []), map_stats=stats,
        image_sha256=hashlib.sha256(part.data).hexdigest(),
        image_width=int(judgement.image.shape[1]), image_height=int(judgement.image.shape[0]),
        decode_ms=round(judged.decode_ms_each, 3), inference_ms=round(judged.inference_ms_each, 3), source=source,
        batch_id=batch_id, client=client,
    )
