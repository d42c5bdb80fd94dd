"""Hostile requests: foreign Host names, opaque origins, control characters, open redirects, bounds."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from anomaly.cli.serve import served_hosts
from service.auth import create_api_key
from service.testing import make_part, png_bytes, service_app


@pytest.fixture(scope="module")
def app(store, tmp_path_factory):
    app = service_app(store, tmp_path_factory.mktemp("guards-app"))
    yield app
    app.extensions["anomaly_db"].dispose()


def test_dns_rebinding_host_is_refused_before_anything_runs(client, app):
    # The reproducer: a page on evil.example rebinds its name to 127.0.0.1 and moves thresholds.
    versions = len(app.extensions["anomaly_store"].versions("tiny"))
    r = client.post("/api/v1/models/tiny/thresholds", json={"t_ng": 3.0},
                    headers={"Host": "evil.example:8100", "Origin": "http://evil.example:8100"})
    assert r.status_code == 400
    assert len(app.extensions["anomaly_store"].versions("tiny")) == versions
    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_from_the_configuration(store, tmp_path):
    app = service_app(store, tmp_path, ALLOWED_HOSTS="inspect.line3.example, 10.1.2.3")
    client = app.test_client()
    assert client.get("/healthz", headers={"Host": "inspect.line3.example:8000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "10.1.2.3"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "10.1.2.4"}).status_code == 400
    app.extensions["anomaly_db"].dispose()


def test_anomaly_serve_allows_the_bound_address_and_named_hosts():
    assert served_hosts("10.1.2.3") == ["10.1.2.3"]
    assert served_hosts("127.0.0.1", ["Inspect.Example"]) == ["inspect.example", "127.0.0.1"]
    assert "[fd00::1]" in served_hosts("fd00::1")
    assert served_hosts("0.0.0.0")  # this machine's own names


@pytest.mark.parametrize("origin", ["null", "http://evil.example", "http://localhost.evil.example"])
def test_foreign_and_opaque_origins_are_refused_without_a_key(client, origin):
    r = client.post("/api/v1/models/tiny/rollback", headers={"Origin": origin})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"


@pytest.mark.parametrize("url", [
    "/api/v1/inspections?model=%00",
    "/api/v1/inspections?part_id=a%1bb",
    "/api/v1/yield?model=x%00",
    "/api/v1/jobs?model=%07",
    "/records?model=%00",
    "/api/v1/inspections?mo%00del=x",
])
def test_control_characters_in_the_query_are_400(client, url):
    r = client.get(url, headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.get_json()["code"] == "bad_request"


def test_control_characters_in_fields_and_json_are_400_and_store_nothing(client, app, part_png):
    before = client.get("/api/v1/inspections").get_json()["total"]
    r = client.post("/api/v1/models/tiny/score", data={"image": (__import__("io").BytesIO(part_png), "p.png"),
                                                        "part_id": "line\x003"})
    assert r.status_code == 400 and "part_id" in r.get_json()["message"]
    r = client.post("/api/v1/models/tiny/thresholds", json={"t_ng": 3.0, "reason": "because\x00"})
    assert r.status_code == 400 and "reason" in r.get_json()["message"]
    assert client.get("/api/v1/inspections").get_json()["total"] == before
    # Tabs and line breaks in free text stay allowed.
    r = client.post("/api/v1/models/tiny/score?part_id=ok-1", data=part_png, content_type="image/png")
    assert r.status_code == 200


@pytest.mark.postgres
def test_control_characters_on_postgresql_are_400_not_500(store, tmp_path, postgres_settings, part_png):
    app = service_app(store, tmp_path, **postgres_settings)
    client = app.test_client()
    for url in ("/api/v1/inspections?model=%00", "/api/v1/yield?model=%00", "/api/v1/jobs?model=%00"):
        assert client.get(url).status_code == 400, url
    inspection = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png").get_json()
    r = client.post(f"/api/v1/inspections/{inspection['inspection_id']}/feedback",
                    json={"kind": "false_alarm", "note": "n\x00"})
    assert r.status_code == 400
    app.extensions["anomaly_db"].dispose()


@pytest.mark.parametrize("target", ["/%09/evil.example", "//evil.example", "/%5Cevil.example", "https://evil.example",
                                    "/%0d%0a/evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_the_site(store, tmp_path, target):
    app = service_app(store, tmp_path, REQUIRE_API_KEYS=True)
    key = create_api_key(app.extensions["anomaly_db"], "alice", "admin")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    r = client.post(f"/login?next={target}", data={"api_key": key, "csrf_token": token})
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/") and not r.headers["Location"].startswith("//")
    assert "evil" not in r.headers["Location"]
    page = client.get("/login").get_data(as_text=True)  # signing in starts a new session, with a new token
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    r = client.post("/login?next=/records%3Fmodel%3Dtiny", data={"api_key": key, "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/records?model=tiny"
    app.extensions["anomaly_db"].dispose()


def test_metrics_and_readiness_details_need_a_key_where_keys_are_required(store, tmp_path):
    app = service_app(store, tmp_path, REQUIRE_API_KEYS=True)
    key = create_api_key(app.extensions["anomaly_db"], "prometheus", "score")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}  # no names, no paths
    detailed = client.get("/readyz", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert detailed["models"][0]["name"] == "tiny"
    app.extensions["anomaly_db"].dispose()


def test_one_broken_model_does_not_take_the_service_out(store, tmp_path):
    app = service_app(store, tmp_path)
    root = Path(app.extensions["anomaly_store"].root)
    shutil.copytree(root / "tiny", root / "broken")
    (root / "broken" / "1" / "manifest.json").chmod(0o644)
    (root / "broken" / "1" / "manifest.json").write_text("{}")
    client = app.test_client()
    body = client.get("/readyz").get_json()
    assert body["ready"] and "broken" in body["errors"]
    assert client.get("/readyz?model=tiny").status_code == 200
    assert client.get("/readyz?model=broken").status_code == 503
    app.extensions["anomaly_db"].dispose()


@pytest.mark.parametrize("body", [{"pixel_rate": 1e-320}, {"t_ng": 1e308}, {"target_frr": 1e-300},
                                  {"t_ng": 1e9, "t_review": 1e9}, {"review_rate": 0.9}, {"t_ng": -1e300}])
def test_absurd_threshold_moves_are_400(client, app, body):
    versions = len(app.extensions["anomaly_store"].versions("tiny"))
    r = client.post("/api/v1/models/tiny/thresholds", json=body)
    assert r.status_code == 400, r.get_json()
    assert len(app.extensions["anomaly_store"].versions("tiny")) == versions


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 10000, 3), (96, 96), (96, 400, 3)])
def test_images_unlike_the_model_are_422_and_recorded_nowhere(client, shape):
    before = client.get("/api/v1/inspections").get_json()["total"]
    image = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    r = client.post("/api/v1/models/tiny/score", data=png_bytes(image), content_type="image/png")
    assert r.status_code == 422 and r.get_json()["code"] == "input_geometry"
    assert client.get("/api/v1/inspections").get_json()["total"] == before


# -- bounded work: scoring slots, idempotent retries ------------------------------------------------
def test_a_saturated_worker_answers_503_with_retry_after_and_stores_nothing(store, tmp_path, part_png):
    app = service_app(store, tmp_path, SCORING_WAIT_SECONDS=0.05)
    client = app.test_client()
    slots = app.extensions["anomaly_scoring_slots"]
    assert slots.acquire(timeout=1)  # another request is being judged in this worker
    try:
        r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
        assert r.status_code == 503 and r.get_json()["code"] == "busy" and r.headers["Retry-After"] == "1"
        assert client.get("/healthz").status_code == 200  # answered outside the scoring path
    finally:
        slots.release()
    assert client.get("/api/v1/inspections").get_json()["total"] == 0
    assert client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png").status_code == 200
    app.extensions["anomaly_db"].dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_overrides(request):
    return {} if request.param == "sqlite" else request.getfixturevalue("postgres_settings")


def test_a_retry_with_the_same_idempotency_key_returns_the_stored_answer(store, tmp_path, part_png, db_overrides):
    app = service_app(store, tmp_path, **db_overrides)
    client = app.test_client()
    key = {"Idempotency-Key": "plc-7-part-000123"}
    first = client.post("/api/v1/models/tiny/score?part_id=p-123", data=part_png, content_type="image/png",
                        headers=key)
    again = client.post("/api/v1/models/tiny/score?part_id=p-123", data=part_png, content_type="image/png",
                        headers=key)
    assert first.status_code == again.status_code == 200
    one, two = first.get_json(), again.get_json()
    assert two["replayed"] and "replayed" not in one
    assert two["inspection_id"] == one["inspection_id"] and two["verdict"] == one["verdict"]
    assert two["score"] == one["score"] and two["regions"] == one["regions"]
    assert client.get("/api/v1/inspections").get_json()["total"] == 1
    # The same key with another part is a client bug: refused, nothing recorded.
    other = png_bytes(make_part(np.random.default_rng(99)))
    r = client.post("/api/v1/models/tiny/score", data=other, content_type="image/png", headers=key)
    assert r.status_code == 409 and r.get_json()["code"] == "idempotency_key_reused"
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                    headers={"Idempotency-Key": "has space"})
    assert r.status_code == 400
    # Batches too; keys are per client, and a new key is a new record.
    files = {"images": [(__import__("io").BytesIO(part_png), "a.png"), (__import__("io").BytesIO(other), "b.png")]}
    batch = client.post("/api/v1/models/tiny/score-batch", data=files, headers={"Idempotency-Key": "batch-1"})
    files = {"images": [(__import__("io").BytesIO(part_png), "a.png"), (__import__("io").BytesIO(other), "b.png")]}
    repeat = client.post("/api/v1/models/tiny/score-batch", data=files, headers={"Idempotency-Key": "batch-1"})
    assert [r["inspection_id"] for r in repeat.get_json()["results"]] == \
        [r["inspection_id"] for r in batch.get_json()["results"]]
    assert client.get("/api/v1/inspections").get_json()["total"] == 3
    assert client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                       headers={"Idempotency-Key": "plc-7-part-000124"}).status_code == 200
    assert client.get("/api/v1/inspections").get_json()["total"] == 4
    app.extensions["anomaly_db"].dispose()


def test_training_jobs_are_bounded_per_model_and_per_client(store, tmp_path, monkeypatch):
    import io
    import json as json_module

    from service.jobs import TrainingJobs

    release = threading.Event()
    monkeypatch.setattr(TrainingJobs, "_run", lambda self, job_id, req: release.wait(30))  # jobs stay queued
    app = service_app(store, tmp_path, MAX_JOBS_PER_MODEL=1, MAX_JOBS_PER_CLIENT=2)
    client = app.test_client()

    def train(name: str):
        rng = np.random.default_rng(7)
        files = [(io.BytesIO(png_bytes(make_part(rng))), f"{i}.png") for i in range(3)]
        return client.post(f"/api/v1/models/{name}/versions", content_type="multipart/form-data",
                           data={"images": files, "params": json_module.dumps({"image_size": 64})})

    try:
        assert train("a").status_code == 202
        second = train("a")
        assert second.status_code == 429 and second.get_json()["code"] == "too_many_jobs"
        assert second.headers["Retry-After"]
        assert train("b").status_code == 202
        assert train("c").status_code == 429  # this client's third job
        assert len(client.get("/api/v1/jobs").get_json()["jobs"]) == 2
    finally:
        release.set()
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()


def test_rejected_gallery_serves_small_thumbnails(store, tmp_path):
    # The archive renders a 256 px JPEG once: a page of full-size overlays weighed 43 MB.
    from datetime import datetime

    import cv2

    from service.archive import Archive

    archive = Archive(tmp_path / "archive", "all")
    image = np.tile(make_part(np.random.default_rng(5)), (10, 10, 1))  # 960 x 960
    amap = np.zeros(image.shape[:2], np.float32)
    amap[300:340, 300:340] = 1.0
    rel = archive.write("r1", "tiny", datetime(2026, 12, 3), png_bytes(image), amap)
    overlay = archive.file(rel, "overlay", vmin=0.0, vmax=1.0, pixel_threshold=0.5, label="NG")
    thumbnail = archive.file(rel, "thumbnail", vmin=0.0, vmax=1.0, pixel_threshold=0.5, label="NG")
    small = cv2.imread(str(thumbnail))
    assert small.shape[:2] == (256, 256) and thumbnail.stat().st_size < overlay.stat().st_size / 4
    assert archive.file(rel, "thumbnail") == thumbnail  # kept, not rendered again
    app = service_app(store, tmp_path / "app", ARCHIVE="all")
    client = app.test_client()
    scored = client.post("/api/v1/models/tiny/score", data=png_bytes(make_part(np.random.default_rng(6))),
                         content_type="image/png").get_json()
    with client.get(f"/api/v1/inspections/{scored['inspection_id']}/thumbnail") as r:
        assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert "thumbnail" in client.get(f"/api/v1/inspections/{scored['inspection_id']}").get_json()["files"]
    app.extensions["anomaly_db"].dispose()


def test_a_full_store_refuses_new_versions_with_507(store, tmp_path):
    app = service_app(store, tmp_path, MAX_VERSIONS_PER_MODEL=2)
    client = app.test_client()
    t_ng = client.get("/api/v1/models/tiny/versions/1").get_json()["calibration"]["t_ng"]
    assert client.post("/api/v1/models/tiny/thresholds", json={"t_ng": t_ng * 2}).status_code == 201
    r = client.post("/api/v1/models/tiny/thresholds", json={"t_ng": t_ng * 3})
    assert r.status_code == 507 and r.get_json()["code"] == "store_full"
    assert app.extensions["anomaly_store"].versions("tiny") == [1, 2]
    app.extensions["anomaly_db"].dispose()
    app = service_app(store, tmp_path / "quota", STORE_QUOTA_MB=0.001)
    r = app.test_client().post("/api/v1/models/tiny/thresholds", json={"t_ng": t_ng * 2})
    assert r.status_code == 507 and "quota" in r.get_json()["message"]
    app.extensions["anomaly_db"].dispose()


def test_a_part_judged_past_the_deadline_is_not_recorded(store, tmp_path, part_png):
    app = service_app(store, tmp_path, SCORING_DEADLINE_SECONDS=0.0)
    client = app.test_client()
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    assert r.status_code == 503 and r.get_json()["code"] == "deadline_exceeded" and r.headers["Retry-After"]
    assert client.get("/api/v1/inspections").get_json()["total"] == 0
    app.extensions["anomaly_db"].dispose()


@pytest.mark.postgres
def test_records_page_with_a_30_digit_page_number_on_postgresql(store, tmp_path, postgres_settings):
    # Found by benchmarks/service_inputs.py: the offset overflowed PostgreSQL's BIGINT (500).
    app = service_app(store, tmp_path, **postgres_settings)
    r = app.test_client().get("/records?model=999999999999999999999999999999&page=" + "9" * 30)
    assert r.status_code == 200
    app.extensions["anomaly_db"].dispose()
