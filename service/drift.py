"""Drift watch in the service: the tests of :mod:`anomaly.drift` advanced with every record.

Each recorded part with a score advances its model version's two CUSUMs by an atomic
``UPDATE`` in the record's own transaction (:func:`advance`); the record that crosses the
threshold sets the alarm, logs it, counts it in ``/metrics`` (``anomaly_drift_alarm``) and,
with a broker configured, puts an alarm message for the line in the outbox
(``.../alarm`` beside the verdict topic). ``GET /api/v1/models/<name>/drift`` shows where
the tests stand and the last parts' figures beside the calibration's (:func:`status`);
``POST .../drift/reset`` clears an alarm once its cause is fixed.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from anomaly.drift import H, DriftReference, assess, cusum
from service.db import Database, DriftState, InspectionRecord, OutboxMessage, utcnow
from service.outbox import VerdictTopic

log = logging.getLogger(__name__)

#: Parts whose figures ``status`` shows (the most recent of the version).
WINDOW = 500


def _state(session: Session, name: str, version: int) -> sa.ColumnElement[bool]:
    """The version's row (created at its first part; a concurrent creation is tolerated)."""
    where = sa.and_(DriftState.model_name == name, DriftState.model_version == version)
    if session.scalar(sa.select(DriftState.id).where(where)) is None:
        try:
            with session.begin_nested():
                session.execute(sa.insert(DriftState).values(model_name=name, model_version=version, n=0,
                                                             cusum_review=0.0, cusum_median=0.0, alarm=False))
        except IntegrityError:  # another worker created it a moment ago
            pass
    return where


def _clamped(column, step: float):
    return sa.case((column + step > 0, column + step), else_=0.0)


def advance(session: Session, ref: DriftReference | None, records: Sequence[InspectionRecord],
            topic: VerdictTopic | None) -> list[dict[str, Any]]:
    """Advance the drift tests by ``records`` (one model version), inside the caller's transaction.

    Returns:
        The alarms these records raised (none, or one: an alarm stays set until reset).
    """
    scored = [r for r in records if r.score is not None]
    if ref is None or not scored:
        return []
    where = _state(session, scored[0].model_name, scored[0].model_version)
    raised = []
    for row in scored:
        steps = ref.increments(float(row.score))
        session.execute(sa.update(DriftState).where(where).values(
            n=DriftState.n + 1, cusum_review=_clamped(DriftState.cusum_review, steps["review"]),
            cusum_median=_clamped(DriftState.cusum_median, steps["median"])))
        now = utcnow()
        flipped = session.execute(
            sa.update(DriftState).where(where, DriftState.alarm.is_(False),
                                        sa.or_(DriftState.cusum_review >= H, DriftState.cusum_median >= H))
            .values(alarm=True, alarm_at=now, alarm_inspection_id=row.id)
            .returning(DriftState.n, DriftState.cusum_review, DriftState.cusum_median)).first()
        if flipped is None:
            continue
        alarm = {"model": row.model_name, "version": row.model_version, "inspection_id": row.id, "parts": flipped.n,
                 "cusum_review": flipped.cusum_review, "cusum_median": flipped.cusum_median, "threshold": H,
                 "at": now.isoformat(timespec="milliseconds") + "Z"}
        log.warning("drift alarm on %s version %s after %d parts (CUSUM review %.1f, median %.1f, threshold %.1f)",
                    row.model_name, row.model_version, flipped.n, flipped.cusum_review, flipped.cusum_median, H)
        if topic is not None:
            session.execute(sa.insert(OutboxMessage).values(
                inspection_id=row.id, topic=topic.topic(row.model_name).rsplit("/", 1)[0] + "/alarm",
                payload=json.dumps({"alarm": "drift", "line": topic.line, "station": topic.station, **alarm},
                                   separators=(",", ":")), created_at=now, attempts=0))
        raised.append(alarm)
    return raised


def status(db: Database, name: str, version: int, ref: DriftReference | None) -> dict[str, Any]:
    """The version's drift tests and its last :data:`WINDOW` parts beside the calibration."""
    with db.session() as session:
        state = session.scalar(sa.select(DriftState).where(DriftState.model_name == name,
                                                           DriftState.model_version == version))
        rows = session.execute(
            sa.select(InspectionRecord.score, InspectionRecord.verdict, InspectionRecord.calibrated_score)
            .where(InspectionRecord.model_name == name, InspectionRecord.model_version == version,
                   InspectionRecord.score.is_not(None))
            .order_by(InspectionRecord.created_at.desc(), InspectionRecord.id.desc()).limit(WINDOW)).all()
    rows = rows[::-1]
    out: dict[str, Any] = {"model": name, "version": version, "window": WINDOW,
                           "test": ("two Bernoulli CUSUMs of the log-likelihood ratio (anomaly.drift): parts at or "
                                    "above t_review against the calibration's share tripled, parts above the good "
                                    "median against three in four; alarm at log(ARL0)"),
                           "reference": None if ref is None else ref.to_dict()}
    out["state"] = None if state is None else {
        "parts": state.n, "cusum_review": state.cusum_review, "cusum_median": state.cusum_median,
        "threshold": H, "alarm": state.alarm, "alarm_at": state.alarm_at, "alarm_inspection_id":
        state.alarm_inspection_id, "reset_at": state.reset_at}
    out["recent"] = None if ref is None or not rows else assess(
        ref, [r.score for r in rows], [r.verdict for r in rows], [r.calibrated_score for r in rows])
    return out


def paths(db: Database, name: str, version: int, ref: DriftReference) -> dict[str, list[float]]:
    """Both tests' CUSUM paths over the version's last :data:`WINDOW` parts (from 0 at the first), for the chart."""
    with db.session() as session:
        scores = session.scalars(
            sa.select(InspectionRecord.score)
            .where(InspectionRecord.model_name == name, InspectionRecord.model_version == version,
                   InspectionRecord.score.is_not(None))
            .order_by(InspectionRecord.created_at.desc(), InspectionRecord.id.desc()).limit(WINDOW)).all()[::-1]
    steps = [ref.increments(float(s)) for s in scores]
    return {test: cusum([step[test] for step in steps]).tolist() for test in ref.steps}


def reset(db: Database, name: str, version: int) -> bool:
    """Clear a version's alarm and CUSUMs (its cause fixed); ``False`` if it has no drift state yet."""
    with db.session() as session:
        done = session.execute(sa.update(DriftState).where(DriftState.model_name == name,
                                                           DriftState.model_version == version)
                               .values(cusum_review=0.0, cusum_median=0.0, alarm=False, reset_at=utcnow())).rowcount
    return bool(done)
