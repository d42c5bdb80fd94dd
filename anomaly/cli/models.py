"""``anomaly models list|show|promote|rollback``: the model store."""

from __future__ import annotations

import argparse

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
