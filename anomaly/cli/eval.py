"""``anomaly eval DATASET --model M``: train on train/good, measure on test/, JSON out."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from anomaly.cli.common import parse_params, print_json
from anomaly.cli.train import add_calibration_options
from anomaly.datasets import find_categories
from anomaly.errors import DatasetError
from anomaly.progress import enable_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="train on train/good of an MVTec-layout set and measure on test/",
                       description=__doc__)
    p.add_argument("dataset", type=Path, help="an MVTec-layout category (or a folder of categories)")
    p.add_argument("--model", "-m", default="patchcore", help="detector name (default: patchcore)")
    p.add_argument("--backbone", help="timm backbone for deep detectors (default: the detector's)")
    p.add_argument("--image-size", type=int, help="model input size in pixels")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE", help="any detector parameter (JSON value)")
    add_calibration_options(p)
    p.add_argument("--limit-train", type=int, help="use at most N training images (seeded choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, dest="json_out", help="write the report(s) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.evaluate import evaluate

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    enable_progress(not args.quiet)
    params = parse_params(args.param)
    if args.backbone:
        params["backbone"] = args.backbone
    if args.image_size:
        params["image_size"] = args.image_size
    categories = find_categories(args.dataset)
    if not categories:
        raise DatasetError(f"no MVTec-layout category (a folder with train/good) at or below {args.dataset}")
    reports = [
        evaluate(c, args.model, params=params, target_frr=args.target_frr, review_rate=args.review_rate,
                 pixel_rate=args.pixel_rate, n_folds=args.folds, seed=args.seed, limit_train=args.limit_train,
                 pixel_size_mm=args.pixel_size_mm, grading=args.grading,
                 detection=not args.no_detection_estimate)
        for c in categories
    ]
    out = reports[0] if len(reports) == 1 else reports
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2))
    print_json(out)
    return 0
