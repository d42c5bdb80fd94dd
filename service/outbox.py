"""Verdicts to the line over MQTT, through an outbox: no verdict lost to a broker outage.

PLCs and SCADA systems listen on MQTT, not on our database. Each inspection record gets an
:class:`~service.db.OutboxMessage` in the same transaction (:func:`outbox_rows`, called by
:func:`service.recording.record`), so a verdict that is answered has its message stored. A
:class:`Publisher` (a thread in each web worker, or any process with the database) claims
unsent messages, publishes them with paho-mqtt at QoS 1 (the broker acknowledges each),
and marks them sent. While the broker is down the messages wait, and go out in order when it
returns. Delivery is at least once: a message published but not yet marked when its worker
dies is claimed again after :data:`CLAIM_SECONDS` and sent again, with the same
``inspection_id`` for the subscriber to drop the duplicate.

Claiming is one ``UPDATE ... WHERE unclaimed`` per message, atomic on SQLite and
PostgreSQL alike, so several workers drain one outbox without sending a message twice in
the normal course.

The message (compact JSON): ``inspection_id``, ``part_id``, ``line``, ``station``,
``model``, ``version``, ``verdict``, ``calibrated_score``, ``regions`` (count) and
``largest_region`` (area in pixels, and in mm^2 where the model knows its pixel size, and
its bounding box), ``created_at``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import sqlalchemy as sa

from service.db import Database, InspectionRecord, OutboxMessage, utcnow

log = logging.getLogger(__name__)

#: A claimed message not marked sent within this many seconds is claimed again (its publisher died).
CLAIM_SECONDS = 30
#: Messages claimed at once.
CLAIM_BATCH = 100
#: Seconds to wait for the broker's acknowledgement of one message.
ACK_SECONDS = 5.0


@dataclass(frozen=True)
class VerdictTopic:
    """Where and as what a verdict goes: the topic template and the line and station names.

    Attributes:
        template: e.g. ``anomaly/{line}/{station}/verdict`` (``{model}`` may be used too).
        line: Line name.
        station: Station name.
    """

    template: str
    line: str
    station: str

    @classmethod
    def from_config(cls, config: Any) -> "VerdictTopic | None":
        """The app's topic, or ``None`` when no broker is configured (``MQTT_HOST``)."""
        if not config.get("MQTT_HOST"):
            return None
        return cls(str(config["MQTT_TOPIC"]), str(config["LINE"]), str(config["STATION"]))

    def topic(self, model: str) -> str:
        return self.template.format(line=self.line, station=self.station, model=model)

    def message(self, record: InspectionRecord) -> dict[str, Any]:
        """The compact JSON of one record (see the module docstring)."""
        regions = record.regions or []
        largest = max(regions, key=lambda r: r.get("area_px") or 0, default=None)
        return {
            "inspection_id": record.id, "part_id": record.part_id, "line": self.line, "station": self.station,
            "model": record.model_name, "version": record.model_version, "verdict": record.verdict,
            "calibrated_score": record.calibrated_score, "regions": len(regions),
            "largest_region": None if largest is None else {
                "area_px": largest.get("area_px"), "area_mm2": largest.get("area_mm2"), "bbox": largest.get("bbox")},
            "created_at": record.created_at.isoformat(timespec="milliseconds") + "Z",
        }


def outbox_rows(topic: VerdictTopic, records: Sequence[InspectionRecord]) -> list[dict[str, Any]]:
    """Outbox rows of committed-to-be records, for an insert in their transaction."""
    now = utcnow()
    return [{"inspection_id": r.id, "topic": topic.topic(r.model_name), "created_at": now, "attempts": 0,
             "payload": json.dumps(topic.message(r), separators=(",", ":"))} for r in records]


def pending(db: Database) -> int:
    """Messages not yet sent."""
    with db.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.sent_at.is_(None))) or 0)


