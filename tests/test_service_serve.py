"""``anomaly serve`` as a real process (gunicorn) on a free loopback port, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from service.testing import make_part, png_bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), dict(exc.headers)


def _anomaly(*args: str) -> list[str]:
    return [sys.executable, "-m", "anomaly.cli.main", *args]


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve-run")
    port = free_port()
    log = open(tmp / "server.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    proc = subprocess.Popen(
        _anomaly("serve", "--port", str(port), "--workers", "1", "--store", str(store),
                 "--db-url", f"sqlite:///{tmp / 'records.sqlite'}", "--instance", str(tmp / "instance")),
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}: {(tmp / 'server.log').read_text()}")
            try:
                status, _, _ = http("GET", f"{base}/readyz", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready: {(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, proc, tmp
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_serve_scores_records_and_reports(server):
    base, _, tmp = server
    png = png_bytes(make_part(np.random.default_rng(5)))
    status, body, headers = http("POST", f"{base}/api/v1/models/tiny/score?part_id=HTTP-1", png,
                                 {"Content-Type": "image/png"})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["verdict"] in ("GOOD", "REVIEW", "NG") and answer["part_id"] == "HTTP-1"
    assert headers["X-Request-Id"]
    status, body, _ = http("GET", f"{base}/api/v1/inspections?part_id=HTTP-1")
    assert json.loads(body)["items"][0]["inspection_id"] == answer["inspection_id"]
    status, body, _ = http("POST", f"{base}/api/v1/models/tiny/score", b"junk", {"Content-Type": "image/png"})
    assert status == 400 and json.loads(body)["code"] == "invalid_image"
    status, body, _ = http("GET", f"{base}/metrics")
    text = body.decode()
    assert status == 200 and 'anomaly_inspections_total{model="tiny",verdict=' in text
    assert 'endpoint="/api/v1/models/<name>/score"' in text
    status, body, _ = http("GET", f"{base}/inspect")
    assert status == 200 and b"drop-zone" in body
    assert "serving models from" in (tmp / "server.log").read_text()


def test_serve_stops_cleanly(server):
    _, proc, tmp = server
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (tmp / "server.log").read_text()[-2000:]


def test_serve_refuses_other_addresses_without_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")}
    result = subprocess.run(
        _anomaly("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--store", str(tmp_path / "store"),
                 "--db-url", f"sqlite:///{tmp_path / 'r.sqlite'}", "--instance", str(tmp_path / "inst")),
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0" in result.stderr
    created = subprocess.run(
        _anomaly("serve", "--create-key", "ops", "--role", "admin", "--db-url", f"sqlite:///{tmp_path / 'r.sqlite'}",
                 "--instance", str(tmp_path / "inst")),
        capture_output=True, text=True, env=env, timeout=120)
    assert created.returncode == 0 and created.stdout.strip().startswith("aik_")
