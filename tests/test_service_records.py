"""Inspection records on SQLite and on the PostgreSQL server of this machine.

The PostgreSQL cases use their own schema per test and drop it afterwards. They skip when
no server answers, except under CI (``CI=true``), where a missing server fails them.
``ANOMALY_TEST_POSTGRES_URL`` points them at another server.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service import create_app
from service.auth import create_api_key, hash_key, lookup_key
from service.db import (HEAD, ApiKeyRecord, Database, FeedbackRecord, InspectionRecord, current_version,
                        utcnow)
from service.records import RecordFilter, add_feedback, query_inspections, yield_by_day
from service.testing import make_part, make_test_config, png_bytes

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        return {"DATABASE_URL": f"sqlite:///{tmp_path / 'records.sqlite'}"}
    return request.getfixturevalue("postgres_settings")


@pytest.fixture
def db(db_settings):
    database = Database(db_settings["DATABASE_URL"], schema=db_settings.get("DATABASE_SCHEMA"))
    database.migrate()
    yield database
    database.dispose()


def _record(**fields) -> InspectionRecord:
    values = dict(id=str(uuid.uuid4()), created_at=utcnow(), model_name="m", model_version=1, detector="patchcore",
                  part_id=None, verdict="GOOD", score=1.0, calibrated_score=0.1, t_review=2.0, t_ng=3.0,
                  image_sha256="0" * 64, image_width=10, image_height=10, source="api", client="tests")
    values.update(fields)
    return InspectionRecord(**values)


def test_migration_creates_tables_and_is_idempotent(db):
    assert current_version(db.engine) == HEAD
    assert db.migrate() == HEAD
    names = set(sa.inspect(db.engine).get_table_names())
    assert {"inspections", "feedback", "training_jobs", "api_keys", "schema_version"} <= names
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(sa.table("schema_version"))) == 1


def test_sqlite_uses_wal(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'w.sqlite'}")
    database.migrate()
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    database.dispose()


def test_scored_parts_are_recorded_with_their_facts(db_settings, store, tmp_path):
    app = create_app(make_test_config(tmp_path, store, **db_settings))
    client = app.test_client()
    png = png_bytes(make_part(np.random.default_rng(3)))
    body = client.post("/api/v1/models/tiny/score?part_id=P-77", data=png, content_type="image/png").get_json()
    db = app.extensions["anomaly_db"]
    with db.session() as s:
        record = s.get(InspectionRecord, body["inspection_id"])
        assert record.part_id == "P-77" and record.model_name == "tiny" and record.model_version == 1
        assert record.verdict == body["verdict"] and record.score == pytest.approx(body["score"])
        assert record.t_ng == pytest.approx(body["thresholds"]["t_ng"])
        assert record.image_width == 96 and len(record.image_sha256) == 64
        assert isinstance(record.map_stats, dict) and isinstance(record.regions, list)
        assert abs((utcnow() - record.created_at).total_seconds()) < 120
    db.dispose()


def test_queries_filter_by_model_verdict_part_and_time(db):
    t0 = datetime(2026, 3, 1, 8, 0, 0)
    with db.session() as s:
        s.add_all([
            _record(model_name="a", verdict="GOOD", created_at=t0, part_id="p1"),
            _record(model_name="a", verdict="NG", created_at=t0 + timedelta(hours=1), part_id="p2"),
            _record(model_name="b", verdict="REVIEW", created_at=t0 + timedelta(days=1), part_id="p3"),
            _record(model_name="b", verdict="ALIGNMENT_FAILED", score=None, created_at=t0 + timedelta(days=2)),
        ])
    rows, total = query_inspections(db, RecordFilter(model="a"))
    assert total == 2 and [r.part_id for r in rows] == ["p2", "p1"]  # newest first
    assert query_inspections(db, RecordFilter(verdict="NG"))[1] == 1
    assert query_inspections(db, RecordFilter(part_id="p3"))[0][0].model_name == "b"
    assert query_inspections(db, RecordFilter(since=t0 + timedelta(hours=12)))[1] == 2
    assert query_inspections(db, RecordFilter(until=t0 + timedelta(hours=1)))[1] == 1
    assert query_inspections(db, RecordFilter(rejected_only=True))[1] == 3
    page, total = query_inspections(db, RecordFilter(), limit=2, offset=2)
    assert total == 4 and len(page) == 2
    args = RecordFilter.from_args({"since": "2026-03-02", "until": "2026-03-02"})
    assert query_inspections(db, args)[1] == 1  # a bare date: that whole day


def test_first_pass_yield_per_model_per_day(db):
    day1, day2 = datetime(2026, 4, 1, 9), datetime(2026, 4, 2, 23, 59)
    records = [_record(model_name="a", verdict=v, created_at=day1) for v in ("GOOD", "GOOD", "GOOD", "NG")]
    records += [_record(model_name="a", verdict=v, created_at=day2) for v in ("GOOD", "REVIEW")]
    records += [_record(model_name="b", verdict=v, created_at=day1) for v in ("ALIGNMENT_FAILED", "GOOD")]
    with db.session() as s:
        s.add_all(records)
    with db.session() as s:
        s.add(FeedbackRecord(inspection_id=records[3].id, kind="false_alarm", created_at=utcnow(), client="t"))
    days = yield_by_day(db)
    got = {(d["model"], d["day"]): d for d in days}
    assert got[("a", "2026-04-01")]["first_pass_yield"] == pytest.approx(0.75)
    assert got[("a", "2026-04-01")]["false_alarms"] == 1 and got[("a", "2026-04-01")]["ng"] == 1
    assert got[("a", "2026-04-02")]["first_pass_yield"] == pytest.approx(0.5)
    assert got[("a", "2026-04-02")]["review"] == 1
    assert got[("b", "2026-04-01")] | {} == {
        "model": "b", "day": "2026-04-01", "total": 2, "good": 1, "review": 0, "ng": 0, "alignment_failed": 1,
        "first_pass_yield": 0.5, "false_alarms": 0, "misses": 0}
    assert [d["day"] for d in yield_by_day(db, model="a", since=datetime(2026, 4, 2))] == ["2026-04-02"]


def test_feedback_is_stored_and_checked_against_the_verdict(db, app_context_factory):
    good, bad = _record(verdict="GOOD"), _record(verdict="NG")
    with db.session() as s:
        s.add_all([good, bad])
    with app_context_factory(db):
        fb = add_feedback(db, bad.id, "false_alarm", "operator: scratch is on the fixture")
        assert fb.id is not None
        add_feedback(db, good.id, "miss", None)
        with pytest.raises(Exception) as info:
            add_feedback(db, good.id, "false_alarm", None)
        assert info.value.http_status == 409
    rows, _ = query_inspections(db, RecordFilter(feedback="false_alarm"))
    assert [r.id for r in rows] == [bad.id] and rows[0].feedback[0].note.startswith("operator")


def test_a_failed_transaction_stores_nothing(db):
    same = str(uuid.uuid4())
    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add_all([_record(id=str(uuid.uuid4())), _record(id=same)])
            s.flush()
            s.add(_record(id=same))  # duplicate key: the whole batch must go
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InspectionRecord)) == 0


def test_concurrent_writers(db):
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(10):
                with db.session() as s:
                    s.add(_record(part_id=f"w{n}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert query_inspections(db, RecordFilter())[1] == 40


def test_api_keys_are_stored_hashed(db):
    key = create_api_key(db, "line-1", "score")
    with db.session() as s:
        stored = s.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.name == "line-1"))
        assert stored.key_sha256 == hash_key(key) and key not in (stored.key_sha256, stored.prefix)
    assert lookup_key(db, key).role == "score"
    assert lookup_key(db, key + "x") is None


@pytest.fixture
def app_context_factory(tmp_path):
    """An application context whose principal is an admin (feedback records who gave it)."""
    import contextlib

    from flask import Flask, g

    from service.auth import Principal

    @contextlib.contextmanager
    def factory(db):
        app = Flask("records-test")
        app.extensions["anomaly_db"] = db
        with app.test_request_context():
            g.principal = Principal("tester", "admin", "key")
            yield

    return factory
