"""The JSON API through Flask's test client: scoring, batches, models, training, records, errors."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from anomaly.bundle import FORMAT_VERSION
from service import create_app
from service.db import InspectionRecord
from service.testing import finished_job, make_part, make_test_config, png_bytes, service_app


@pytest.fixture(scope="module")
def app(store: Path, tmp_path_factory: pytest.TempPathFactory):
    app = service_app(store, tmp_path_factory.mktemp("api-app"), ARCHIVE="all")
    yield app
    app.extensions["anomaly_jobs"].shutdown(wait=True)
    app.extensions["anomaly_db"].dispose()


@pytest.fixture(scope="module")
def defect_png() -> bytes:
    image = make_part(np.random.default_rng(43))
    image[30:50, 55:75] = 250
    return png_bytes(image)


def _count(app, **where) -> int:
    with app.extensions["anomaly_db"].session() as s:
        stmt = sa.select(sa.func.count()).select_from(InspectionRecord)
        for key, value in where.items():
            stmt = stmt.where(getattr(InspectionRecord, key) == value)
        return s.scalar(stmt)


def _multipart(png: bytes, **fields):
    return {"image": (io.BytesIO(png), "part.png"), **fields}


# -- scoring ---------------------------------------------------------------------------------------
def test_score_multipart_answers_verdict_thresholds_and_record(client, app, part_png):
    r = client.post("/api/v1/models/tiny/score", data=_multipart(part_png, part_id="A-1"),
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["verdict"] in ("GOOD", "REVIEW", "NG")
    assert body["model"] == {"name": "tiny", "version": 1, "detector": "patchcore"}
    assert body["part_id"] == "A-1"
    assert body["thresholds"]["t_ng"] >= body["thresholds"]["t_review"]
    assert isinstance(body["regions"], list)
    assert set(body["timings_ms"]) >= {"decode", "inference", "store", "total"}
    assert "map" not in body and "overlay_png_base64" not in body
    r2 = client.get(f"/api/v1/inspections/{body['inspection_id']}")
    assert r2.status_code == 200
    stored = r2.get_json()
    assert stored["part_id"] == "A-1" and stored["verdict"] == body["verdict"]
    assert stored["model"]["version"] == 1 and stored["score"] == pytest.approx(body["score"])


def test_score_raw_body_with_map_and_overlay(client, part_png):
    r = client.post("/api/v1/models/tiny/score?part_id=raw-1&return_map=true&return_overlay=1", data=part_png,
                    content_type="image/png")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["part_id"] == "raw-1"
    overlay = base64.b64decode(body["overlay_png_base64"])
    heat = base64.b64decode(body["map"]["png_base64"])
    assert overlay.startswith(b"\x89PNG") and heat.startswith(b"\x89PNG")
    assert body["map"]["vmax"] > body["map"]["vmin"]


def test_same_image_same_score_as_in_process(client, app, part_png):
    from anomaly.imageio import decode_image
    from anomaly.inspect import inspect

    bundle = app.extensions["anomaly_registry"].get("tiny").bundle
    (expected,) = inspect(bundle, [decode_image(part_png)])
    body = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png").get_json()
    assert body["score"] == pytest.approx(expected.score, rel=1e-5)
    assert body["verdict"] == expected.verdict


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"not an image at all", "image/png", 400, "invalid_image"),
        (b"", "application/octet-stream", 400, "invalid_image"),
        (b"hello", "text/plain", 415, "unsupported_media_type"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
def test_score_errors_are_json_and_store_nothing(client, app, data, content_type, status, code):
    before = _count(app)
    r = client.post("/api/v1/models/tiny/score", data=data, content_type=content_type)
    assert r.status_code == status
    assert r.get_json()["code"] == code and r.get_json()["message"]
    assert _count(app) == before


def test_truncated_png_is_400(client, part_png):
    r = client.post("/api/v1/models/tiny/score", data=part_png[: len(part_png) // 2], content_type="image/png")
    assert r.status_code == 400 and r.get_json()["code"] == "invalid_image"


def test_multipart_without_image_field_is_400(client):
    r = client.post("/api/v1/models/tiny/score", data={"part_id": "x"}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["code"] == "bad_request"


def test_unknown_model_and_version_are_404(client, part_png):
    assert client.post("/api/v1/models/nope/score", data=part_png,
                       content_type="image/png").get_json()["code"] == "model_not_found"
    r = client.post("/api/v1/models/tiny/score?version=9", data=part_png, content_type="image/png")
    assert r.status_code == 404 and r.get_json()["code"] == "model_not_found"
    assert client.get("/api/v1/models/..%2F..%2Fetc").status_code == 404
    assert client.get("/api/v1/models/tiny/versions/7").status_code == 404


def test_bad_options_are_400(client, part_png):
    r = client.post("/api/v1/models/tiny/score?return_map=maybe", data=part_png, content_type="image/png")
    assert r.status_code == 400 and "return_map" in r.get_json()["message"]
    r = client.post("/api/v1/models/tiny/score?version=x", data=part_png, content_type="image/png")
    assert r.status_code == 400
    r = client.post("/api/v1/models/tiny/score?part_id=" + "x" * 200, data=part_png, content_type="image/png")
    assert r.status_code == 400


def test_too_many_bytes_and_pixels_are_413(store, tmp_path, part_png):
    app = create_app(make_test_config(tmp_path, store, MAX_IMAGE_BYTES=2000, MAX_PIXELS=50 * 50))
    client = app.test_client()
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    r = client.post("/api/v1/models/tiny/score", data=big, content_type="image/png")
    assert r.status_code == 413 and r.get_json()["code"] in ("request_too_large", "image_too_large")
    r = client.post("/api/v1/models/tiny/score", data=_multipart(big), content_type="multipart/form-data")
    assert r.status_code == 413
    small = png_bytes(np.zeros((60, 60), np.uint8))  # few bytes, too many pixels
    assert len(small) < 2000
    r = client.post("/api/v1/models/tiny/score", data=small, content_type="image/png")
    assert r.status_code == 413 and r.get_json()["code"] == "image_too_large"
    assert _count(app) == 0


def test_model_without_production_version_is_409(store, tmp_path, part_png):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store, root)
    (root / "tiny" / "production.json").unlink()
    app = create_app(make_test_config(tmp_path, root))
    r = app.test_client().post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    assert r.status_code == 409 and r.get_json()["code"] == "model_not_ready"


# -- batches -------------------------------------------------------------------------------------
def test_batch_scores_and_records_every_part(client, app, part_png, defect_png):
    before = _count(app)
    r = client.post("/api/v1/models/tiny/score-batch?return_overlay=true", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(part_png), "a.png"), (io.BytesIO(defect_png), "b.png")],
                          "part_id": ["B-1", "B-2"]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert [x["part_id"] for x in body["results"]] == ["B-1", "B-2"]
    assert body["results"][1]["score"] > body["results"][0]["score"]
    assert all(x["batch_id"] == body["batch_id"] for x in body["results"])
    assert _count(app) == before + 2


def test_each_overlay_is_drawn_from_its_own_parts_inspection(client, app, part_png, defect_png):
    """A good part and a part with a pasted defect: each overlay is its own inspection drawn, not the other's."""
    from anomaly.imageio import decode_image
    from anomaly.inspect import inspect, render_overlay

    bundle = app.extensions["anomaly_registry"].get("tiny").bundle
    images = [decode_image(part_png), decode_image(defect_png)]
    expected = [render_overlay(bundle, image, found) for image, found in zip(images, inspect(bundle, images))]
    r = client.post("/api/v1/models/tiny/score-batch?return_overlay=true", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(part_png), "good.png"), (io.BytesIO(defect_png), "defect.png")]})
    assert r.status_code == 200, r.get_json()
    results = r.get_json()["results"]
    assert [x["verdict"] for x in results] == ["GOOD", "NG"]
    label_colour = {"GOOD": (80, 255, 80), "NG": (255, 80, 80)}  # anomaly.overlay's label text colours
    for i, (image, item) in enumerate(zip(images, results)):
        shown = decode_image(base64.b64decode(item["overlay_png_base64"])).astype(int)
        assert shown.shape == image.shape[:2] + (3,)
        assert np.abs(shown - expected[i]).mean() < 0.5 < np.abs(shown - expected[1 - i]).mean()
        corner = shown[:16, :60]  # the label box: "<verdict> <calibrated score>"
        for verdict, colour in label_colour.items():
            assert np.all(corner == colour, axis=-1).any() == (verdict == item["verdict"])


