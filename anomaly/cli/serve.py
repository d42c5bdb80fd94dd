"""``anomaly serve``: the HTTP service (JSON API, web pages, records) under gunicorn.

Binds to 127.0.0.1 unless told otherwise. On any other address API keys are required,
and the server refuses to start until one exists::

    anomaly serve --create-key line-3 --role score     # prints the key once
    anomaly serve --create-key alice --role admin
    anomaly serve --host 0.0.0.0 --workers 4

Settings not given here come from ``<instance>/config.py`` and ``ANOMALY_*`` variables
(see ``service.config``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from anomaly.cli.common import add_store_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP (JSON API, web pages, records)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs API keys)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4,
                   help="threads per worker (default 4): health checks, pages and slow clients are answered while "
                        "a part is judged; parts are judged one at a time per worker (SCORING_SLOTS)")
    p.add_argument("--timeout", type=int, default=120, help="seconds before a silent worker is restarted")
    add_store_option(p)
    p.add_argument("--runtime", choices=("bundle", "onnx"), default=None,
                   help="bundle (default): serve the model store's bundles; onnx: serve a deploy store of exported "
                        "models (`anomaly export --deploy-store`) through onnxruntime, without torch and "
                        "without training")
    p.add_argument("--db-url", help="SQLAlchemy URL of the records database (default: SQLite in the instance folder)")
    p.add_argument("--db-schema", help="PostgreSQL schema holding the tables (default: the server's search_path)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name clients reach the server by, besides loopback and the bound address "
                        "(repeatable; any other Host is answered 400)")
    p.add_argument("--instance", type=Path, help="instance folder (config.py, secret key, database, archive)")
    p.add_argument("--archive", choices=("none", "rejected", "all"), help="which parts to archive (default rejected)")
    p.add_argument("--require-keys", action="store_true", help="require API keys on loopback too")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--migrate-only", action="store_true", help="create or upgrade the database schema and exit")
    p.add_argument("--create-key", metavar="NAME", help="create an API key, print it once, and exit")
    p.add_argument("--role", choices=("score", "admin"), default="score", help="role of --create-key (default score)")
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host names a server bound to ``host`` answers, besides the loopback ones (see ``service.guards``).

    A specific address answers to itself; a wildcard one (``0.0.0.0``, ``::``) to this machine's
    name, fully qualified name and the addresses that name resolves to.
    """
    names = [h.strip().lower() for h in extra if h.strip()]
    bare = host.strip("[]")
    if bare in ("0.0.0.0", "::", ""):
        machine = socket.gethostname()
        names += [machine, socket.getfqdn(machine)]
        try:
            names += [info[4][0] for info in socket.getaddrinfo(machine, None)]
        except OSError:
            pass
    else:
        names.append(bare)
    out = []
    for name in names:
        out += [name.lower()] if ":" not in name else [name.lower(), f"[{name.lower()}]"]
    return list(dict.fromkeys(out))


def _settings(store_root: str | os.PathLike | None, *, host: str, db_url: str | None, instance: Path | None,
              archive: str | None, require_keys: bool, db_schema: str | None = None,
              allowed_hosts: list[str] | tuple[str, ...] = (), runtime: str | None = None) -> dict[str, str]:
    env: dict[str, str] = {"ANOMALY_ALLOWED_HOSTS": json.dumps(served_hosts(host, allowed_hosts))}
    if runtime:
        env["ANOMALY_RUNTIME"] = json.dumps(runtime)
    if store_root is not None:
        env["ANOMALY_STORE"] = str(Path(store_root).resolve())
    if db_url:
        env["ANOMALY_DATABASE_URL"] = db_url
    if db_schema:
        env["ANOMALY_DATABASE_SCHEMA"] = db_schema
    if instance is not None:
        env["ANOMALY_INSTANCE_PATH"] = str(instance.resolve())
    if archive:
        env["ANOMALY_ARCHIVE"] = archive
    if require_keys or not is_loopback(host):
        env["ANOMALY_REQUIRE_API_KEYS"] = "true"
    return env


def _check_app(settings: dict[str, str]) -> Any:
    """Build the app once in this process (no models loaded): config, database schema, keys."""
    os.environ.update(settings)
    from service.app import create_app

    return create_app(preload=False)


