"""``anomaly train IMAGES --name NAME``: good images to a new model version in the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from anomaly.cli.common import add_model_options, add_store_option, model_params, open_store, print_json, start_console

if TYPE_CHECKING:
    from anomaly.training import TrainingOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model version on a folder of good images (or an MVTec category)",
                       description=__doc__)
    p.add_argument("images", type=Path, help="folder of good images, or an MVTec category (uses train/good)")
    p.add_argument("--name", "-n", required=True, help="model name in the store")
    add_model_options(p)
    add_calibration_options(p)
    p.add_argument("--promote", action="store_true", help="mark the new version for production")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_option(p)
    p.set_defaults(func=run)


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """The :class:`~anomaly.training.TrainingOptions` flags (shared with ``anomaly eval``)."""
    p.add_argument("--target-frr", type=float, default=0.01,
                   help="wanted share of good parts judged NG (default 0.01)")
    p.add_argument("--review-rate", type=float, default=None,
                   help="wanted share of good parts sent to REVIEW (default 3 x target-frr; 0 = one cut)")
    p.add_argument("--pixel-rate", type=float, default=None,
                   help="wanted share of good parts showing a region (default target-frr + review-rate)")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default 5)")
    p.add_argument("--pixel-size-mm", type=float, default=None, help="side of one image pixel in mm (region measures)")
    p.add_argument("--grading", type=json.loads, default=None, metavar="JSON",
                   help='region grading rules, e.g. \'{"ng_if_any": {"length_mm": 2}}\' (see anomaly.grading)')
    p.add_argument("--no-detection-estimate", action="store_true",
                   help="skip scoring synthetic defects at the thresholds")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the cross-fitting folds, the synthetic defects and any sub-sampling (default 0)")
    p.add_argument("--max-images", "--limit-train", type=int, default=None, metavar="N",
                   help="train on at most N of the good images (a seeded choice)")


def training_options(args: argparse.Namespace) -> TrainingOptions:
    """The :class:`~anomaly.training.TrainingOptions` the calibration flags ask for."""
    from anomaly.training import TrainingOptions

    return TrainingOptions(target_frr=args.target_frr, review_rate=args.review_rate, pixel_rate=args.pixel_rate,
                           n_folds=args.folds, seed=args.seed, pixel_size_mm=args.pixel_size_mm,
                           grading=args.grading, detection=not args.no_detection_estimate,
                           max_images=args.max_images)


def run(args: argparse.Namespace) -> int:
    from anomaly.datasets import good_images
    from anomaly.training import train_into

    start_console(args.quiet)
    options = training_options(args)
    paths = good_images(args.images)
    trained = train_into(open_store(args), args.name, args.model, paths, options, params=model_params(args),
                         source=str(args.images), promote=True if args.promote else None)
    model, cal = trained.model, trained.model.calibration
    print_json({
        "name": args.name,
        "version": trained.version,
        "path": str(trained.path),
        "production": trained.production,
        "detector": args.model,
        "n_images": model.training.n_images,
        "fit_seconds": round(model.fit_seconds, 3),
        "t_review": cal.t_review,
        "t_ng": cal.t_ng,
        "pixel_threshold": cal.pixel_threshold,
        "expected": cal.expected,
        # Goods not aligned out of fold (classical models): ALIGNMENT_FAILED on the line.
        "alignment_refused": cal.alignment_refused,
        "detection": (cal.detection or {}).get("summary"),
        "min_size_90": (cal.detection or {}).get("min_size_90"),
    })
    return 0