def test_batch_with_one_bad_image_stores_nothing(client, app, part_png):
    before = _count(app)
    r = client.post("/api/v1/models/tiny/score-batch", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(part_png), "a.png"), (io.BytesIO(b"junk"), "b.png")]})
    assert r.status_code == 400 and "image 1" in r.get_json()["message"]
    assert _count(app) == before


def test_batch_part_ids_must_match_images(client, part_png):
    r = client.post("/api/v1/models/tiny/score-batch", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(part_png), "a.png")], "part_id": ["x", "y"]})
    assert r.status_code == 400


# -- alignment failure, storage failure, unexpected errors ---------------------------------------------
def test_alignment_failure_is_409_and_recorded(client, app, part_png, monkeypatch):
    import anomaly.inspect
    from anomaly.errors import AlignmentError

    def fail(bundle, images):
        raise AlignmentError("template not found: best match 0.21, needs 0.6")

    monkeypatch.setattr(anomaly.inspect, "inspect", fail)
    before = _count(app, verdict="ALIGNMENT_FAILED")
    r = client.post("/api/v1/models/tiny/score?part_id=AL-1", data=part_png, content_type="image/png")
    assert r.status_code == 409
    body = r.get_json()
    assert body["code"] == "alignment_failed" and "template" in body["message"]
    assert body["verdict"] == "ALIGNMENT_FAILED" and body["inspection_id"]
    assert _count(app, verdict="ALIGNMENT_FAILED") == before + 1
    stored = client.get(f"/api/v1/inspections/{body['inspection_id']}").get_json()
    assert stored["verdict"] == "ALIGNMENT_FAILED" and stored["error"]["code"] == "alignment_failed"


