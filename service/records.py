"""Queries over the inspection records: filtered lists, first-pass yield, feedback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from service.auth import current_principal
from service.db import FEEDBACK_KINDS, REJECTED, VERDICTS, Database, FeedbackRecord, InspectionRecord, iso, utcnow
from service.errors import BadRequestError, ConflictError, NotFoundError

MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
MAX_INT = 2**31 - 1  # what every database's INTEGER holds


def parse_time(value: str | None, *, field: str, end_of_day: bool = False) -> datetime | None:
    """ISO 8601 date or date-time to naive UTC (a time without offset is taken as UTC).

    A bare date means the start of that day, or with ``end_of_day`` the start of the next.
    """
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"{field} must be an ISO 8601 date or date-time, got {value[:40]!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


@dataclass
class RecordFilter:
    """Filters of the records list (all optional, combined with AND)."""

    model: str | None = None
    version: int | None = None
    verdict: str | None = None
    part_id: str | None = None
    batch_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    rejected_only: bool = False
    feedback: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> "RecordFilter":
        """From query arguments (``model, version, verdict, part_id, batch_id, since, until, rejected, feedback``)."""
        verdict = args.get("verdict") or None
        if verdict is not None:
            verdict = verdict.upper()
            if verdict not in VERDICTS:
                raise BadRequestError(f"verdict must be one of {', '.join(VERDICTS)}, got {args.get('verdict')[:40]!r}")
        feedback = args.get("feedback") or None
        if feedback is not None and feedback not in FEEDBACK_KINDS + ("any",):
            raise BadRequestError(f"feedback must be false_alarm, miss or any, got {feedback[:40]!r}")
        version = args.get("version") or None
        if version is not None:
            try:
                version = int(version)
            except ValueError:
                raise BadRequestError(f"version must be an integer, got {version[:40]!r}") from None
            if not 1 <= version <= MAX_INT:
                raise BadRequestError(f"version must be 1..{MAX_INT}, got {version}")
        return cls(
            model=args.get("model") or None,
            version=version,
            verdict=verdict,
            part_id=args.get("part_id") or None,
            batch_id=(args.get("batch_id") or "")[:36] or None,
            since=parse_time(args.get("since"), field="since"),
            until=parse_time(args.get("until"), field="until", end_of_day=True),
            rejected_only=str(args.get("rejected", "")).lower() in ("1", "true", "yes"),
            feedback=feedback,
        )

    def where(self) -> list[Any]:
        clauses: list[Any] = []
        if self.model:
            clauses.append(InspectionRecord.model_name == self.model)
        if self.version is not None:
            clauses.append(InspectionRecord.model_version == self.version)
        if self.verdict:
            clauses.append(InspectionRecord.verdict == self.verdict)
        if self.part_id:
            clauses.append(InspectionRecord.part_id == self.part_id)
        if self.batch_id:
            clauses.append(InspectionRecord.batch_id == self.batch_id)
        if self.since:
            clauses.append(InspectionRecord.created_at >= self.since)
        if self.until:
            clauses.append(InspectionRecord.created_at < self.until)
        if self.rejected_only:
            clauses.append(InspectionRecord.verdict.in_(REJECTED))
        if self.feedback:
            sub = sa.select(FeedbackRecord.id).where(FeedbackRecord.inspection_id == InspectionRecord.id)
            if self.feedback != "any":
                sub = sub.where(FeedbackRecord.kind == self.feedback)
            clauses.append(sub.exists())
        return clauses


def parse_limit(args: Any, default: int = 100) -> tuple[int, int]:
    """``limit`` (1..1000) and ``offset`` (>= 0) query arguments."""
    try:
        limit = int(args.get("limit", default))
        offset = int(args.get("offset", 0))
    except ValueError:
        raise BadRequestError("limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or not 0 <= offset <= MAX_OFFSET:
        raise BadRequestError(f"limit must be 1..{MAX_LIMIT} and offset 0..{MAX_OFFSET}, got {limit} and {offset}")
    return limit, offset


def query_inspections(db: Database, flt: RecordFilter, *, limit: int = 100,
                      offset: int = 0) -> tuple[list[InspectionRecord], int]:
    """Newest first; returns the page and the total number of matches."""
    clauses = flt.where()
    with db.session() as s:
        total = s.scalar(sa.select(sa.func.count()).select_from(InspectionRecord).where(*clauses)) or 0
        rows = s.scalars(sa.select(InspectionRecord).where(*clauses)
                         .order_by(InspectionRecord.created_at.desc(), InspectionRecord.id)
                         .limit(limit).offset(offset)).all()
        return list(rows), int(total)


def get_inspection(db: Database, inspection_id: str) -> InspectionRecord:
    """One record with its feedback.

    Raises:
        NotFoundError: no such record.
    """
    with db.session() as s:
        record = s.get(InspectionRecord, inspection_id[:36])
        if record is None:
            raise NotFoundError(f"no inspection with id {inspection_id[:40]!r}")
        _ = record.feedback  # loaded before the session closes
        return record


def feedback_answer(fb: FeedbackRecord) -> dict[str, Any]:
    return {"id": fb.id, "inspection_id": fb.inspection_id, "kind": fb.kind, "note": fb.note,
            "created_at": iso(fb.created_at), "client": fb.client}


def add_feedback(db: Database, inspection_id: str, kind: str, note: str | None) -> FeedbackRecord:
    """Mark a past inspection as a false alarm (rejected but good), a miss (passed but bad) or a
    confirmed reject (rejected and bad indeed); misses and confirmed rejects whose image the
    archive kept become the model's regression set (:mod:`service.gates`).

    Raises:
        BadRequestError: unknown kind or too long a note.
        NotFoundError: no such inspection.
        ConflictError: the feedback contradicts the verdict (a false alarm of a GOOD part).
    """
    if kind not in FEEDBACK_KINDS:
        raise BadRequestError(f"kind must be one of {', '.join(FEEDBACK_KINDS)}, got {str(kind)[:40]!r}")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise BadRequestError("note must be a string of at most 2000 characters")
    with db.session() as s:
        record = s.get(InspectionRecord, inspection_id[:36])
        if record is None:
            raise NotFoundError(f"no inspection with id {inspection_id[:40]!r}")
        if kind == "false_alarm" and record.verdict == "GOOD":
            raise ConflictError("a false alarm is a rejected part that was good; this part was judged GOOD")
        if kind == "miss" and record.verdict != "GOOD":
            raise ConflictError(f"a miss is a passed part that was defective; this part was judged {record.verdict}")
        if kind == "confirmed" and record.verdict not in ("REVIEW", "NG"):
            raise ConflictError(f"a confirmed reject is a part judged REVIEW or NG; this part was judged "
                                f"{record.verdict}")
        fb = FeedbackRecord(inspection_id=record.id, kind=kind, note=note or None, created_at=utcnow(),
                            client=current_principal().name)
        s.add(fb)
        s.flush()
        return fb


def yield_by_day(db: Database, *, model: str | None = None, since: datetime | None = None,
                 until: datetime | None = None) -> list[dict[str, Any]]:
    """First-pass yield per model per UTC day: GOOD / all judged parts.

    REVIEW, NG and ALIGNMENT_FAILED all count as not passing first time. Feedback
    counts are given beside it (false alarms lower the yield the line saw, not the
    true quality of the parts).
    """
    day = sa.func.date(InspectionRecord.created_at).label("day")

    def count(verdict: str) -> Any:
        return sa.func.sum(sa.case((InspectionRecord.verdict == verdict, 1), else_=0))

    clauses: list[Any] = []
    if model:
        clauses.append(InspectionRecord.model_name == model)
    if since:
        clauses.append(InspectionRecord.created_at >= since)
    if until:
        clauses.append(InspectionRecord.created_at < until)
    stmt = (sa.select(InspectionRecord.model_name, day, sa.func.count().label("total"), count("GOOD"),
                      count("REVIEW"), count("NG"), count("ALIGNMENT_FAILED"))
            .where(*clauses).group_by(InspectionRecord.model_name, day)
            .order_by(day, InspectionRecord.model_name))
    fb_day = sa.func.date(InspectionRecord.created_at)
    fb_stmt = (sa.select(InspectionRecord.model_name, fb_day, FeedbackRecord.kind, sa.func.count())
               .join(FeedbackRecord, FeedbackRecord.inspection_id == InspectionRecord.id)
               .where(*clauses).group_by(InspectionRecord.model_name, fb_day, FeedbackRecord.kind))
    with db.session() as s:
        rows = s.execute(stmt).all()
        feedback = {(m, str(d), k): int(n) for m, d, k, n in s.execute(fb_stmt).all()}
    out = []
    for name, d, total, good, review, ng, failed in rows:
        d = str(d)
        out.append({
            "model": name, "day": d, "total": int(total), "good": int(good or 0), "review": int(review or 0),
            "ng": int(ng or 0), "alignment_failed": int(failed or 0),
            "first_pass_yield": round(int(good or 0) / int(total), 6) if total else None,
            "false_alarms": feedback.get((name, d, "false_alarm"), 0),
            "misses": feedback.get((name, d, "miss"), 0),
        })
    return out


def count_inspections(db: Database) -> int:
    """How many inspections are stored (all models)."""
    with db.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(InspectionRecord)) or 0)
