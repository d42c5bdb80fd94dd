"""``anomaly train IMAGES --name NAME``: good images to a new model version in the store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anomaly.cli.common import add_model_options, add_store_option, model_params, open_store, print_json, start_console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model version on a folder of good images (or an MVTec category)",
                       description=__doc__)
    p.add_argument("images", type=Path, help="folder of good images, or an MVTec category (uses train/good)")
    p.add_argument("--name", "-n", required=True, help="model name in the store")
    add_model_options(p)
    add_calibration_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-fitting folds and synthetic defects")
    p.add_argument("--promote", action="store_true", help="mark the new version for production")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_option(p)
    p.set_defaults(func=run)


def add_calibration_options(p: argparse.ArgumentParser) -> None:
    """Options of the good-only calibration (shared with ``anomaly eval``)."""
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


def run(args: argparse.Namespace) -> int:
    from anomaly.bundle import save_bundle
    from anomaly.datasets import good_images
    from anomaly.training import train

    start_console(args.quiet)
    paths = good_images(args.images)
    model = train(args.model, paths, params=model_params(args), target_frr=args.target_frr,
                  review_rate=args.review_rate, pixel_rate=args.pixel_rate, n_folds=args.folds, seed=args.seed,
                  source=str(args.images),
                  pixel_size_mm=args.pixel_size_mm, grading=args.grading,
                  detection=not args.no_detection_estimate)
    store = open_store(args)
    version = store.add(
        args.name,
        lambda target: save_bundle(model.detector, target, training=model.training, calibration=model.calibration,
                                   notes={"fit_seconds": round(model.fit_seconds, 3),
                                          "calibration_seconds": round(model.calibration_seconds, 3),
                                          "detection_seconds": round(model.detection_seconds, 3)}),
        promote=True if args.promote else None,
    )
    cal = model.calibration
    print_json({
        "name": args.name,
        "version": version,
        "path": str(store.path(args.name, version)),
        "production": store.production(args.name) == version,
        "detector": args.model,
        "n_images": model.training.n_images,
        "fit_seconds": round(model.fit_seconds, 3),
        "t_review": cal["t_review"],
        "t_ng": cal["t_ng"],
        "pixel_threshold": cal.get("pixel_threshold"),
        "expected": cal.get("expected"),
        # Goods not aligned out of fold (classical models): ALIGNMENT_FAILED on the line.
        "alignment_refused": cal.get("alignment_refused"),
        "detection": (cal.get("detection") or {}).get("summary"),
        "min_size_90": (cal.get("detection") or {}).get("min_size_90"),
    })
    return 0
