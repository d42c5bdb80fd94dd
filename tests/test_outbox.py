"""Verdicts to the line over MQTT through the outbox, against the real Mosquitto on 127.0.0.1:1883.

Right answers built in: every recorded part has exactly one message with its inspection id
and verdict (a pasted defect NG); while no broker answers the messages wait in the outbox,
and all of them arrive once one does; two publishers draining one outbox send each message
once. Skipped where no broker is reachable, failed instead under CI=true.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from service.db import InspectionRecord, OutboxMessage
from service.outbox import Publisher, pending
from service.testing import make_part, png_bytes, service_app
from tests.conftest import listening_or_skip

BROKER = ("127.0.0.1", 1883)


def _broker_or_skip() -> None:
    listening_or_skip(*BROKER, "MQTT broker")


class Subscriber:
    """A real MQTT client collecting every message under ``anomaly/<line>/#``."""

    def __init__(self, line: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self.topics: list[str] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *a: c.subscribe(f"anomaly/{line}/#", qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = lambda c, u, m: (self.topics.append(m.topic),
                                                  self.messages.append(json.loads(m.payload)))
        self.client.connect(*BROKER)
        self.client.loop_start()
        assert self._ready.wait(10), "the subscription was not acknowledged"

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def line() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"  # a topic of this test's own


@pytest.fixture
def app(store, tmp_path, line):
    _broker_or_skip()
    app = service_app(store, tmp_path, MQTT_HOST=BROKER[0], MQTT_PORT=BROKER[1], MQTT_PUBLISHER=False,
                      LINE=line, STATION="st-7")
    yield app
    app.extensions["anomaly_jobs"].shutdown(wait=True)
    app.extensions["anomaly_db"].dispose()


def _score(client, image: np.ndarray, part_id: str) -> dict:
    r = client.post("/api/v1/models/tiny/score", data={"image": (io.BytesIO(png_bytes(image)), "p.png"),
                                                        "part_id": part_id}, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _parts() -> list[np.ndarray]:
    good = [make_part(np.random.default_rng(70 + i)) for i in range(2)]
    bad = make_part(np.random.default_rng(79))
    bad[30:50, 55:75] = 250
    return good + [bad]


def test_every_recorded_verdict_reaches_a_subscriber_once(app, line):
    sub = Subscriber(line)
    try:
        client = app.test_client()
        answers = [_score(client, image, f"P-{i}") for i, image in enumerate(_parts())]
        db = app.extensions["anomaly_db"]
        assert pending(db) == 3  # stored with the records, not yet sent
        publisher = Publisher(db, *BROKER)
        try:
            assert publisher.drain_once() == 3
        finally:
            publisher.stop()
        got = sub.wait_for(3)
    finally:
        sub.close()
    assert pending(db) == 0
    by_id = {m["inspection_id"]: m for m in got}
    assert len(got) == 3 and set(by_id) == {a["inspection_id"] for a in answers}
    for a in answers:
        m = by_id[a["inspection_id"]]
        assert (m["verdict"], m["part_id"], m["model"], m["version"]) == (a["verdict"], a["part_id"], "tiny", 1)
        assert m["line"] == line and m["station"] == "st-7"
        assert m["regions"] == len(a["regions"])
    assert by_id[answers[-1]["inspection_id"]]["verdict"] == "NG"
    assert by_id[answers[-1]["inspection_id"]]["largest_region"]["area_px"] > 0
    assert set(sub.topics) == {f"anomaly/{line}/st-7/verdict"}
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InspectionRecord)) == 3


def test_a_broker_outage_delays_messages_and_loses_none(app, line):
    client = app.test_client()
    db = app.extensions["anomaly_db"]
    for i, image in enumerate(_parts()):
        _score(client, image, f"Q-{i}")
    away = Publisher(db, "127.0.0.1", 1, poll_seconds=0.2)  # nothing listens on port 1: the broker is away
    try:
        assert away.drain_once() == 0
        assert away.drain_once() == 0
    finally:
        away.stop()
    assert pending(db) == 3
    _score(client, _parts()[0], "Q-late")  # recorded during the outage too
    sub = Subscriber(line)
    back = Publisher(db, *BROKER).start()  # the broker is back
    try:
        got = sub.wait_for(4)
    finally:
        back.stop()
        sub.close()
    assert sorted(m["part_id"] for m in got) == ["Q-0", "Q-1", "Q-2", "Q-late"]
    assert pending(db) == 0


def test_two_publishers_send_each_message_once(app, line):
    client = app.test_client()
    db = app.extensions["anomaly_db"]
    parts = _parts()
    for i in range(12):
        _score(client, parts[i % 3], f"R-{i}")
    sub = Subscriber(line)
    publishers = [Publisher(db, *BROKER).start() for _ in range(2)]
    try:
        got = sub.wait_for(12)
        time.sleep(0.5)  # a duplicate would arrive now
    finally:
        for p in publishers:
            p.stop()
        sub.close()
    ids = [m["inspection_id"] for m in got]
    assert len(ids) == 12 and len(set(ids)) == 12
    with db.session() as s:
        rows = s.scalars(sa.select(OutboxMessage)).all()
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows)


def test_no_broker_configured_writes_no_messages(store, tmp_path):
    app = service_app(store, tmp_path)
    try:
        _score(app.test_client(), _parts()[0], "S-1")
        assert app.extensions["anomaly_verdict_topic"] is None
        assert pending(app.extensions["anomaly_db"]) == 0
    finally:
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()
