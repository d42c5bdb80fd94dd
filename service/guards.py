"""Request guards every route shares: which Host names are ours, and no control characters in text.

* **Hosts.** A page on another site can rebind its own name to 127.0.0.1 (DNS rebinding) and
  then talk to a loopback service as a same-origin page, ``Host`` and ``Origin`` naming the
  attacker's site. Any ``Host`` not in the list is answered 400: the loopback names always, plus
  ``ALLOWED_HOSTS`` (``anomaly serve`` adds the address it binds and, on a wildcard address, this
  machine's names; ``--allowed-host`` adds more). Our own check, not Flask's ``TRUSTED_HOSTS``:
  Werkzeug's cuts an IPv6 literal at its first colon, so ``[::1]`` could never be allowed.
* **Text.** NUL and the other C0 control characters (tab, line feed and carriage return
  excepted) have no place in a name, a part id, a filter or a note; PostgreSQL refuses NUL
  in text outright. The path and every query parameter, form field and JSON string (keys
  too) are checked, and refused with 400 ``bad_request`` naming the field.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from flask import Flask, Request, current_app, request

from service.errors import BadRequestError

#: Host names a loopback service is reached by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def allowed_hosts(configured: str | Iterable[str] | None) -> list[str]:
    """The loopback names plus ``configured`` (a comma-separated string or a list), without duplicates."""
    if isinstance(configured, str):
        configured = configured.split(",")
    names = [*LOOPBACK_HOSTS, *(str(n).strip().lower() for n in configured or ())]
    return list(dict.fromkeys(n for n in names if n))


def control_character_field(values: Any, field: str = "") -> str | None:
    """The name of the first field (``a.b[2]`` for nested JSON) whose text holds a control character."""
    if isinstance(values, str):
        return field or "value" if _CONTROL.search(values) else None
    if isinstance(values, dict):
        for key, value in values.items():
            name = f"{field}.{key}" if field else str(key)
            if isinstance(key, str) and _CONTROL.search(key):
                return name
            found = control_character_field(value, name)
            if found:
                return found
    if isinstance(values, list):
        for i, value in enumerate(values):
            found = control_character_field(value, f"{field}[{i}]")
            if found:
                return found
    return None


def _refuse(found: str | None) -> None:
    if found is not None:
        raise BadRequestError(f"{found} contains a control character (NUL, ESC, ...); send plain text")


def _multidict_field(values: Any) -> str | None:
    for key in values:
        texts = [key, *values.getlist(key)]
        if any(isinstance(t, str) and _CONTROL.search(t) for t in texts):
            return str(key)
    return None


class GuardedRequest(Request):
    """Flask's request, checking form fields and JSON bodies for control characters as they are parsed.

    Checked when a view first reads them, not before: a scoring view lowers the body limit
    for its upload first, and the body must not be read under the application-wide limit.
    """

    def _load_form_data(self) -> None:
        super()._load_form_data()
        _refuse(_multidict_field(self.form))

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        body = super().get_json(force=force, silent=silent, cache=cache)
        _refuse(control_character_field(body))
        return body


def host_name(host: str) -> str:
    """The name in a ``Host`` header, lower case, without the port (``[::1]:8000`` -> ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_request() -> None:
    """``before_request``: an allowed ``Host``, and no control characters in the path or the query."""
    allowed = current_app.extensions["anomaly_allowed_hosts"]
    name = host_name(request.headers.get("Host", ""))
    if name not in allowed:
        raise BadRequestError(f"this server does not answer to the host name {name[:80]!r}; add it with "
                              "`anomaly serve --allowed-host NAME` (or ALLOWED_HOSTS) if clients use it")
    _refuse("path" if _CONTROL.search(request.path) else _multidict_field(request.args))


def install_guards(app: Flask) -> None:
    """The host check (``ALLOWED_HOSTS``) and the text checks, on every route of ``app``."""
    app.extensions["anomaly_allowed_hosts"] = frozenset(allowed_hosts(app.config.get("ALLOWED_HOSTS")))
    app.request_class = GuardedRequest
    app.before_request(check_request)