def test_storage_failure_answers_503_and_keeps_nothing(client, app, defect_png, monkeypatch):
    from sqlalchemy.exc import OperationalError

    db = app.extensions["anomaly_db"]
    archive_root = Path(app.config["ARCHIVE_DIR"])
    files_before = sorted(archive_root.rglob("*")) if archive_root.exists() else []
    before = _count(app)

    def broken():
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(db, "sessions", broken)
    r = client.post("/api/v1/models/tiny/score", data=defect_png, content_type="image/png")
    monkeypatch.undo()
    assert r.status_code == 503 and r.get_json()["code"] == "storage_unavailable"
    assert "verdict" not in r.get_json()
    assert _count(app) == before
    assert (sorted(archive_root.rglob("*")) if archive_root.exists() else []) == files_before


def test_unexpected_error_is_500_json_without_trace(client, monkeypatch, part_png):
    import anomaly.inspect

    def boom(bundle, images):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(anomaly.inspect, "inspect", boom)
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    assert r.status_code == 500
    body = r.get_json()
    assert body["code"] == "internal_error" and body["request_id"]
    assert "Traceback" not in r.get_data(as_text=True) and "secret internal detail" not in r.get_data(as_text=True)


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.get_json()["code"] == "not_found"
    r = client.get("/api/v1/models/tiny/score")
    assert r.status_code == 405 and r.get_json()["code"] == "method_not_allowed"


# -- models -------------------------------------------------------------------------------------
def test_list_models_and_show_version(client):
    models = client.get("/api/v1/models").get_json()["models"]
    assert models[0]["name"] == "tiny" and models[0]["production"] == 1
    v = client.get("/api/v1/models/tiny/versions/1").get_json()
    assert v["detector"] == "patchcore" and v["calibration"]["t_ng"] > 0 and v["manifest"]["format_version"] == FORMAT_VERSION
    assert client.get("/api/v1/models/tiny").get_json()["versions"][0]["version"] == 1


def test_thresholds_promote_and_rollback(store, tmp_path, part_png):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store, root)
    app = create_app(make_test_config(tmp_path, root))
    client = app.test_client()
    t_ng = client.get("/api/v1/models/tiny/versions/1").get_json()["calibration"]["t_ng"]
    r = client.post("/api/v1/models/tiny/thresholds", json={"t_ng": t_ng * 10, "t_review": t_ng * 5,
                                                           "reason": "test"})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["version"] == 2 and r.get_json()["production"] == 1
    assert client.post("/api/v1/models/tiny/thresholds", json={}).status_code == 400
    assert client.post("/api/v1/models/tiny/thresholds", json={"t_ng": "x"}).status_code == 400

    r = client.post("/api/v1/models/tiny/promote", json={"version": 2})
    assert r.status_code == 200
    assert {k: r.get_json()[k] for k in ("name", "production", "previous")} == {"name": "tiny", "production": 2,
                                                                               "previous": 1}
    assert r.get_json()["gate"]["passed"] and not r.get_json()["forced"]  # nothing confirmed defective yet
    scored = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png").get_json()
    assert scored["model"]["version"] == 2 and scored["verdict"] == "GOOD"  # thresholds far above any score

    r = client.post("/api/v1/models/tiny/rollback")
    assert r.status_code == 200 and r.get_json()["production"] == 1
    scored = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png").get_json()
    assert scored["model"]["version"] == 1
    assert client.post("/api/v1/models/tiny/rollback").status_code == 409  # nothing earlier
    assert client.post("/api/v1/models/tiny/promote", json={"version": 5}).status_code == 404
    assert client.post("/api/v1/models/tiny/promote", json={}).status_code == 400
    assert client.post("/api/v1/models/tiny/promote", data="x", content_type="text/plain").status_code == 415


