"""Inspection records through SQLAlchemy: tables, engine, sessions and schema migrations.

SQLite file by default (WAL mode, so readers never wait for the writer and several
gunicorn workers can write), PostgreSQL by URL (``postgresql://`` is driven by psycopg 3).

Migrations are a numbered list (:data:`MIGRATIONS`) recorded in the ``schema_version``
table. An empty database gets the current tables and is stamped with the newest number;
an older one gets the missing steps in order. Both happen under a lock (a PostgreSQL
advisory lock, a file lock beside a SQLite file), on every start and on demand::

    anomaly serve --migrate-only [--db-url URL]
    flask --app service db-upgrade

Times are stored as naive UTC and written out as ISO 8601 with a ``Z``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

log = logging.getLogger(__name__)

VERDICTS = ("GOOD", "REVIEW", "NG", "ALIGNMENT_FAILED")
REJECTED = ("REVIEW", "NG", "ALIGNMENT_FAILED")
#: false_alarm: rejected but good; miss: passed but defective; confirmed: rejected and defective indeed.
FEEDBACK_KINDS = ("false_alarm", "miss", "confirmed")
JOB_STATES = ("queued", "running", "succeeded", "failed")
ROLES = ("score", "admin")


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the tables store."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with ``Z``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def new_id() -> str:
    """A fresh record id (UUID4, 36 characters), allocated before the row is written."""
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class InspectionRecord(Base):
    """One judged part: which part, which model version, what verdict, when."""

    __tablename__ = "inspections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    detector: Mapped[str] = mapped_column(String(64))
    part_id: Mapped[str | None] = mapped_column(String(128), index=True)
    verdict: Mapped[str] = mapped_column(String(20))
    score_verdict: Mapped[str | None] = mapped_column(String(20))  # before region grading
    reasons: Mapped[list[str] | None] = mapped_column(JSON)  # why grading gave the verdict
    score: Mapped[float | None] = mapped_column(Float)
    calibrated_score: Mapped[float | None] = mapped_column(Float)
    t_review: Mapped[float | None] = mapped_column(Float)
    t_ng: Mapped[float | None] = mapped_column(Float)
    error_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    regions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    map_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))  # api | batch | page
    batch_id: Mapped[str | None] = mapped_column(String(36))
    client: Mapped[str] = mapped_column(String(64))
    archive_path: Mapped[str | None] = mapped_column(String(512))

    feedback: Mapped[list["FeedbackRecord"]] = relationship(
        back_populates="inspection", order_by="FeedbackRecord.id", lazy="selectin"
    )

    __table_args__ = (
        sa.Index("ix_inspections_model_created", "model_name", "created_at"),
        sa.Index("ix_inspections_verdict_created", "verdict", "created_at"),
    )


class FeedbackRecord(Base):
    """A person's correction of a past verdict: a false alarm or a miss."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(ForeignKey("inspections.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    client: Mapped[str] = mapped_column(String(64))

    inspection: Mapped[InspectionRecord] = relationship(back_populates="feedback")


class TrainingJobRecord(Base):
    """A background training job; any worker answers polls from this row."""

    __tablename__ = "training_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    detector: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    n_images: Mapped[int] = mapped_column(Integer)
    promote: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    stage: Mapped[str] = mapped_column(String(128), default="queued")  # the step and its count, "... 3/5"
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(64))


class ApiKeyRecord(Base):
    """An API key, stored as the sha256 of the key (the key itself is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class IdempotentRequest(Base):
    """A scoring request sent with an ``Idempotency-Key``, and the answer it got.

    Written in the same transaction as the request's inspection records, so a retry with the
    same key finds either both or neither, and gets the stored answer instead of a second record.
    """

    __tablename__ = "idempotent_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    request_sha256: Mapped[str] = mapped_column(String(64))  # what was asked: a reused key is refused
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("client", "key", name="uq_idempotent_requests_client_key"),)


class OutboxMessage(Base):
    """A verdict message for the line, written in the same transaction as its inspection record.

    :mod:`service.outbox` publishes the unsent ones to MQTT and marks them sent; a broker
    outage delays them and loses none. Delivery is at least once: a message published but
    not yet marked when a worker dies goes again, with the same ``inspection_id``.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[str] = mapped_column(String(36), index=True)
    topic: Mapped[str] = mapped_column(String(256))
    payload: Mapped[str] = mapped_column(Text)  # the JSON sent, as sent
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)  # a publisher holds it until then
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (sa.Index("ix_outbox_unsent", "sent_at", "id"),)


class DriftState(Base):
    """Where a model version's drift tests stand (:mod:`anomaly.drift`), updated with every record.

    The CUSUMs are advanced by an atomic ``UPDATE`` in each record's transaction, so workers
    recording parts of one model at once never lose a step; ``alarm`` is set once, by the
    record that crossed the threshold, and stays until reset.
    """

    __tablename__ = "drift_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer, default=0)
    cusum_review: Mapped[float] = mapped_column(Float, default=0.0)
    cusum_median: Mapped[float] = mapped_column(Float, default=0.0)
    alarm: Mapped[bool] = mapped_column(Boolean, default=False)
    alarm_at: Mapped[datetime | None] = mapped_column(DateTime)
    alarm_inspection_id: Mapped[str | None] = mapped_column(String(36))
    reset_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (sa.UniqueConstraint("model_name", "model_version", name="uq_drift_state_model_version"),)