class Publisher:
    """Drains the outbox to an MQTT broker (see the module docstring).

    Args:
        db: The database holding the outbox.
        host, port: The broker.
        client_id: MQTT client id (default: a new one per publisher).
        poll_seconds: Pause between drains when the outbox is empty or the broker is away.
    """

    def __init__(self, db: Database, host: str, port: int = 1883, *, client_id: str | None = None,
                 poll_seconds: float = 0.5) -> None:
        import paho.mqtt.client as mqtt  # lazy: only a service with a broker needs it

        self.db, self.host, self.port, self.poll_seconds = db, host, int(port), float(poll_seconds)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"anomaly-outbox-{uuid.uuid4().hex[:12]}")
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._connected = threading.Event()
        self._client.on_connect = lambda *a: self._connected.set() if not a[3].is_failure else None
        self._client.on_disconnect = lambda *a: self._connected.clear()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_loop = False

    # -- one drain ------------------------------------------------------------------------
    def claim(self, limit: int = CLAIM_BATCH) -> list[OutboxMessage]:
        """Claim up to ``limit`` unsent messages, oldest first (none that another publisher holds)."""
        now = utcnow()
        free = sa.or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
        claimed = []
        with self.db.session() as session:
            ids = session.scalars(sa.select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None), free)
                                  .order_by(OutboxMessage.id).limit(limit)).all()
            for message_id in ids:
                # The WHERE re-checks the claim, so of two publishers racing for a message one wins.
                won = session.execute(sa.update(OutboxMessage)
                                      .where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None), free)
                                      .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS),
                                              attempts=OutboxMessage.attempts + 1)).rowcount
                if won:
                    claimed.append(message_id)
        if not claimed:
            return []
        with self.db.session() as session:
            return list(session.scalars(sa.select(OutboxMessage).where(OutboxMessage.id.in_(claimed))
                                        .order_by(OutboxMessage.id)))

    def drain_once(self) -> int:
        """Publish what can be claimed now; returns how many were acknowledged and marked sent."""
        if not self._connect():
            return 0
        sent = 0
        for message in self.claim():
            try:
                info = self._client.publish(message.topic, message.payload, qos=1)
                info.wait_for_publish(timeout=ACK_SECONDS)
                if not info.is_published():
                    raise TimeoutError(f"no acknowledgement from {self.host}:{self.port} in {ACK_SECONDS:g} s")
            except (OSError, RuntimeError, ValueError) as exc:  # paho raises these when the link drops
                self._release(message.id, f"{type(exc).__name__}: {exc}")
                log.warning("outbox: message %s not delivered (%s); it waits for the broker", message.id, exc)
                break
            with self.db.session() as session:
                session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == message.id)
                                .values(sent_at=utcnow(), claimed_until=None, last_error=None))
            sent += 1
        return sent

    def _release(self, message_id: int, error: str) -> None:
        """Give a message back at once (it failed here) with the reason."""
        with self.db.session() as session:
            session.execute(sa.update(OutboxMessage).where(OutboxMessage.id == message_id)
                            .values(claimed_until=None, last_error=error[:1000]))

    def _connect(self) -> bool:
        if self._connected.is_set():
            return True
        try:
            if not self._started_loop:
                self._client.connect_async(self.host, self.port, keepalive=30)
                self._client.loop_start()  # paho's own thread reconnects after an outage
                self._started_loop = True
        except OSError as exc:
            log.warning("outbox: broker %s:%s not reachable (%s)", self.host, self.port, exc)
            return False
        return self._connected.wait(timeout=self.poll_seconds)

    # -- the thread -----------------------------------------------------------------------
    def start(self) -> "Publisher":
        """Drain in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.drain_once() == 0:
                    self._stop.wait(self.poll_seconds)
            except Exception:  # noqa: BLE001 - the database may be away for a while: keep the thread alive
                log.exception("outbox: drain failed; retrying")
                self._stop.wait(max(self.poll_seconds, 1.0))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._started_loop:
            self._client.loop_stop()
            self._client.disconnect()