def test_promotion_by_another_process_is_seen(store, tmp_path, part_png):
    import shutil

    from anomaly.store import ModelStore
    from anomaly.thresholds import ThresholdChange, set_thresholds

    root = tmp_path / "store"
    shutil.copytree(store, root)
    app = create_app(make_test_config(tmp_path, root))
    client = app.test_client()
    assert client.post("/api/v1/models/tiny/score", data=part_png,
                       content_type="image/png").get_json()["model"]["version"] == 1
    set_thresholds(ModelStore(root), "tiny", 1, change=ThresholdChange(t_ng=60, t_review=60),
                   promote=True)  # like `anomaly models`
    assert client.post("/api/v1/models/tiny/score", data=part_png,
                       content_type="image/png").get_json()["model"]["version"] == 2


# -- training ---------------------------------------------------------------------------------------
def test_training_job_makes_a_new_model(tmp_path):
    app = create_app(make_test_config(tmp_path, tmp_path / "store"))
    client = app.test_client()
    rng = np.random.default_rng(7)
    files = [(io.BytesIO(png_bytes(make_part(rng))), f"../../etc/passwd{i}.png") for i in range(6)]
    r = client.post("/api/v1/models/fresh/versions", content_type="multipart/form-data",
                    data={"images": files, "params": json.dumps({"image_size": 64}), "promote": "true",
                          "n_folds": "2", "detection": "false"})
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert r.headers["Location"] == job["status_url"]
    job = finished_job(client, job, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["version"] == 1 and job["progress"] == 1.0
    assert not list(tmp_path.rglob("passwd*"))  # client file names are never paths
    assert client.get("/api/v1/models/fresh").get_json()["production"] == 1
    assert client.get("/api/v1/jobs").get_json()["jobs"][0]["job_id"] == job["job_id"]
    app.extensions["anomaly_jobs"].shutdown(wait=True)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"params": "{not json"}, "bad_request"),
        ({"detector": "no-such-detector"}, "bad_request"),
        ({"params": json.dumps({"imag_size": 64})}, "bad_request"),
    ],
)
def test_training_request_errors(client, data, code):
    rng = np.random.default_rng(1)
    files = [(io.BytesIO(png_bytes(make_part(rng, size=32))), "a.png") for _ in range(2)]
    r = client.post("/api/v1/models/other/versions", content_type="multipart/form-data", data={"images": files, **data})
    assert r.status_code == 400 and r.get_json()["code"] == code


def test_training_needs_two_decodable_images(client):
    r = client.post("/api/v1/models/other/versions", content_type="multipart/form-data",
                    data={"images": [(io.BytesIO(b"junk"), "a.png"), (io.BytesIO(b"junk"), "b.png")]})
    assert r.status_code == 400 and r.get_json()["code"] == "invalid_image"
    r = client.post("/api/v1/models/bad name!/versions", content_type="multipart/form-data", data={})
    assert r.status_code == 400
    assert client.get("/api/v1/jobs/nope").status_code == 404


# -- records, feedback, yield ---------------------------------------------------------------------
def test_records_filters_and_feedback(client, app, part_png, defect_png):
    ok = client.post("/api/v1/models/tiny/score?part_id=R-1", data=part_png, content_type="image/png").get_json()
    bad = client.post("/api/v1/models/tiny/score?part_id=R-2", data=defect_png, content_type="image/png").get_json()
    assert client.get("/api/v1/inspections?part_id=R-1").get_json()["items"][0]["inspection_id"] == ok["inspection_id"]
    listed = client.get("/api/v1/inspections?model=tiny&limit=500").get_json()
    assert listed["total"] >= 2
    stamps = [x["created_at"] for x in listed["items"]]
    assert stamps == sorted(stamps, reverse=True)
    verdict = bad["verdict"]
    only = client.get(f"/api/v1/inspections?verdict={verdict}&limit=1000").get_json()["items"]
    assert only and all(x["verdict"] == verdict for x in only)
    assert client.get("/api/v1/inspections?since=2999-01-01").get_json()["total"] == 0
    today = ok["created_at"][:10]
    assert client.get(f"/api/v1/inspections?since={today}&until={today}").get_json()["total"] >= 2
    assert client.get("/api/v1/inspections?since=yesterday").status_code == 400
    assert client.get("/api/v1/inspections?verdict=MAYBE").status_code == 400
    assert client.get("/api/v1/inspections?limit=0").status_code == 400

    kind = "false_alarm" if verdict != "GOOD" else "miss"
    wrong = "miss" if kind == "false_alarm" else "false_alarm"
    r = client.post(f"/api/v1/inspections/{bad['inspection_id']}/feedback", json={"kind": kind, "note": "checked"})
    assert r.status_code == 201 and r.get_json()["kind"] == kind
    assert client.post(f"/api/v1/inspections/{bad['inspection_id']}/feedback", json={"kind": wrong}).status_code == 409
    assert client.post(f"/api/v1/inspections/{bad['inspection_id']}/feedback", json={"kind": "x"}).status_code == 400
    assert client.post("/api/v1/inspections/nope/feedback", json={"kind": kind}).status_code == 404
    record = client.get(f"/api/v1/inspections/{bad['inspection_id']}").get_json()
    assert record["feedback"][0]["note"] == "checked"
    assert client.get(f"/api/v1/inspections?feedback={kind}").get_json()["total"] >= 1

    days = client.get("/api/v1/yield?model=tiny").get_json()["days"]
    assert days[-1]["model"] == "tiny" and days[-1]["total"] >= 2
    assert days[-1]["first_pass_yield"] == pytest.approx(days[-1]["good"] / days[-1]["total"])