class PromotionGate(Base):
    """One promotion gate of a model version (:mod:`service.gates`): its figures, and whether it was forced."""

    __tablename__ = "promotion_gates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    promoted: Mapped[bool] = mapped_column(Boolean)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
    by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SchemaVersion(Base):
    """Applied migrations."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    applied_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -- migrations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Migration:
    """One schema step: ``upgrade(connection)`` runs inside the migration transaction."""

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    Base.metadata.create_all(conn)


#: Every schema step, in order. Add a step here (never edit an applied one) when a table
#: changes, e.g. ``Migration(2, "inspections.line", lambda c: c.execute(sa.text(
#: "ALTER TABLE inspections ADD COLUMN line VARCHAR(64)")))``.
def _idempotent_requests(conn: Connection) -> None:
    IdempotentRequest.__table__.create(conn, checkfirst=True)  # a fresh database has it from step 1


def _longer_job_stage(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        conn.execute(sa.text("ALTER TABLE training_jobs ALTER COLUMN stage TYPE VARCHAR(128)"))


def _outbox(conn: Connection) -> None:
    OutboxMessage.__table__.create(conn, checkfirst=True)


def _drift_state(conn: Connection) -> None:
    DriftState.__table__.create(conn, checkfirst=True)


def _promotion_gates(conn: Connection) -> None:
    PromotionGate.__table__.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "idempotent_requests: answers of requests sent with an Idempotency-Key", _idempotent_requests),
    Migration(3, "training_jobs.stage up to 128 characters (the step and its count)", _longer_job_stage),
    Migration(4, "outbox: verdict messages for MQTT, written with their inspection records", _outbox),
    Migration(5, "drift_state: each model version's drift tests, advanced with every record", _drift_state),
    Migration(6, "promotion_gates: each version's promotion gate and whether it was forced", _promotion_gates),
)
HEAD = MIGRATIONS[-1].version


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs use psycopg 3 (the driver this project installs)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``postgresql://user@host/db``).
        schema: PostgreSQL schema to keep the tables in (created by :func:`migrate`).
    """
    url = normalize_url(url)
    backend = sa.make_url(url).get_backend_name()
    if backend == "sqlite":
        database = sa.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if schema:
        _check_identifier(schema)
        connect_args["options"] = f"-csearch_path={schema}"
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode except on power loss
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _check_identifier(name: str) -> None:
    if not name.replace("_", "").isalnum() or not name[0].isalpha() or len(name) > 63:
        raise ValueError(f"schema name must be letters, digits and '_' starting with a letter, got {name!r}")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_path = Path(f"{engine.url.database}.migrate-lock")
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def current_version(engine: Engine) -> int | None:
    """The applied schema version, or None for an empty database."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(SchemaVersion.__tablename__):
            return None
        return conn.execute(sa.select(sa.func.max(SchemaVersion.version))).scalar()


def migrate(engine: Engine, *, schema: str | None = None) -> int:
    """Create or upgrade the tables to :data:`HEAD`; safe to run from several processes at once.

    Returns:
        The schema version now applied.
    """
    with _migration_lock(engine):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274001)"))
                if schema:
                    _check_identifier(schema)
                    conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            inspector = sa.inspect(conn)
            if not inspector.has_table(SchemaVersion.__tablename__):
                if inspector.has_table(InspectionRecord.__tablename__):
                    raise RuntimeError("tables exist without a schema_version table; not touching them")
                Base.metadata.create_all(conn)
                conn.execute(sa.insert(SchemaVersion).values(version=HEAD, description="created at head",
                                                             applied_at=utcnow()))
                log.info("created the inspection tables (schema version %s)", HEAD)
                return HEAD
            applied = conn.execute(sa.select(sa.func.max(SchemaVersion.version))).scalar() or 0
            if applied > HEAD:
                raise RuntimeError(f"database schema version {applied} is newer than this program's {HEAD}")
            for step in MIGRATIONS:
                if step.version > applied:
                    step.upgrade(conn)
                    conn.execute(sa.insert(SchemaVersion).values(version=step.version, description=step.description,
                                                                 applied_at=utcnow()))
                    log.info("applied schema migration %s: %s", step.version, step.description)
            return HEAD


class Database:
    """The engine and session factory of one application (an ``init_app`` extension).

    Args:
        url: SQLAlchemy URL.
        schema: PostgreSQL schema, optional.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = normalize_url(url)
        self.schema = schema
        self.engine = make_engine(self.url, schema=schema)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> int:
        """See :func:`migrate`."""
        return migrate(self.engine, schema=self.schema)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and pages."""
        return sa.make_url(self.url).render_as_string(hide_password=True)
