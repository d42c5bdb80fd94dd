"""``anomaly train IMAGES --name NAME``: good images to a new model version in the store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from anomaly.cli.common import add_store_option, open_store, parse_params, print_json
from anomaly.progress import enable_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model version on a folder of good images (or an MVTec category)",
                       description=__doc__)
    p.add_argument("images", type=Path, help="folder of good images, or an MVTec category (uses train/good)")
    p.add_argument("--name", "-n", required=True, help="model name in the store")
    p.add_argument("--model", "-m", default="patchcore", help="detector name (default: patchcore)")
    p.add_argument("--backbone", help="timm backbone for deep detectors")
    p.add_argument("--image-size", type=int, help="model input size in pixels")
    p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE", help="any detector parameter (JSON value)")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of the images held out to calibrate")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out split")
    p.add_argument("--promote", action="store_true", help="mark the new version for production")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_store_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.bundle import save_bundle
    from anomaly.datasets import good_images
    from anomaly.training import train

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    enable_progress(not args.quiet)
    params = parse_params(args.param)
    if args.backbone:
        params["backbone"] = args.backbone
    if args.image_size:
        params["image_size"] = args.image_size
    paths = good_images(args.images)
    model = train(args.model, paths, params=params, holdout_fraction=args.holdout, seed=args.seed,
                  source=str(args.images))
    store = open_store(args)
    version = store.add(
        args.name,
        lambda target: save_bundle(model.detector, target, training=model.training, calibration=model.calibration,
                                   notes={"fit_seconds": round(model.fit_seconds, 3)}),
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
    })
    return 0
