"""Errors the service raises itself, and the handlers that turn every error into JSON.

Every answer to a failed API request is ``{"code": ..., "message": ...}`` with the status
of the error class (the library's :class:`anomaly.errors.AnomalyError` subclasses carry
their own ``code`` and ``http_status``). Unexpected exceptions are logged with their
trace and answered ``500 internal_error`` with a request id, never with the trace.
Web pages get the same facts as an HTML page.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from anomaly.errors import AnomalyError

log = logging.getLogger(__name__)


class ServiceError(AnomalyError):
    """Base of the service's own errors (same contract: ``code``, ``http_status``)."""

    code = "service_error"
    http_status = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class BadRequestError(ServiceError):
    """A request field is missing or malformed."""

    code = "bad_request"
    http_status = 400


class UnsupportedMediaTypeError(ServiceError):
    """The body is neither multipart/form-data nor a raw image."""

    code = "unsupported_media_type"
    http_status = 415


class AuthRequiredError(ServiceError):
    """No (valid) API key was sent where one is required."""

    code = "auth_required"
    http_status = 401


class InvalidApiKeyError(AuthRequiredError):
    """An API key was sent but is unknown or revoked."""

    code = "invalid_api_key"


class ForbiddenError(ServiceError):
    """The caller's role does not allow this action."""

    code = "forbidden"
    http_status = 403


class NotFoundError(ServiceError):
    """No such record, job or file."""

    code = "not_found"
    http_status = 404


class ModelNotReadyError(ServiceError):
    """The model exists (or is being trained) but has no production version to score with."""

    code = "model_not_ready"
    http_status = 409


class ConflictError(ServiceError):
    """The request contradicts the stored state (e.g. feedback that does not fit the verdict)."""

    code = "conflict"
    http_status = 409


class IdempotencyKeyReusedError(ConflictError):
    """An ``Idempotency-Key`` sent again with another request than the one it was first sent with."""

    code = "idempotency_key_reused"


class TooManyJobsError(ServiceError):
    """Queued and running training jobs already reach the limit for this model or this client."""

    code = "too_many_jobs"
    http_status = 429
    retry_after = 60


class ServiceBusyError(ServiceError):
    """Every scoring slot of this worker stayed taken for the whole wait; the client should retry."""

    code = "busy"
    http_status = 503
    retry_after = 1


class DeadlineExceededError(ServiceError):
    """Judging the parts took longer than the request's deadline: nothing was recorded."""

    code = "deadline_exceeded"
    http_status = 503
    retry_after = 5


class StoreFullError(ServiceError):
    """The model store holds as many versions (or bytes) as it is allowed to."""

    code = "store_full"
    http_status = 507


class QueueUnavailableError(ServiceError):
    """The training queue (Redis) could not take a job; the job is recorded as failed (503)."""

    code = "queue_unavailable"
    http_status = 503


class StorageError(ServiceError):
    """The inspection record could not be stored; nothing was kept and no verdict is given."""

    code = "storage_unavailable"
    http_status = 503


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON shape of every error answer."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "error"


def wants_json() -> bool:
    """API, health and metrics paths answer JSON; pages answer HTML unless JSON is asked for."""
    path = request.path
    if path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _respond(status: int, code: str, message: str, **extra: Any) -> Response | tuple[str, int]:
    if wants_json():
        response = jsonify(error_body(code, message, **extra))
        response.status_code = status
        return response
    return render_template("error.html", status=status, code=code, message=message), status


def handle_anomaly_error(exc: AnomalyError) -> Any:
    """Library and service errors: their own code and status."""
    status = int(getattr(exc, "http_status", 500))
    extra = getattr(exc, "extra", {}) or {}
    if status >= 500 and not isinstance(exc, ServiceError):
        log.error("error answered %s: %s", status, exc)
    response = _respond(status, exc.code, str(exc), **extra)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and not isinstance(response, tuple):
        response.headers["Retry-After"] = str(retry_after)
    return response


def handle_http_exception(exc: HTTPException) -> Any:
    """Werkzeug's errors (404 route, 405, 413 body too large, ...) as JSON."""
    status = exc.code or 500
    if isinstance(exc, CSRFError):
        return _respond(400, "csrf_failed", f"CSRF check failed: {exc.description}")
    if status == 413:
        return _respond(413, "request_too_large", "the request body is larger than this endpoint accepts"
                        f" ({request.max_content_length} bytes)")
    response = _respond(status, _snake(exc.name), exc.description or exc.name)
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed and not isinstance(response, tuple):
            response.headers["Allow"] = ", ".join(allowed)
    return response


def handle_unexpected(exc: Exception) -> Any:
    """Anything else: log the trace, answer a request id, never the trace."""
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    request_id = getattr(g, "request_id", None) or uuid.uuid4().hex
    log.exception("unexpected error on %s %s (request %s)", request.method, request.path, request_id)
    return _respond(500, "internal_error", f"internal error; the server log has the details (request {request_id})",
                    request_id=request_id)


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on the application (API, pages and unmatched routes alike)."""
    app.register_error_handler(AnomalyError, handle_anomaly_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
