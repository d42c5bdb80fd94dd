"""Web pages, sign-in, API keys, CSRF and configuration, through Flask's test client and CLI runner."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from service import create_app
from service.testing import make_part, make_test_config, png_bytes, service_app


@pytest.fixture(scope="module")
def app(store: Path, tmp_path_factory: pytest.TempPathFactory):
    app = service_app(store, tmp_path_factory.mktemp("pages-app"))
    yield app
    app.extensions["anomaly_db"].dispose()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_of(response) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', response.get_data(as_text=True))
    assert match, "page has no CSRF token"
    return match.group(1)


# -- pages ----------------------------------------------------------------------------------------
def test_every_page_renders(client, part_png):
    client.post("/api/v1/models/tiny/score?part_id=pg-1", data=part_png, content_type="image/png")
    bad = make_part(np.random.default_rng(12))
    bad[20:60, 20:60] = 255
    client.post("/api/v1/models/tiny/score?part_id=pg-2", data=png_bytes(bad), content_type="image/png")
    pages = {
        "/inspect": "drop-zone", "/onboard": "onboard-form", "/models": "tiny", "/models/tiny": "Roll back",
        "/models/tiny/1": "<svg", "/records": "first-pass yield", "/records/rejected": "rejected",
        "/docs/api": "/api/v1/models/{name}/score",
    }
    for path, needle in pages.items():
        r = client.get(path)
        assert r.status_code == 200, path
        assert needle.lower() in r.get_data(as_text=True).lower(), path
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    records = client.get("/records?verdict=GOOD&model=tiny").get_data(as_text=True)
    assert "pg-1" in records or "GOOD" in records
    assert client.get("/").status_code == 302


def test_unknown_pages_are_html_404(client):
    r = client.get("/models/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "model_not_found" in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)
    assert client.get("/records/not-an-id").status_code == 404


def test_inspect_form_without_javascript(client, part_png):
    token = csrf_of(client.get("/inspect"))
    r = client.post("/inspect", content_type="multipart/form-data",
                    data={"csrf_token": token, "model": "tiny", "part_id": "form-1",
                          "image": (io.BytesIO(part_png), "x.png")})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert re.search(r'id="verdict" class="verdict verdict-(GOOD|REVIEW|NG)"', html)
    assert 'src="data:image/png;base64,' in html
    r = client.post("/inspect", content_type="multipart/form-data",
                    data={"csrf_token": token, "model": "tiny", "image": (io.BytesIO(b"junk"), "x.png")})
    assert r.status_code == 400 and "invalid_image" in r.get_data(as_text=True)


def test_forms_need_the_csrf_token(client, part_png):
    r = client.post("/inspect", content_type="multipart/form-data",
                    data={"model": "tiny", "image": (io.BytesIO(part_png), "x.png")})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = client.post("/models/tiny/promote", data={"version": "1"})
    assert r.status_code == 400


def test_cookie_borne_api_calls_need_the_token(client, part_png):
    token = csrf_of(client.get("/inspect"))  # the browser now holds a session cookie
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    assert r.status_code == 400 and r.get_json()["code"] == "csrf_failed"
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                    headers={"X-CSRFToken": token})
    assert r.status_code == 200


def test_cross_site_requests_are_refused(client, part_png):
    r = client.post("/api/v1/models/tiny/rollback", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                    headers={"Origin": "http://localhost"})
    assert r.status_code == 200


def test_publish_thresholds_rollback_and_feedback_forms(client, part_png):
    token = csrf_of(client.get("/models/tiny/1"))
    t_ng = client.get("/api/v1/models/tiny/versions/1").get_json()["calibration"]["t_ng"]
    r = client.post("/models/tiny/1/thresholds", data={"csrf_token": token, "t_review": "50", "t_ng": "60"})
    assert r.status_code == 302
    new = int(r.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/models/tiny/{new}").get_data(as_text=True)
    assert "Publish" in page and ">60" in page and t_ng < 60
    r = client.post("/models/tiny/promote", data={"csrf_token": token, "version": str(new)})
    assert r.status_code == 302
    assert client.get("/api/v1/models/tiny").get_json()["production"] == new
    r = client.post("/models/tiny/rollback", data={"csrf_token": token})
    assert r.status_code == 302 and client.get("/api/v1/models/tiny").get_json()["production"] == 1

    scored = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                         headers={"X-CSRFToken": token}).get_json()
    kind = "miss" if scored["verdict"] == "GOOD" else "false_alarm"
    r = client.post(f"/records/{scored['inspection_id']}/feedback",
                    data={"csrf_token": token, "kind": kind, "note": "looked at it"})
    assert r.status_code == 302
    assert "looked at it" in client.get(f"/records/{scored['inspection_id']}").get_data(as_text=True)


def test_onboard_form_validates_and_starts_a_job(client, app, monkeypatch):
    token = csrf_of(client.get("/onboard"))
    one = (io.BytesIO(png_bytes(make_part(np.random.default_rng(1)))), "a.png")
    r = client.post("/onboard", content_type="multipart/form-data",
                    data={"csrf_token": token, "name": "new-part", "images": [one]})
    assert r.status_code == 400 and "at least 2" in r.get_data(as_text=True)

    started = {}

    def fake_submit(req):
        started["req"] = req
        return {"job_id": "job-1"}

    monkeypatch.setattr(app.extensions["anomaly_jobs"], "submit", fake_submit)
    rng = np.random.default_rng(2)
    images = [(io.BytesIO(png_bytes(make_part(rng))), "../x.png") for _ in range(3)]
    r = client.post("/onboard", content_type="multipart/form-data",
                    data={"csrf_token": token, "name": "new-part", "detector": "patchcore", "image_size": "64",
                          "images": images})
    assert r.status_code == 302 and r.headers["Location"].endswith("/jobs/job-1")
    assert started["req"].name == "new-part" and len(started["req"].images) == 3
    assert started["req"].params == {"image_size": 64} and started["req"].promote is False
    # Without a detector the page onboards: the job chooses, so parameters are refused.
    images = [(io.BytesIO(png_bytes(make_part(rng))), f"{i}.png") for i in range(4)]
    r = client.post("/onboard", content_type="multipart/form-data",
                    data={"csrf_token": token, "name": "auto-part", "images": images})
    assert r.status_code == 302 and started["req"].detector == "auto" and started["req"].params == {}
    images = [(io.BytesIO(png_bytes(make_part(rng))), f"{i}.png") for i in range(4)]
    r = client.post("/onboard", content_type="multipart/form-data",
                    data={"csrf_token": token, "name": "auto-part", "image_size": "64", "images": images})
    assert r.status_code == 400 and "chooses the parameters itself" in r.get_data(as_text=True)


# -- keys, roles, sign-in -------------------------------------------------------------------------------
@pytest.fixture
def keyed(store, tmp_path):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(store, root)
    app = create_app(make_test_config(tmp_path, root, REQUIRE_API_KEYS=True))
    runner = app.test_cli_runner()
    keys = {}
    for role in ("score", "admin"):
        result = runner.invoke(args=["keys", "create", f"{role}-key", "--role", role])
        assert result.exit_code == 0, result.output
        keys[role] = result.output.strip().splitlines()[-1]
    yield app, keys
    app.extensions["anomaly_db"].dispose()


def test_keys_are_required_and_roles_enforced(keyed, part_png):
    app, keys = keyed
    client = app.test_client()
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png")
    assert r.status_code == 401 and r.get_json()["code"] == "auth_required"
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png",
                    headers={"Authorization": "Bearer aik_wrong"})
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_api_key"
    score_headers = {"Authorization": f"Bearer {keys['score']}"}
    r = client.post("/api/v1/models/tiny/score", data=part_png, content_type="image/png", headers=score_headers)
    assert r.status_code == 200 and r.get_json()["client"] == "score-key"
    assert client.get("/api/v1/inspections", headers=score_headers).status_code == 200
    r = client.post("/api/v1/models/tiny/rollback", headers=score_headers)
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    r = client.post("/api/v1/models/tiny/thresholds", json={"t_ng": 60}, headers={"X-API-Key": keys["admin"]})
    assert r.status_code == 201
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=score_headers).status_code == 200
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_people_sign_in_with_a_key(keyed):
    app, keys = keyed
    client = app.test_client()
    r = client.get("/models")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    token = csrf_of(client.get("/login"))
    r = client.post("/login?next=//evil.example/x", data={"csrf_token": token, "api_key": "nope"})
    assert r.status_code == 200 and "unknown or revoked" in r.get_data(as_text=True)
    r = client.post("/login?next=//evil.example/x", data={"csrf_token": token, "api_key": keys["score"]})
    assert r.status_code == 302 and r.headers["Location"] == "/inspect"
    assert client.get("/models").status_code == 200
    token = csrf_of(client.get("/models/tiny"))
    r = client.post("/models/tiny/rollback", data={"csrf_token": token})
    assert r.status_code == 403  # a score key cannot roll back
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/models").status_code == 302


def test_revoked_keys_stop_working(keyed, part_png):
    app, keys = keyed
    runner = app.test_cli_runner()
    assert "score-key" in runner.invoke(args=["keys", "list"]).output
    assert runner.invoke(args=["keys", "revoke", "score-key"]).exit_code == 0
    r = app.test_client().get("/api/v1/models", headers={"X-API-Key": keys["score"]})
    assert r.status_code == 401


def test_db_upgrade_command(runner):
    result = runner.invoke(args=["db-upgrade"])
    assert result.exit_code == 0 and "schema version" in result.output


# -- configuration -------------------------------------------------------------------------------------
def test_secret_key_is_generated_once_per_instance(tmp_path, caplog):
    config = make_test_config(tmp_path, None)
    del config["SECRET_KEY"]
    first = create_app(config)
    second = create_app(config)
    path = tmp_path / "instance" / "secret_key"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"] == path.read_text().strip()
    assert len(first.config["SECRET_KEY"]) >= 64
    other = make_test_config(tmp_path / "other", None)
    del other["SECRET_KEY"]
    assert create_app(other).config["SECRET_KEY"] != first.config["SECRET_KEY"]


def test_environment_and_instance_file(tmp_path, monkeypatch):
    instance = tmp_path / "inst"
    instance.mkdir()
    (instance / "config.py").write_text("SECRET_KEY = 'from-instance-file'\nMAX_BATCH = 3\n")
    monkeypatch.setenv("ANOMALY_INSTANCE_PATH", str(instance))
    monkeypatch.setenv("ANOMALY_MAX_BATCH", "5")
    monkeypatch.setenv("ANOMALY_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    monkeypatch.setenv("ANOMALY_PRELOAD_MODELS", "false")
    monkeypatch.setenv("ANOMALY_STORE", str(tmp_path / "store"))
    app = create_app()
    assert app.config["SECRET_KEY"] == "from-instance-file"
    assert app.config["MAX_BATCH"] == 5  # the environment wins over the file
    assert (tmp_path / "env.sqlite").exists()
    assert os.environ["ANOMALY_MAX_BATCH"] == "5"


def test_charts_place_thresholds_and_yield():
    from anomaly.calibration import Calibration
    from service.charts import calibration_svg, yield_svg

    svg = str(calibration_svg(Calibration(good_scores=[1.0, 1.1, 1.2, 1.3], t_review=1.5, t_ng=2.0)))
    xs = {label: float(re.search(rf'<line x1="([0-9.]+)"[^>]*/><text[^>]*>{label} ', svg).group(1))
          for label in ("REVIEW", "NG")}
    bars = [float(x) for x in re.findall(r'<rect x="([0-9.]+)"', svg)]
    assert bars and max(bars) < xs["REVIEW"] < xs["NG"]  # every good score left of both thresholds
    days = [{"model": "a", "day": "2026-01-01", "first_pass_yield": 0.9, "total": 10, "ng": 1, "review": 0},
            {"model": "a", "day": "2026-01-02", "first_pass_yield": 0.5, "total": 2, "ng": 1, "review": 0}]
    line = str(yield_svg(days))
    assert "<polyline" in line and "90.0% of 10" in line and "50.0% of 2" in line
    assert "No inspections" in str(yield_svg([]))


def test_version_page_shows_what_the_thresholds_cost_and_rounds_them(client):
    page = client.get("/models/tiny/1").get_data(as_text=True)
    assert "expected false rejects" in page and "95 % interval" in page
    shown = re.search(r'id="t-ng">([^<]*)<', page).group(1)
    assert len(shown) <= 6  # "%.4g", not 15 decimals


def test_onboard_link_only_for_admins(store, tmp_path):
    import shutil

    from service.auth import create_api_key

    root = tmp_path / "store"
    shutil.copytree(store, root)
    app = create_app(make_test_config(tmp_path, root, REQUIRE_API_KEYS=True))
    key = create_api_key(app.extensions["anomaly_db"], "line", "score")
    client = app.test_client()
    page = client.get("/inspect", headers={"Authorization": f"Bearer {key}"}).get_data(as_text=True)
    assert "Inspect" in page and "Onboard" not in page
    app.extensions["anomaly_db"].dispose()
