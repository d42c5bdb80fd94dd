"""Training on the Redis queue: web workers only queue, `anomaly worker` processes train.

Against the real Redis on 127.0.0.1:6379 (skipped where none is reachable, failed under
CI=true). Right answers built in: a job queued through the API is trained by a separate
`anomaly worker` process into a new version and reported succeeded to any poll; a worker
killed with SIGKILL mid-training leaves no version and no staging folder behind, and the
job is reported failed with the reason; a queue that cannot be reached fails the request
visibly instead of losing the job.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from anomaly.store import ModelStore
from service.testing import make_part, png_bytes, service_app
from tests.conftest import listening_or_skip

pytestmark = pytest.mark.slow

REDIS = ("127.0.0.1", 6379)


def _redis_or_skip() -> None:
    listening_or_skip(*REDIS, "Redis")


@pytest.fixture
def queue_url() -> str:
    _redis_or_skip()
    from redis import Redis

    db = 9  # a database of its own, emptied for each test
    Redis.from_url(f"redis://127.0.0.1:6379/{db}").flushdb()
    return f"redis://127.0.0.1:6379/{db}"


@pytest.fixture
def app(store, tmp_path, queue_url):
    app = service_app(store, tmp_path, QUEUE_URL=queue_url)
    yield app
    app.extensions["anomaly_db"].dispose()


def _worker(app, tmp_path, *, burst: bool) -> subprocess.Popen:
    env = dict(os.environ, ANOMALY_QUEUE_URL=app.config["QUEUE_URL"], ANOMALY_STORE=app.config["STORE"],
               ANOMALY_DATABASE_URL=app.config["DATABASE_URL"], ANOMALY_INSTANCE_PATH=app.config["INSTANCE_PATH"],
               ANOMALY_SPOOL_DIR=app.config["SPOOL_DIR"], ANOMALY_ARCHIVE_DIR=app.config["ARCHIVE_DIR"],
               ANOMALY_SECRET_KEY="worker-test-" + uuid.uuid4().hex)
    command = [sys.executable, "-m", "anomaly.cli.main", "worker"] + (["--burst"] if burst else [])
    log = open(tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log", "w")  # a file: a pipe nobody reads could block it
    try:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()  # the child has its own descriptor


def _output(tmp_path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("worker-*.log")))


def _train(client, n: int = 6, **form) -> dict:
    rng = np.random.default_rng(3)
    files = [(io.BytesIO(png_bytes(make_part(rng))), f"g{i}.png") for i in range(n)]
    r = client.post("/api/v1/models/queued/versions", data={"images": files, **form},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def _poll(client, job_id: str, until, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def test_a_worker_process_trains_what_the_web_worker_queued(app, tmp_path):
    from service import create_app

    job = _train(app.test_client(), detector="padim", params='{"image_size": 64}')
    assert job["status"] == "queued"
    time.sleep(0.5)
    # The web worker that took the upload goes away (a restart): the job waits on the queue.
    app.extensions["anomaly_db"].dispose()
    app = create_app({**app.config, "TESTING": True})
    client = app.test_client()
    assert client.get(f"/api/v1/jobs/{job['job_id']}").get_json()["status"] == "queued"  # nobody trains it here
    worker = _worker(app, tmp_path, burst=True)
    assert worker.wait(timeout=300) == 0, _output(tmp_path)
    done = _poll(client, job["job_id"], lambda j: j["status"] not in ("queued", "running"))
    assert done["status"] == "succeeded" and done["version"] == 1, done
    assert ModelStore(app.config["STORE"]).versions("queued") == [1]
    assert not any(Path(app.config["SPOOL_DIR"]).glob("*"))  # the spool is cleaned


def test_a_worker_killed_mid_training_leaves_nothing_and_the_job_failed(app, tmp_path):
    client = app.test_client()
    # A slow job: the discriminator trains for many epochs on 12 goods.
    job = _train(client, n=12, detector="discriminator", params='{"image_size": 64, "epochs": 400, "patience": 400}')
    worker = _worker(app, tmp_path, burst=False)
    try:
        running = _poll(client, job["job_id"], lambda j: j["status"] == "running" and j["progress"] > 0.1, 180)
        assert running["status"] == "running", (running, _output(tmp_path))
        time.sleep(1.0)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    failed = _poll(client, job["job_id"], lambda j: j["status"] == "failed", 30)
    assert failed["status"] == "failed" and failed["error_code"] == "worker_exited", failed
    store = ModelStore(app.config["STORE"])
    assert store.versions("queued") == []
    # The next worker removes what the killed one left aside in the store.
    after = _worker(app, tmp_path, burst=True)
    assert after.wait(timeout=120) == 0, _output(tmp_path)
    assert not list(Path(app.config["STORE"]).glob("queued/.new-*"))


def test_an_unreachable_queue_fails_the_request_visibly(store, tmp_path):
    _redis_or_skip()
    app = service_app(store, tmp_path, QUEUE_URL="redis://127.0.0.1:1/0")
    try:
        client = app.test_client()
        rng = np.random.default_rng(3)
        files = [(io.BytesIO(png_bytes(make_part(rng))), f"g{i}.png") for i in range(4)]
        r = client.post("/api/v1/models/queued/versions", data={"images": files, "detector": "padim"},
                        content_type="multipart/form-data")
        assert r.status_code == 503 and r.get_json()["code"] == "queue_unavailable", r.get_json()
        jobs = client.get("/api/v1/jobs").get_json()["jobs"]
        assert jobs and jobs[0]["status"] == "failed" and jobs[0]["error_code"] == "queue_unavailable"
    finally:
        app.extensions["anomaly_db"].dispose()


def _parts() -> tuple[list[tuple], list[str]]:
    """Three goods and one part with a bright square (NG), with their part ids."""
    rng = np.random.default_rng(21)
    images = [make_part(rng) for _ in range(4)]
    images[3][30:50, 55:75] = 250
    return [(io.BytesIO(png_bytes(im)), f"p{i}.png") for i, im in enumerate(images)], [f"P-{i}" for i in range(4)]


def test_a_worker_process_scores_a_queued_batch_into_records(app, tmp_path):
    client = app.test_client()
    files, ids = _parts()
    r = client.post("/api/v1/models/tiny/score-jobs", data={"images": files, "part_id": ids},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["status"] == "queued" and job["detector"] == "score"
    worker = _worker(app, tmp_path, burst=True)
    assert worker.wait(timeout=300) == 0, _output(tmp_path)
    done = _poll(client, job["job_id"], lambda j: j["status"] not in ("queued", "running"))
    assert done["status"] == "succeeded" and done["version"] == 1, done
    assert "4 part(s) judged and recorded" in done["message"] and "1 NG" in done["message"], done
    items = client.get(job["records_url"]).get_json()["items"]
    verdicts = {i["part_id"]: i["verdict"] for i in items}
    assert sorted(verdicts) == ids and verdicts["P-3"] == "NG"
    assert all(verdicts[p] != "NG" for p in ids[:3])  # the goods pass (GOOD, at worst REVIEW)
    assert {i["batch_id"] for i in items} == {job["job_id"]}
