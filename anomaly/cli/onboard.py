"""``anomaly onboard GOOD_DIR --name NAME``: choose the model, input geometry and thresholds from good images alone.

``anomaly onboard MORE_DIR --name NAME --add``: teach the onboarded model more goods (a new version,
without refitting the first ones where the model allows; see :mod:`anomaly.adding`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly.cli.common import add_store_option, open_store, print_json, start_console
from anomaly.errors import InvalidParameterError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onboard", help="choose and train a model from a folder of good images, with the evidence",
                       description=__doc__)
    p.add_argument("images", type=Path, help="folder of good images, or an MVTec category (uses train/good)")
    p.add_argument("--name", "-n", required=True, help="model name in the store")
    p.add_argument("--target-frr", type=float, default=0.01,
                   help="wanted share of good parts judged NG (default 0.01)")
    p.add_argument("--budget-min", type=float, default=10.0,
                   help="minutes for the search among candidates (default 10; the winner's final fit comes on top)")
    p.add_argument("--seed", type=int, default=0, help="seed of every split, fold and synthetic defect (default 0)")
    p.add_argument("--add", action="store_true",
                   help="the folder holds MORE goods for the existing model NAME: extend it (production version, or "
                        "--version) instead of choosing again")
    p.add_argument("--version", type=int, default=None, help="with --add: the version to extend")
    p.add_argument("--promote", action="store_true", help="mark the new version for production")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.datasets import good_images
    from anomaly.goods import names_of
    from anomaly.onboarding import onboard

    start_console(args.quiet)
    paths = good_images(args.images)
    promote = True if args.promote else None
    if args.add:
        from anomaly.adding import add_goods

        done = add_goods(open_store(args), args.name, paths, names=names_of(paths), version=args.version,
                         seed=args.seed, promote=promote)
        cal = done.version.model.calibration
        print_json({"name": done.version.name, "version": done.version.version,
                    "production": done.version.production, "added": done.record["added"][-1],
                    "provisional": done.record["provisional"], "t_review": cal.t_review, "t_ng": cal.t_ng,
                    "expected": cal.expected})
        return 0
    if args.version is not None:
        raise InvalidParameterError("--version goes with --add")
    done = onboard(open_store(args), args.name, paths, names=names_of(paths), target_frr=args.target_frr,
                   budget_seconds=60.0 * args.budget_min, seed=args.seed, promote=promote)
    cal, record = done.version.model.calibration, done.record
    print_json({
        "name": done.version.name,
        "version": done.version.version,
        "production": done.version.production,
        "chosen": done.winner.name,
        "detector": done.winner.detector,
        "params": done.winner.params,
        "why": record["why"],
        "provisional": record["provisional"],
        "survey": record["survey"]["notes"],
        "candidates": [{"name": c["name"], **{k: c["figures"][-1].get(k) for k in (
            "detection", "auroc", "held_out_frr", "fit_seconds", "latency_ms", "error")}}
                       for c in record["candidates"]],
        "t_review": cal.t_review,
        "t_ng": cal.t_ng,
        "expected": cal.expected,
        "search_seconds": record["search_seconds"],
    })
    return 0
