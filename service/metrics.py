"""Prometheus metrics (prometheus_client): requests and latency per endpoint, verdicts per model.

Each application gets its own :class:`~prometheus_client.CollectorRegistry`, so several
apps in one process (tests) do not collide. Under gunicorn, ``anomaly serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker then writes its
values there and ``/metrics`` adds up all workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    """The service's metrics, attached with :meth:`init_app`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("anomaly_http_requests_total", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("anomaly_http_request_duration_seconds", "Time to answer a request",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inspections = Counter("anomaly_inspections_total", "Parts judged, by model and verdict",
                                   ["model", "verdict"], registry=self.registry)
        self.inference = Histogram("anomaly_inference_duration_seconds", "Model inference time per request",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.models_loaded = Gauge("anomaly_models_loaded", "Bundles loaded in a worker",
                                   registry=self.registry, multiprocess_mode="max")

    def init_app(self, app: Flask) -> None:
        """Time every request and count it under its route rule (never the raw path)."""
        app.extensions["anomaly_metrics"] = self

        @app.before_request
        def _start_timer() -> None:
            g.request_started = time.perf_counter()

        @app.after_request
        def _observe(response: Response) -> Response:
            started = g.pop("request_started", None)
            endpoint = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            self.requests.labels(endpoint, request.method, str(response.status_code)).inc()
            if started is not None:
                self.latency.labels(endpoint).observe(time.perf_counter() - started)
            return response

    def count_verdict(self, model: str, verdict: str) -> None:
        self.inspections.labels(model, verdict).inc()

    def render(self, db=None) -> tuple[bytes, str]:
        """The exposition text (all workers' values in multiprocess mode), with the drift gauges
        read from the database (``db``), which every worker shares."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        text = generate_latest(registry)
        if db is not None:
            drift = CollectorRegistry()
            drift.register(_DriftCollector(db))
            text += generate_latest(drift)
        return text, CONTENT_TYPE_LATEST


class _DriftCollector:
    """``anomaly_drift_alarm`` and ``anomaly_drift_cusum`` per model version, from ``drift_state``."""

    def __init__(self, db) -> None:
        self.db = db

    def collect(self):
        import sqlalchemy as sa
        from prometheus_client.core import GaugeMetricFamily

        from service.db import DriftState

        alarm = GaugeMetricFamily("anomaly_drift_alarm", "1 while a model version's drift alarm stands",
                                  labels=["model", "version"])
        cusum = GaugeMetricFamily("anomaly_drift_cusum", "Drift CUSUM of a model version, by test "
                                  "(alarm at anomaly.drift.H)", labels=["model", "version", "test"])
        with self.db.session() as session:
            for row in session.scalars(sa.select(DriftState)):
                labels = [row.model_name, str(row.model_version)]
                alarm.add_metric(labels, 1.0 if row.alarm else 0.0)
                cusum.add_metric(labels + ["review"], row.cusum_review)
                cusum.add_metric(labels + ["median"], row.cusum_median)
        yield alarm
        yield cusum
