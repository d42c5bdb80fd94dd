"""``anomaly demo``: generate the demo product, train PatchCore on its good images, judge its test images.

Prints a verdict table and writes heat-map overlays into ``<out>/overlays``. With
``--serve`` it then serves the demo model over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from anomaly.progress import enable_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the demo product, train on it, score it (and serve it)",
                       description=__doc__)
    p.add_argument("--data", type=Path, default=Path("data"), help="demo product folder (generated if missing)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="model store and overlays go here")
    p.add_argument("--model", "-m", default="patchcore", help="detector name (default: patchcore)")
    p.add_argument("--serve", action="store_true", help="serve the demo model afterwards")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (with --serve)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.bundle import load_bundle, save_bundle
    from anomaly.datasets import MVTecCategory, find_categories
    from anomaly.demo.product import generate_product
    from anomaly.imageio import read_image, write_png
    from anomaly.inspect import inspect, render_overlay
    from anomaly.store import ModelStore
    from anomaly.training import train

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    enable_progress(not args.quiet)
    categories = find_categories(args.data) if args.data.is_dir() else []
    if not categories:
        print(f"generating the demo product into {args.data} ...")
        categories = [generate_product(args.data)]
    category = MVTecCategory(categories[0])
    train_paths = category.train_good()
    print(f"training {args.model} on {len(train_paths)} good images of '{category.name}' ...")
    start = time.perf_counter()
    model = train(args.model, train_paths, source=str(category.root))
    store = ModelStore(args.out / "models")
    name = f"demo-{category.name}"
    version = store.add(name, lambda target: save_bundle(model.detector, target, training=model.training,
                                                        calibration=model.calibration), promote=True)
    print(f"trained in {time.perf_counter() - start:.1f} s -> model '{name}' version {version} in {store.root}")
    bundle = load_bundle(store.path(name, version))
    overlays = args.out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in category.test_samples():
        image = read_image(sample.path)
        (result,) = inspect(bundle, [image])
        write_png(overlays / f"{sample.defect_type}_{sample.path.stem}.png", render_overlay(bundle, image, result))
        rows.append((f"{sample.defect_type}/{sample.path.name}", sample.defect_type != "good", result))
    print()
    print(f"{'image':32s} {'truth':6s} {'verdict':7s} {'score':>8s} {'calibrated':>10s}")
    for label, defective, r in rows:
        print(f"{label:32s} {'NG' if defective else 'GOOD':6s} {r.verdict:7s} {r.score:8.3f} {r.calibrated_score:10.2f}")
    caught = sum(1 for _, d, r in rows if d and r.verdict != "GOOD")
    false = sum(1 for _, d, r in rows if not d and r.verdict != "GOOD")
    n_def = sum(1 for _, d, _ in rows if d)
    print(f"\ndefective parts flagged (NG or REVIEW): {caught}/{n_def}; good parts flagged: {false}/{len(rows) - n_def}")
    print(f"heat-map overlays: {overlays.resolve()}")
    if args.serve:
        from anomaly.cli.serve import serve_store

        return serve_store(store.root, host="127.0.0.1", port=args.port, workers=1)
    return 0
