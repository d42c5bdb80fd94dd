"""The drift watch: unchanged goods raise no alarm, a lighting change raises one within a stated number of parts.

Right answers built in: a PatchCore's own scores of 2,000 freshly generated good parts
(the same recipe as its goods) keep both CUSUMs under the threshold; the same parts under
a brightness and contrast shift cross it within 60 parts; through the service, the record
that crosses it sets the alarm, `/metrics` and the drift endpoint show it, and a reset
clears it.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import sqlalchemy as sa

from anomaly.calibration import Calibration
from anomaly.drift import ARL0, H, DriftReference, assess, cusum
from anomaly.store import ModelStore
from anomaly.training import TrainingOptions, train_into
from service.db import OutboxMessage
from service.testing import make_part, png_bytes, service_app

pytestmark = pytest.mark.slow

#: The lighting change of the tests: brighter by 25 levels and 15 % more contrast.
GAIN, OFFSET = 1.15, 25.0


def lit(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * GAIN + OFFSET, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def plate_store(tmp_path_factory):
    """A store holding ``plate``: PatchCore at 64 px on 40 generated goods, calibrated over 5 folds.

    (The shared ``tiny`` model's 8 goods in 2 folds make fold models of 4 goods, whose
    held-out scores sit far above what the final model gives new goods: a reference so
    pessimistic that nothing drifts past it.)"""
    root = tmp_path_factory.mktemp("drift-store")
    rng = np.random.default_rng(5)
    goods = [make_part(rng) for _ in range(40)]
    train_into(ModelStore(root), "plate", "patchcore", goods, TrainingOptions(detection=False),
               params={"image_size": 64})
    return root


@pytest.fixture(scope="module")
def model(plate_store):
    return ModelStore(plate_store).load("plate")


def _scores(bundle, images, batch: int = 64) -> np.ndarray:
    return np.concatenate([bundle.detector.score(images[i : i + batch]).scores for i in range(0, len(images), batch)])


def test_cusum_and_threshold():
    assert H == pytest.approx(np.log(ARL0))
    np.testing.assert_allclose(cusum([1.0, -3.0, 2.0, 0.5]), [1.0, 0.0, 2.0, 2.5])
    cal = Calibration(t_ng=10.0, t_review=8.0, good_scores=list(np.linspace(0, 9, 50)),
                      expected={"review_fraction": 0.03, "frr": 0.01}, scale={"center": 4.5})
    ref = DriftReference.from_calibration(cal)
    assert ref.p_review == pytest.approx(0.04) and ref.good_median == pytest.approx(4.5)
    assert ref.increments(9.0) == {"review": pytest.approx(np.log(3.0)), "median": pytest.approx(np.log(1.5))}
    assert DriftReference.from_calibration(Calibration()) is None


def test_unchanged_goods_raise_no_alarm_and_a_lighting_change_does(model):
    ref = DriftReference.from_calibration(model.calibration)
    rng = np.random.default_rng(2026)
    fresh = [make_part(rng) for _ in range(2000)]
    scores = _scores(model, fresh)
    cal = model.calibration
    unchanged = assess(ref, scores, [cal.verdict(s) for s in scores], [cal.calibrated(s) for s in scores])
    assert not unchanged["alarm"], unchanged["tests"]
    assert unchanged["tests"]["median"]["max"] < H and unchanged["tests"]["review"]["max"] < H

    shifted = _scores(model, [lit(image) for image in fresh[:200]])
    changed = assess(ref, shifted, [cal.verdict(s) for s in shifted], [cal.calibrated(s) for s in shifted])
    assert changed["alarm"]
    first = min(t["alarm_at"] for t in changed["tests"].values() if t["alarm_at"] is not None)
    assert first < 60, changed["tests"]


def test_the_service_raises_shows_and_resets_the_alarm(plate_store, tmp_path):
    # A broker configured but no publisher here: the alarm's message must wait in the outbox.
    app = service_app(plate_store, tmp_path, MQTT_HOST="127.0.0.1", MQTT_PUBLISHER=False, LINE="l1", STATION="s1")
    client = app.test_client()
    try:
        rng = np.random.default_rng(11)
        ids = []
        for i in range(80):
            r = client.post("/api/v1/models/plate/score",
                            data={"image": (io.BytesIO(png_bytes(lit(make_part(rng)))), "p.png")},
                            content_type="multipart/form-data")
            assert r.status_code == 200, r.get_json()
            ids.append(r.get_json()["inspection_id"])
            state = client.get("/api/v1/models/plate/drift").get_json()["state"]
            if state["alarm"]:
                break
        assert state["alarm"], state
        assert state["alarm_inspection_id"] == ids[-1]  # set by the record that crossed the threshold
        assert max(state["cusum_review"], state["cusum_median"]) >= H
        body = client.get("/api/v1/models/plate/drift").get_json()
        assert body["recent"]["alarm"] and body["recent"]["n"] == len(ids)
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'anomaly_drift_alarm{model="plate",version="1"} 1.0' in metrics
        # (another client: a page visit gives a session cookie, and cookie-borne API posts need a CSRF token)
        page = app.test_client().get("/records?model=plate").get_data(as_text=True)
        assert 'id="drift-chart"' in page and "ALARM" in page and ids[-1] in page
        with app.extensions["anomaly_db"].session() as session:
            alarms = session.scalars(sa.select(OutboxMessage).where(OutboxMessage.topic == "anomaly/l1/s1/alarm")).all()
        assert len(alarms) == 1 and json.loads(alarms[0].payload)["inspection_id"] == ids[-1]
        assert client.post("/api/v1/models/plate/drift/reset", json={}).get_json()["reset"]
        assert not client.get("/api/v1/models/plate/drift").get_json()["state"]["alarm"]
    finally:
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()
