"""API keys and roles.

* Keys are random (``aik_`` + 43 url-safe characters, 256 bits) and stored as their
  sha256; the key itself is shown once, when created. A key has a role: ``score`` (score
  parts, read models and records) or ``admin`` (also train, promote, roll back, give
  feedback, move thresholds).
* A client sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; a
  person signs in on ``/login`` with a key, which the signed session cookie then carries.
* With ``REQUIRE_API_KEYS`` off (the default on loopback) a request without a key acts as
  ``admin``; a key that is sent is still checked. ``anomaly serve`` turns the setting on
  for every address but loopback, and refuses to start if no key exists then.
* Cross-site protection: a state-changing request that relies on the session cookie must
  carry the CSRF token (forms: hidden field; scripts: ``X-CSRFToken`` header), and one
  without a key whose ``Origin``/``Sec-Fetch-Site`` says another site sent it is refused.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, g, request, session

from service.db import ROLES, ApiKeyRecord, Database, utcnow
from service.errors import AuthRequiredError, BadRequestError, ConflictError, ForbiddenError, InvalidApiKeyError

F = TypeVar("F", bound=Callable[..., Any])
KEY_PREFIX = "aik_"
_RANK = {role: i for i, role in enumerate(ROLES)}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        name: Key name, or ``anonymous``.
        role: ``score`` or ``admin``; None when nobody is signed in and keys are required.
        via: ``key`` (header), ``session`` (signed-in browser) or ``open`` (no key needed).
    """

    name: str
    role: str | None
    via: str

    def allows(self, role: str) -> bool:
        return self.role is not None and _RANK[self.role] >= _RANK[role]


def hash_key(key: str) -> str:
    """sha256 hex of a key (keys are 256-bit random, so no slow hash is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(db: Database, name: str, role: str) -> str:
    """Create a key, store its hash, return the key (the only time it is seen).

    Raises:
        BadRequestError: unknown role or bad name.
        ConflictError: a key of that name exists.
    """
    if role not in ROLES:
        raise BadRequestError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name or len(name) > 64 or not name.isprintable():
        raise BadRequestError(f"key name must be 1-64 printable characters, got {name!r}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        if s.scalar(sa.select(ApiKeyRecord.id).where(ApiKeyRecord.name == name)) is not None:
            raise ConflictError(f"an API key named {name!r} exists already; revoke it or pick another name")
        s.add(ApiKeyRecord(name=name, role=role, key_sha256=hash_key(key), prefix=key[:10], created_at=utcnow()))
    return key


def revoke_api_key(db: Database, name: str) -> bool:
    """Revoke the key called ``name``; False if there is no such active key."""
    with db.session() as s:
        record = s.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.name == name, ApiKeyRecord.revoked_at.is_(None)))
        if record is None:
            return False
        record.revoked_at = utcnow()
        return True


def list_api_keys(db: Database) -> list[dict[str, Any]]:
    """Every key, without its hash."""
    with db.session() as s:
        rows = s.scalars(sa.select(ApiKeyRecord).order_by(ApiKeyRecord.id)).all()
        return [{"name": r.name, "role": r.role, "prefix": r.prefix, "created_at": r.created_at.isoformat(),
                 "revoked": r.revoked_at is not None} for r in rows]


def active_key_count(db: Database) -> int:
    """How many keys are not revoked."""
    with db.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(ApiKeyRecord)
                            .where(ApiKeyRecord.revoked_at.is_(None))) or 0)


def lookup_key(db: Database, key: str) -> ApiKeyRecord | None:
    """The active key record for ``key``, or None."""
    with db.session() as s:
        return s.scalar(sa.select(ApiKeyRecord).where(ApiKeyRecord.key_sha256 == hash_key(key),
                                                      ApiKeyRecord.revoked_at.is_(None)))


def key_from_headers() -> str | None:
    """The API key sent in ``Authorization: Bearer`` or ``X-API-Key``, if any."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key", "").strip() or None


def load_principal() -> Principal:
    """Work out who is calling (``before_request``); raises on a bad key."""
    db: Database = current_app.extensions["anomaly_db"]
    key = key_from_headers()
    if key is not None:
        record = lookup_key(db, key)
        if record is None:
            raise InvalidApiKeyError("the API key is unknown or revoked")
        return Principal(record.name, record.role, "key")
    key_id = session.get("key_id")
    if key_id is not None:
        with db.session() as s:
            record = s.get(ApiKeyRecord, key_id)
            if record is not None and record.revoked_at is None:
                return Principal(record.name, record.role, "session")
        session.pop("key_id", None)
    if current_app.config["REQUIRE_API_KEYS"]:
        return Principal("anonymous", None, "open")
    return Principal("anonymous", "admin", "open")


def current_principal() -> Principal:
    """The caller of the current request."""
    principal = g.get("principal")
    if principal is None:
        principal = g.principal = load_principal()
    return principal


def require(role: str) -> Callable[[F], F]:
    """Decorator: the caller needs ``role`` (or a higher one)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            check_role(role)
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def check_role(role: str) -> Principal:
    """Raise 401/403 unless the caller has ``role``."""
    principal = current_principal()
    if principal.role is None:
        raise AuthRequiredError("an API key is required: send 'Authorization: Bearer <key>' or sign in")
    if not principal.allows(role):
        raise ForbiddenError(f"this action needs the {role!r} role; key {principal.name!r} has {principal.role!r}")
    return principal


def check_same_origin() -> None:
    """Refuse a state-changing request that a browser says another site sent."""
    if request.method not in UNSAFE_METHODS or key_from_headers() is not None:
        return
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise ForbiddenError("cross-site request refused (Sec-Fetch-Site: cross-site)")
    origin = request.headers.get("Origin")
    if origin == "null":  # sandboxed frames, data: and file: pages: no site we can vouch for
        raise ForbiddenError("request from an opaque origin (Origin: null) refused")
    if origin and urlsplit(origin).netloc.lower() != request.host.lower():
        raise ForbiddenError(f"request from origin {origin!r} refused; this server is {request.host!r}")
