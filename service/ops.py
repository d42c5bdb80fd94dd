"""Operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (database reachable and
every production model loaded in this worker), ``/metrics`` (Prometheus text format).

They need no key, so that a load balancer and a Prometheus server can reach them.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from service.db import Database
from service.registry import ModelRegistry

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the worker answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 when the database answers and every production model is loaded here."""
    db: Database = current_app.extensions["anomaly_db"]
    registry: ModelRegistry = current_app.extensions["anomaly_registry"]
    try:
        db.ping()
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unreachable: {type(exc).__name__}"
    models = registry.readiness()
    current_app.extensions["anomaly_metrics"].models_loaded.set(len(registry.loaded()))
    ready = database == "ok" and models["ready"]
    body = {"ready": ready, "database": database, "models": models["models"], "errors": models["errors"]}
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of all workers."""
    payload, content_type = current_app.extensions["anomaly_metrics"].render()
    return Response(payload, content_type=content_type)
