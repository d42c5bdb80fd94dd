"""``anomaly models list|show|promote|rollback|set-threshold``: the model store."""

from __future__ import annotations

import argparse
import getpass
import json

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
    a = actions.add_parser("promote", help="mark a version for production")
    a.add_argument("name")
    a.add_argument("version", type=int)
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
    store.promote(args.name, args.version)
    print_json({"name": args.name, "production": store.production(args.name)})
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