def serve_store(store_root: str | os.PathLike | None, *, host: str = "127.0.0.1", port: int = 8000,
                workers: int = 2, threads: int = 4, timeout: int = 120, db_url: str | None = None,
                instance: Path | None = None, archive: str | None = None, require_keys: bool = False,
                access_log: bool = False, verbose: int = 0, db_schema: str | None = None,
                allowed_hosts: list[str] | tuple[str, ...] = (), runtime: str | None = None) -> int:
    """Serve a model store under gunicorn until interrupted.

    Args:
        store_root: Model store folder (None: ``$ANOMALY_STORE`` or ``./models``).
        host: Address to bind; anything but loopback requires API keys.
        port: Port to bind.
        workers: gunicorn worker processes (each loads the production models once).
        threads: Threads per worker.
        timeout: Seconds before gunicorn restarts a silent worker.
        db_url: Records database URL (default: SQLite in the instance folder).
        instance: Instance folder.
        archive: ``none``, ``rejected`` or ``all``.
        require_keys: Require API keys on loopback too.
        access_log: Log every request to standard error.
        db_schema: PostgreSQL schema of the records' tables.
        allowed_hosts: Host names answered besides loopback and ``host`` itself.
        runtime: ``"onnx"`` serves a deploy store of exported models (no torch); ``None``/``"bundle"`` bundles.
        verbose: ``-v`` count: with any, the workers log at DEBUG and gunicorn and the libraries at INFO.

    Returns:
        gunicorn's exit status (2 when the configuration is refused).
    """
    from service.auth import active_key_count

    settings = _settings(store_root, host=host, db_url=db_url, instance=instance, archive=archive,
                         require_keys=require_keys, db_schema=db_schema, allowed_hosts=allowed_hosts,
                         runtime=runtime)
    app = _check_app(settings)
    db = app.extensions["anomaly_db"]
    if app.config["REQUIRE_API_KEYS"] and active_key_count(db) == 0:
        print(f"refusing to serve on {host}: API keys are required there and none exists; create one with\n"
              f"  anomaly serve --create-key NAME --role admin" + (f" --db-url {db_url}" if db_url else ""),
              file=sys.stderr)
        return 2
    store_path = app.extensions["anomaly_store"].root.resolve()
    db_display = db.display_url
    db.dispose()

    metrics_dir = tempfile.mkdtemp(prefix="anomaly-metrics-")
    env = dict(os.environ)
    env.update(settings)
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if verbose:
        env["ANOMALY_LOG_LEVEL"] = "DEBUG"
    # Each worker runs its own inference; share the cores instead of oversubscribing them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    bind = f"[{host.strip('[]')}]:{port}" if ":" in host.strip("[]") else f"{host}:{port}"
    command = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
               "--worker-class", "gthread", "--threads", str(threads), "--timeout", str(timeout),
               "--graceful-timeout", "20", "--config", "python:service.gunicorn_conf", "--name", "anomaly-serve"]
    if access_log:
        command += ["--access-logfile", "-"]
    command.append("service:create_app()")
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    url = f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
    what = "exported models (onnxruntime)" if app.config["RUNTIME"] == "onnx" else "models"
    print(f"serving {what} from {store_path}\nrecords in {db_display}\n"
          f"{workers} worker(s); API keys {'required' if app.config['REQUIRE_API_KEYS'] else 'not required'}\n"
          f"open {url}  (API: {url}api/v1, docs: {url}docs/api); Ctrl+C stops", flush=True)
    proc = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the terminal sent SIGINT to gunicorn too; wait for it to stop
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    if args.migrate_only or args.create_key:
        settings = _settings(args.store, host=args.host, db_url=args.db_url, instance=args.instance,
                             archive=args.archive, require_keys=args.require_keys, db_schema=args.db_schema)
        app = _check_app(settings)
        db = app.extensions["anomaly_db"]
        if args.create_key:
            from service.auth import create_api_key

            key = create_api_key(db, args.create_key, args.role)
            print(key)
            print(f"API key {args.create_key!r} ({args.role}) created; it is stored hashed and not shown again",
                  file=sys.stderr)
        else:
            from service.db import current_version

            print(f"database {db.display_url}: schema version {current_version(db.engine)}")
        return 0
    return serve_store(args.store, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
                       timeout=args.timeout, db_url=args.db_url, instance=args.instance, archive=args.archive,
                       require_keys=args.require_keys, access_log=args.access_log, verbose=args.verbose,
                       db_schema=args.db_schema, allowed_hosts=args.allowed_host, runtime=args.runtime)
