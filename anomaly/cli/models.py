"""``anomaly models list|show|promote|rollback|set-threshold``: the model store."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
from pathlib import Path

from anomaly.calibration import Calibration
from anomaly.cli.common import add_store_option, open_store, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, show, promote and roll back stored model versions", description=__doc__)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    a = actions.add_parser("list", help="every model and version")
    a.add_argument("name", nargs="?", help="only this model")
    a.set_defaults(func=run_list)
    a = actions.add_parser("show", help="one version's manifest")
    a.add_argument("name")
    a.add_argument("--version", type=int, help="default: production")
    a.set_defaults(func=run_show)
    a = actions.add_parser(
        "promote", help="mark a version for production (through its gate when the service's database is given)",
        description="Put a version in production. Given the service's records database (--db-url or --instance, "
                    "or ANOMALY_DATABASE_URL / ANOMALY_INSTANCE_PATH), it must pass the promotion gate the service "
                    "applies: flag every part the line confirmed defective and meet its false-reject target; "
                    "--force promotes anyway and is recorded. Without one there is no regression set to check, "
                    "and it says so.")
    a.add_argument("name")
    a.add_argument("version", type=int)
    a.add_argument("--db-url", help="the service's records database URL")
    a.add_argument("--db-schema", help="PostgreSQL schema of the service's tables")
    a.add_argument("--instance", type=Path, help="the service's instance folder (config.py, database, archive)")
    a.add_argument("--force", action="store_true", help="promote even if the gate fails (recorded as forced)")
    a.set_defaults(func=run_promote)
    a = actions.add_parser("rollback", help="return production to the previous version")
    a.add_argument("name")
    a.set_defaults(func=run_rollback)
    a = actions.add_parser("set-threshold", help="move thresholds without retraining (writes a new version)",
                           description="Write a new version with moved thresholds; the old version is untouched. "
                                       "Rates are turned into thresholds through the stored good-score sample.")
    a.add_argument("name")
    a.add_argument("--version", type=int, help="version to start from (default: production)")
    a.add_argument("--t-ng", type=float, help="new NG threshold (raw score)")
    a.add_argument("--t-review", type=float, help="new REVIEW threshold (raw score)")
    a.add_argument("--target-frr", type=float, help="new wanted share of good parts judged NG")
    a.add_argument("--review-rate", type=float, help="new wanted share of good parts sent to REVIEW")
    a.add_argument("--pixel-threshold", type=float, help="new pixel threshold of regions (raw map value)")
    a.add_argument("--pixel-rate", type=float, help="new wanted share of good parts showing a region")
    a.add_argument("--grading", type=json.loads, metavar="JSON", help="new region grading rules (see anomaly.grading)")
    a.add_argument("--reason", help="why (recorded in the new version)")
    a.add_argument("--promote", action="store_true", help="put the new version in production")
    a.set_defaults(func=run_set_threshold)
    for action in actions.choices.values():
        add_store_option(action)


def _store(args):
    return open_store(args)


def run_list(args: argparse.Namespace) -> int:
    print_json([v.summary() for v in _store(args).list(args.name)])
    return 0


def run_show(args: argparse.Namespace) -> int:
    store = _store(args)
    path = store.path(args.name, args.version)
    manifest = store.manifest(args.name, args.version)
    print_json({"name": args.name, "version": int(path.name), "path": str(path),
                "production": store.production(args.name) == int(path.name), "manifest": manifest})
    return 0


def run_promote(args: argparse.Namespace) -> int:
    store = _store(args)
    if not (args.db_url or args.instance or os.environ.get("ANOMALY_DATABASE_URL")
            or os.environ.get("ANOMALY_INSTANCE_PATH")):
        store.promote(args.name, args.version)
        logging.getLogger(__name__).warning("no records database given: version %s of %s promoted without a gate "
                                            "(the confirmed defective parts live in the service's database)",
                                            args.version, args.name)
        print_json({"name": args.name, "production": store.production(args.name), "gate": None})
        return 0
    return _gated_promote(args, store)


def _gated_promote(args: argparse.Namespace, store) -> int:
    """Promote through the service's gate (service.gates), on the service's own settings and database."""
    settings = {"ANOMALY_DATABASE_URL": args.db_url, "ANOMALY_DATABASE_SCHEMA": args.db_schema,
                "ANOMALY_STORE": str(store.root.resolve()),
                "ANOMALY_INSTANCE_PATH": str(args.instance.resolve()) if args.instance else None,
                "ANOMALY_PRELOAD_MODELS": "false", "ANOMALY_MQTT_PUBLISHER": "false"}
    os.environ.update({k: v for k, v in settings.items() if v})
    import sqlalchemy as sa

    from service.app import create_app
    from service.errors import StorageError
    from service.gates import gated_promote

    bundle = store.load(args.name, args.version)  # an unknown version is refused before the database is touched
    app = None
    try:
        app = create_app(preload=False)
        previous = store.production(args.name)
        gate = gated_promote(app.extensions["anomaly_db"], app.extensions["anomaly_archive"], store, args.name,
                             args.version, bundle, force=args.force, by=f"cli:{_user() or 'unknown'}")
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).splitlines()[0]
        raise StorageError(f"the records database failed, so the gate did not finish ({reason}); production is "
                           f"version {store.production(args.name)}") from None
    finally:
        if app is not None:
            app.extensions["anomaly_jobs"].shutdown(wait=True)
            app.extensions["anomaly_db"].dispose()
    print_json({"name": args.name, "production": args.version, "previous": previous, "gate": gate.to_dict(),
                "forced": bool(args.force and not gate.passed)})
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    version = store.rollback(args.name)
    print_json({"name": args.name, "production": version})
    return 0


def run_set_threshold(args: argparse.Namespace) -> int:
    from anomaly.thresholds import ThresholdChange, set_thresholds

    store = _store(args)
    change = ThresholdChange(t_ng=args.t_ng, t_review=args.t_review, target_frr=args.target_frr,
                             review_rate=args.review_rate, pixel_threshold=args.pixel_threshold,
                             pixel_rate=args.pixel_rate, grading=args.grading)
    version = set_thresholds(store, args.name, args.version, change=change, promote=args.promote,
                             changed_by=_user(), reason=args.reason)
    cal = Calibration.from_manifest(store.manifest(args.name, version)["calibration"])
    print_json({"name": args.name, "version": version, "parent_version": cal.history[-1]["from_version"],
                "production": store.production(args.name), "t_review": cal.t_review, "t_ng": cal.t_ng,
                "pixel_threshold": cal.pixel_threshold, "expected": cal.expected,
                "detection": (cal.detection or {}).get("summary")})
    return 0


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
