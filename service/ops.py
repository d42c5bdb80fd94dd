"""Operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (database reachable and
the production models loaded in this worker), ``/metrics`` (Prometheus text format).

``/healthz`` and the bare ready/not-ready answer of ``/readyz`` need no key, so that a load
balancer can reach them. Where keys are required, the details (model names, load errors,
store paths) and ``/metrics`` (verdict counts per model) need a key with the ``score`` role;
a Prometheus server sends one as ``Authorization: Bearer``.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from service.auth import check_role, current_principal

from service.db import Database
from service.registry import ModelRegistry

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the worker answers."""
    return jsonify({"status": "ok"})


def _may_see_details() -> bool:
    """Whether this caller may read model names, errors and metrics (anyone, unless keys are required)."""
    return not current_app.config["REQUIRE_API_KEYS"] or current_principal().allows("score")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Readiness: 200 when the database answers and the production models load here.

    One model that fails to load does not take the others out of service: the service is
    ready when at least one production model loads (or none exists yet). ``?model=NAME``
    asks about that model alone, for a balancer in front of one product's line.
    """
    db: Database = current_app.extensions["anomaly_db"]
    registry: ModelRegistry = current_app.extensions["anomaly_registry"]
    try:
        db.ping()
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unreachable: {type(exc).__name__}"
    models = registry.readiness()
    current_app.extensions["anomaly_metrics"].models_loaded.set(len(registry.loaded()))
    asked = request.args.get("model")
    if asked is not None:
        ready = database == "ok" and any(m["name"] == asked for m in models["models"])
    else:
        ready = database == "ok" and models["ready"]
    body: dict = {"ready": ready}
    if _may_see_details():
        body.update(database=database, models=models["models"], errors=models["errors"])
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of all workers (a ``score`` key where keys are required)."""
    if current_app.config["REQUIRE_API_KEYS"]:
        check_role("score")
    payload, content_type = current_app.extensions["anomaly_metrics"].render(current_app.extensions["anomaly_db"])
    return Response(payload, content_type=content_type)
