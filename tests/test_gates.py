"""Promotion gates: a version that misses a part the line confirmed defective is refused, with the reason.

Right answers built in: a pasted defect judged NG and confirmed, and a defect the model
passed and an operator marked as a miss, make the regression set; a version whose moved
thresholds pass both is refused promotion (409 ``gate_failed`` naming the parts) unless
forced, which is recorded; a version that flags them goes through. Every gate is shown on
the model's page.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import sqlalchemy as sa

from service.db import PromotionGate
from service.testing import make_part, png_bytes, service_app

pytestmark = pytest.mark.slow


@pytest.fixture
def app(store, tmp_path):
    app = service_app(store, tmp_path, ARCHIVE="all")
    yield app
    app.extensions["anomaly_jobs"].shutdown(wait=True)
    app.extensions["anomaly_db"].dispose()


def _score(client, image: np.ndarray) -> dict:
    r = client.post("/api/v1/models/tiny/score", data={"image": (io.BytesIO(png_bytes(image)), "p.png")},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _new_version(client, **thresholds) -> int:
    r = client.post("/api/v1/models/tiny/thresholds", json={"version": 1, **thresholds})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["version"]


def test_a_version_that_misses_a_confirmed_defect_is_refused(app):
    client = app.test_client()
    bad = make_part(np.random.default_rng(5))
    bad[30:50, 55:75] = 250
    ng = _score(client, bad)
    assert ng["verdict"] == "NG"
    assert client.post(f"/api/v1/inspections/{ng['inspection_id']}/feedback",
                       json={"kind": "confirmed"}).status_code == 201
    faint = make_part(np.random.default_rng(6))
    faint[40:44, 40:44] = np.clip(faint[40:44, 40:44].astype(int) + 12, 0, 255)
    passed = _score(client, faint)
    if passed["verdict"] == "GOOD":  # a miss the line found later
        assert client.post(f"/api/v1/inspections/{passed['inspection_id']}/feedback",
                           json={"kind": "miss"}).status_code == 201

    blind = _new_version(client, t_review=1500.0, t_ng=1900.0)  # far above any score: passes everything
    r = client.post("/api/v1/models/tiny/promote", json={"version": blind})
    assert r.status_code == 409 and r.get_json()["code"] == "gate_failed", r.get_json()
    assert ng["inspection_id"] in r.get_json()["message"]
    assert client.get("/api/v1/models/tiny").get_json()["production"] == 1

    forced = client.post("/api/v1/models/tiny/promote", json={"version": blind, "force": True})
    assert forced.status_code == 200 and forced.get_json()["forced"]
    assert client.get("/api/v1/models/tiny").get_json()["production"] == blind

    # Review from just below the missed part's score, NG where version 1 had it: flags both.
    t_ng = client.get("/api/v1/models/tiny/versions/1").get_json()["calibration"]["t_ng"]
    lowest = min(ng["score"], passed["score"])
    sharp = _new_version(client, t_review=0.99 * lowest, t_ng=max(t_ng, lowest))
    ok = client.post("/api/v1/models/tiny/promote", json={"version": sharp})
    assert ok.status_code == 200, ok.get_json()
    gate = ok.get_json()["gate"]
    assert gate["passed"] and gate["missed"] == [] and gate["regression_parts"] >= 1

    with app.extensions["anomaly_db"].session() as s:
        rows = s.scalars(sa.select(PromotionGate).order_by(PromotionGate.id)).all()
    assert [(r.model_version, r.passed, r.forced, r.promoted) for r in rows] == [
        (blind, False, False, False), (blind, False, True, True), (sharp, True, False, True)]
    page = client.get("/models/tiny").get_data(as_text=True)
    assert 'id="gates"' in page and "failed, forced" in page


def test_confirmed_feedback_only_on_rejected_parts(app):
    client = app.test_client()
    good = _score(client, make_part(np.random.default_rng(8)))
    assert good["verdict"] == "GOOD"
    r = client.post(f"/api/v1/inspections/{good['inspection_id']}/feedback", json={"kind": "confirmed"})
    assert r.status_code == 409


def test_the_command_line_promotes_through_the_same_gate(app, tmp_path, monkeypatch, capsys):
    from anomaly.cli.main import main

    for key in ("ANOMALY_DATABASE_URL", "ANOMALY_DATABASE_SCHEMA", "ANOMALY_STORE", "ANOMALY_INSTANCE_PATH",
                "ANOMALY_PRELOAD_MODELS", "ANOMALY_MQTT_PUBLISHER"):
        monkeypatch.delenv(key, raising=False)  # restored after the test: the command sets them in-process
    client = app.test_client()
    bad = make_part(np.random.default_rng(5))
    bad[30:50, 55:75] = 250
    ng = _score(client, bad)
    assert client.post(f"/api/v1/inspections/{ng['inspection_id']}/feedback",
                       json={"kind": "confirmed"}).status_code == 201
    blind = _new_version(client, t_review=1500.0, t_ng=1900.0)
    store, db_url = app.config["STORE"], app.config["DATABASE_URL"]
    common = ["--store", store, "--db-url", db_url, "--instance", app.config["INSTANCE_PATH"]]

    assert main(["models", "promote", "tiny", str(blind), *common]) == 2
    err = capsys.readouterr().err
    assert '"gate_failed"' in err and ng["inspection_id"] in err
    assert client.get("/api/v1/models/tiny").get_json()["production"] == 1

    assert main(["models", "promote", "tiny", str(blind), *common, "--force"]) == 0
    assert '"forced": true' in capsys.readouterr().out
    assert client.get("/api/v1/models/tiny").get_json()["production"] == blind
    with app.extensions["anomaly_db"].session() as s:
        rows = s.scalars(sa.select(PromotionGate).order_by(PromotionGate.id)).all()
    assert [(r.passed, r.forced, r.promoted) for r in rows] == [(False, False, False), (False, True, True)]
    assert rows[-1].by.startswith("cli:")


def test_the_command_line_says_so_when_the_database_is_down(app, monkeypatch, capsys):
    from anomaly.cli.main import main

    for key in ("ANOMALY_DATABASE_URL", "ANOMALY_DATABASE_SCHEMA", "ANOMALY_STORE", "ANOMALY_INSTANCE_PATH",
                "ANOMALY_PRELOAD_MODELS", "ANOMALY_MQTT_PUBLISHER"):
        monkeypatch.delenv(key, raising=False)
    blind = _new_version(app.test_client(), t_review=1500.0, t_ng=1900.0)
    down = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    assert main(["models", "promote", "tiny", str(blind), "--store", app.config["STORE"], "--db-url", down]) == 2
    err = capsys.readouterr().err
    assert '"storage_unavailable"' in err and "production is version 1" in err and "Traceback" not in err
    assert app.test_client().get("/api/v1/models/tiny").get_json()["production"] == 1