def test_archived_files_are_served(client, defect_png):
    body = client.post("/api/v1/models/tiny/score", data=defect_png, content_type="image/png").get_json()
    record = client.get(f"/api/v1/inspections/{body['inspection_id']}").get_json()
    assert record["archived"] is True
    for kind in ("image", "map", "overlay"):
        with client.get(record["files"][kind]) as r:
            assert r.status_code == 200 and r.data.startswith(b"\x89PNG")
    assert client.get(f"/api/v1/inspections/{body['inspection_id']}/secrets").status_code == 404


# -- operations and the document -----------------------------------------------------------------------
def test_health_ready_and_metrics(client, part_png):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["models"][0]["name"] == "tiny"
    client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'anomaly_http_requests_total{endpoint="/api/v1/models/<name>/score",method="POST",status="200"}' in text
    assert "anomaly_http_request_duration_seconds_bucket" in text
    assert 'anomaly_inspections_total{model="tiny",verdict=' in text


def test_openapi_describes_every_api_route(app, client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            path = rule.rule[len("/api/v1"):].replace("<int:", "<").replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((path, method.lower()))
    assert routes == documented


def test_request_handling_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from service import create_app\n"
        f"app = create_app({{'TESTING': True, 'SECRET_KEY': 'k', 'INSTANCE_PATH': {str(tmp_path / 'i')!r}, "
        f"'DATABASE_URL': 'sqlite:///{tmp_path / 'r.sqlite'}', 'STORE': {str(tmp_path / 's')!r}}})\n"
        "c = app.test_client()\n"
        "assert c.get('/healthz').status_code == 200\n"
        "assert c.get('/api/v1/models').status_code == 200\n"
        "assert c.get('/api/v1/inspections').status_code == 200\n"
        "assert c.post('/api/v1/models/x/score', data=b'x', content_type='image/png').status_code == 404\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_scoring_job_records_every_part_under_its_id(client, part_png, defect_png):
    import time

    files = [(io.BytesIO(part_png), "a.png"), (io.BytesIO(defect_png), "b.png")]
    r = client.post("/api/v1/models/tiny/score-jobs", data={"images": files, "part_id": ["A-1", "B-2"]},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    deadline = time.monotonic() + 120
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(job["status_url"]).get_json()
    assert job["status"] == "succeeded" and job["version"] == 1, job
    items = client.get(f"/api/v1/inspections?batch_id={job['job_id']}").get_json()["items"]
    assert {i["part_id"]: i["verdict"] for i in items}["B-2"] == "NG" and len(items) == 2


def test_a_scoring_job_refuses_what_it_could_not_do_before_it_is_queued(client, part_png):
    def post(name="tiny", **data):
        return client.post(f"/api/v1/models/{name}/score-jobs", data=data, content_type="multipart/form-data")

    assert post(images=[(io.BytesIO(b"not an image"), "x.png")]).get_json()["code"] == "invalid_image"
    assert post().status_code == 400  # no images
    assert post(name="nope", images=[(io.BytesIO(part_png), "a.png")]).status_code == 404
    assert post(images=[(io.BytesIO(part_png), "a.png")], version="9").status_code == 404
    r = post(images=[(io.BytesIO(part_png), "a.png")], part_id=["x", "y"])
    assert r.status_code == 400 and "part_id" in r.get_json()["message"]
