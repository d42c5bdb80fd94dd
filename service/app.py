"""The application factory: ``create_app(test_config=None)``.

One blueprint for the JSON API (``/api/v1``), one for the web pages (``/``) and one for
operations (``/healthz``, ``/readyz``, ``/metrics``); extensions are attached with
``init_app``-style calls and kept in ``app.extensions``:

=====================  =========================================================
``anomaly_db``         :class:`service.db.Database` (engine, sessions, migrations)
``anomaly_store``      :class:`anomaly.store.ModelStore`
``anomaly_registry``   :class:`service.registry.ModelRegistry` (loaded bundles)
``anomaly_archive``    :class:`service.archive.Archive`
``anomaly_jobs``       :class:`service.jobs.TrainingJobs`
``anomaly_scoring_slots``  a semaphore: parts judged at once in this worker
``anomaly_metrics``    :class:`service.metrics.Metrics`
``anomaly_verdict_topic``  :class:`service.outbox.VerdictTopic` (None without ``MQTT_HOST``)
``anomaly_outbox``     :class:`service.outbox.Publisher` (this worker's; only with ``MQTT_HOST``)
``csrf``               Flask-WTF's ``CSRFProtect``
=====================  =========================================================

The instance folder is ``$ANOMALY_INSTANCE_PATH`` or Flask's default (``./instance``
beside the source tree); it holds ``config.py``, the generated secret key and, by
default, the SQLite database and the archive.
"""

from __future__ import annotations

import logging
import os
import re
import sysconfig
import threading
import uuid
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFProtect

from anomaly.store import ModelStore
from service import api, ops, pages
from service.archive import Archive
from service.cli import register_commands
from service.config import load_config
from service.db import Database
from service.errors import register_error_handlers
from service.guards import install_guards
from service.jobs import TrainingJobs
from service.metrics import Metrics
from service.outbox import Publisher, VerdictTopic
from service.registry import ModelRegistry

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def template_folder() -> str:
    """The ``templates/`` folder: beside the source tree, or under ``<prefix>/share`` once installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates",
                      Path(sysconfig.get_path("data")) / "share" / "anomaly-inspect" / "templates"):
        if (candidate / "base.html").is_file():
            return str(candidate)
    return str(here.parent / "templates")


def create_app(test_config: Mapping[str, Any] | None = None, *, preload: bool | None = None) -> Flask:
    """Build the application.

    Args:
        test_config: Settings that replace the instance file and the environment
            (tests); ``INSTANCE_PATH`` in it moves the instance folder.
        preload: Override ``PRELOAD_MODELS`` (``anomaly serve`` checks the configuration
            in its own process without loading models).

    Returns:
        The configured Flask application, its database migrated and (unless
        ``PRELOAD_MODELS`` is off) its production models loaded.
    """
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("ANOMALY_INSTANCE_PATH")
    app = Flask(__name__, instance_path=str(Path(instance_path).resolve()) if instance_path else None,
                instance_relative_config=True, template_folder=template_folder(), static_folder="static")
    load_config(app, test_config)
    install_guards(app)
    app.json = StrictJSONProvider(app)

    db = Database(app.config["DATABASE_URL"], schema=app.config.get("DATABASE_SCHEMA"))
    db.migrate()
    if app.config["RUNTIME"] == "onnx":
        from anomaly.runtime.store import DeployStore

        store: ModelStore = DeployStore(app.config["STORE"])
    else:
        store = ModelStore(app.config["STORE"])
    registry = ModelRegistry(store, max_loaded=int(app.config["MAX_LOADED_BUNDLES"]),
                             warmup=bool(app.config["WARMUP"]))
    app.extensions["anomaly_db"] = db
    app.extensions["anomaly_store"] = store
    app.extensions["anomaly_registry"] = registry
    app.extensions["anomaly_archive"] = Archive(app.config["ARCHIVE_DIR"], app.config["ARCHIVE"])
    limits = dict(max_active_per_model=int(app.config["MAX_JOBS_PER_MODEL"]),
                  max_active_per_client=int(app.config["MAX_JOBS_PER_CLIENT"]),
                  onboard_budget_seconds=float(app.config["ONBOARD_BUDGET_SECONDS"]))
    if app.config.get("QUEUE_URL"):
        from service.queue import QueuedJobs

        app.extensions["anomaly_jobs"] = QueuedJobs(db, store, url=str(app.config["QUEUE_URL"]),
                                                    spool_dir=app.config["SPOOL_DIR"], **limits)
    else:
        log.info("training jobs run in this worker's threads (no QUEUE_URL): a worker restart loses a running "
                 "job; set QUEUE_URL and run `anomaly worker` to train on a queue")
        app.extensions["anomaly_jobs"] = TrainingJobs(db, store, max_workers=int(app.config["TRAINING_THREADS"]),
                                                      **limits)
    app.extensions["anomaly_jobs"].archive_root = app.config["ARCHIVE_DIR"]
    app.extensions["anomaly_jobs"].app = app
    app.extensions["anomaly_scoring_slots"] = threading.BoundedSemaphore(int(app.config["SCORING_SLOTS"]))
    topic = VerdictTopic.from_config(app.config)
    app.extensions["anomaly_verdict_topic"] = topic
    if topic is not None and app.config["MQTT_PUBLISHER"]:
        # One per worker (each builds its own app); they share the outbox through their claims.
        app.extensions["anomaly_outbox"] = Publisher(db, str(app.config["MQTT_HOST"]),
                                                     int(app.config["MQTT_PORT"])).start()
    Metrics().init_app(app)
    csrf = CSRFProtect(app)
    csrf.exempt(api.bp)  # the API checks the token itself, only for cookie-borne requests
    csrf.exempt(ops.bp)

    _request_ids(app)
    _security_headers(app)
    register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(pages.bp)
    register_commands(app)

    if app.config["PRELOAD_MODELS"] if preload is None else preload:
        registry.preload()
    log.info("service ready: %s store %s, database %s, archive %s (%s)",
             "deploy (exported models, onnxruntime)" if app.config["RUNTIME"] == "onnx" else "model", store.root,
             db.display_url,
             app.config["ARCHIVE_DIR"], app.config["ARCHIVE"])
    return app


class StrictJSONProvider(DefaultJSONProvider):
    """JSON answers in the order they were built, never carrying NaN or Infinity (not JSON at all)."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def _request_ids(app: Flask) -> None:
    @app.before_request
    def _assign() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def _echo(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response


def _security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
                "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
        return response
