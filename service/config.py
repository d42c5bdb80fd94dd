"""Configuration: defaults without secrets, then the instance file, then ``ANOMALY_*`` variables.

Order (later wins):

1. :data:`DEFAULTS` below (no secret among them);
2. ``<instance>/config.py`` (``app.config.from_pyfile``), if present;
3. environment variables ``ANOMALY_<KEY>`` (``app.config.from_prefixed_env("ANOMALY")``:
   values are parsed as JSON when they are JSON, so ``ANOMALY_REQUIRE_API_KEYS=true``
   is a bool and ``ANOMALY_MAX_PIXELS=4000000`` an int).

A test configuration replaces 2 and 3, so a developer's shell never leaks into tests.

``SECRET_KEY`` (signs the session cookie and the CSRF tokens) is never defaulted in code:
it comes from the instance file or ``ANOMALY_SECRET_KEY``; failing both, a random key is
generated once into ``<instance>/secret_key`` (mode 0600, shared by every worker) and a
warning is logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Mapping

from flask import Flask

log = logging.getLogger(__name__)

MIB = 1024 * 1024

#: Every setting the service reads, with its default. None means "derived at start".
DEFAULTS: dict[str, Any] = {
    # where things are
    "STORE": None,  # model store root; None: $ANOMALY_STORE or ./models
    # "bundle": the store holds bundles (training machine); "onnx": a deploy store of exported
    # models, scored by onnxruntime without torch (anomaly.runtime.store); no training there.
    "RUNTIME": "bundle",
    "DATABASE_URL": None,  # None: sqlite:///<instance>/inspections.sqlite
    "DATABASE_SCHEMA": None,  # PostgreSQL only: schema holding the tables (search_path)
    "ARCHIVE": "rejected",  # which parts get image, map and overlay archived: none | rejected | all
    "ARCHIVE_DIR": None,  # None: <instance>/archive
    # security
    "REQUIRE_API_KEYS": False,  # `anomaly serve` turns this on for any non-loopback address
    "ALLOWED_HOSTS": [],  # Host names answered besides the loopback ones (list or "a,b"; see service.guards)
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_HTTPONLY": True,
    "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
    "WTF_CSRF_SSL_STRICT": False,  # behind a TLS proxy the Referer check breaks same-origin posts
    # limits
    "MAX_IMAGE_BYTES": 32 * MIB,  # one scoring request
    "MAX_UPLOAD_BYTES": 512 * MIB,  # one training upload (all its images)
    "MAX_PIXELS": 50_000_000,  # width x height of one image
    "MAX_BATCH": 64,  # parts in one batch request
    "MAX_TRAIN_IMAGES": 2000,
    "MAX_FORM_MEMORY_SIZE": 1 * MIB,  # non-file form fields
    # models
    "PRELOAD_MODELS": True,  # load every production model when the worker starts
    "WARMUP": True,  # and run one inference on a blank image (first call is slow)
    "MAX_LOADED_BUNDLES": 8,  # per worker; least recently used ones are dropped
    "TRAINING_THREADS": 1,  # concurrent training jobs per worker (without QUEUE_URL)
    # Redis URL of the training queue (service.queue): jobs run in `anomaly worker` processes and web
    # workers never train; None: in the web workers' own threads (a restart loses running jobs).
    "QUEUE_URL": None,
    "SPOOL_DIR": None,  # where queued jobs' uploads wait for a worker (shared storage); None: <instance>/jobs
    "MAX_JOBS_PER_MODEL": 1,  # queued + running training jobs of one model (all workers); more: 429
    "MAX_JOBS_PER_CLIENT": 3,  # queued + running training jobs of one client (all workers); more: 429
    "MAX_VERSIONS_PER_MODEL": 200,  # a training job or threshold move beyond it: 507 (service.limits)
    "STORE_QUOTA_MB": None,  # megabytes the model store may hold before new versions get 507; None: no quota
    "SCORING_DEADLINE_SECONDS": 60.0,  # judged later than this after the request came: not recorded, 503
    # Parts judged at once per worker: scoring is CPU-bound and each worker already has its share of the
    # cores, so more only slows each part down. A request that finds every slot taken waits this long,
    # then gets 503 "busy" with Retry-After (a retry is likely to reach an idle worker).
    "SCORING_SLOTS": 1,
    "SCORING_WAIT_SECONDS": 5.0,
    # verdicts to the line over MQTT (service.outbox): every record gets an outbox message in its own
    # transaction when MQTT_HOST is set; a publisher thread per worker sends them at QoS 1
    "MQTT_HOST": None,  # None: no messages
    "MQTT_PORT": 1883,
    "MQTT_TOPIC": "anomaly/{line}/{station}/verdict",  # {line}, {station} and {model} are filled in
    "LINE": "line-1",
    "STATION": "station-1",
    "MQTT_PUBLISHER": True,  # run the publisher thread in this process (off: another process drains the outbox)
    "DEFAULT_DETECTOR": "patchcore",
    "ONBOARD_BUDGET_SECONDS": 600.0,  # search time of an onboarding job ("detector": "auto")
}


def load_config(app: Flask, test_config: Mapping[str, Any] | None) -> None:
    """Fill ``app.config`` (see the module docstring for the order)."""
    app.config.from_mapping(DEFAULTS)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("ANOMALY")
    else:
        app.config.from_mapping(test_config)
    instance = Path(app.instance_path)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = instance_secret_key(instance)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'inspections.sqlite'}"
    if not app.config.get("SPOOL_DIR"):
        app.config["SPOOL_DIR"] = str(instance / "jobs")
    if not app.config.get("ARCHIVE_DIR"):
        app.config["ARCHIVE_DIR"] = str(instance / "archive")
    if app.config["RUNTIME"] not in ("bundle", "onnx"):
        raise ValueError(f"RUNTIME must be bundle or onnx, got {app.config['RUNTIME']!r}")
    if app.config["ARCHIVE"] not in ("none", "rejected", "all"):
        raise ValueError(f"ARCHIVE must be none, rejected or all, got {app.config['ARCHIVE']!r}")
    # The app-wide cap is the largest upload; scoring views lower it per request.
    app.config["MAX_CONTENT_LENGTH"] = max(int(app.config["MAX_UPLOAD_BYTES"]), int(app.config["MAX_IMAGE_BYTES"]))
    app.config.setdefault("MAX_FORM_PARTS", 2 * int(app.config["MAX_TRAIN_IMAGES"]) + 100)


def instance_secret_key(instance: Path) -> str:
    """The instance's generated secret key, created on first use (atomic, mode 0600).

    Every worker of one server reads the same file, so sessions and CSRF tokens made by
    one worker are accepted by the others.
    """
    path = instance / "secret_key"
    if path.is_file():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=instance, prefix=".secret-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # fails if another worker won the race; then read theirs
            log.warning(
                "no SECRET_KEY configured: generated one into %s; set ANOMALY_SECRET_KEY or "
                "SECRET_KEY in %s to manage it yourself",
                path,
                instance / "config.py",
            )
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path.read_text().strip()
