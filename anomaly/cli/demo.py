"""``anomaly demo``: generate a demo product, train a detector on its good images, judge its test images.

Products: ``bracket`` (default: the machined bracket in ``data/``, judged by PatchCore) and
``assembly`` (a populated board whose components can be missing, swapped or rotated,
judged by the ``difference`` model; generated into ``<out>/data``). Prints a verdict
table, how many parts of each defect kind were flagged, and writes heat-map overlays into
``<out>/overlays``. With ``--serve`` it then serves the demo model over HTTP.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from anomaly.cli.common import start_console


@dataclass(frozen=True)
class DemoProduct:
    """Defaults of one demo product.

    Attributes:
        label: What the generation message calls it.
        data: Folder of its images (generated there if missing); ``None``: ``<out>/data``.
        out: Folder of the model store and the overlays.
        model: Detector that judges it.
    """

    label: str
    data: Path | None
    out: Path
    model: str


#: The demo products, by ``--product`` name.
PRODUCTS = {
    "bracket": DemoProduct("demo product", Path("data"), Path("runs/demo"), "patchcore"),
    "assembly": DemoProduct("assembly demo product", None, Path("runs/demo-assembly"), "difference"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the demo product, train on it, score it (and serve it)",
                       description=__doc__)
    p.add_argument("--product", choices=sorted(PRODUCTS), default="bracket",
                   help="demo product (default: bracket)")
    p.add_argument("--data", type=Path, default=None,
                   help="demo product folder, generated if missing (default: data for the bracket, "
                        "<out>/data for the assembly)")
    p.add_argument("--out", type=Path, default=None,
                   help="model store and overlays go here (default: runs/demo, runs/demo-assembly)")
    p.add_argument("--model", "-m", default=None,
                   help="detector name (default: patchcore for the bracket, difference for the assembly)")
    p.add_argument("--serve", action="store_true", help="serve the demo model afterwards")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (with --serve)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _generate(product: str, folder: Path) -> Path:
    """Write the product's default set (deterministic) into ``folder``; the category folder."""
    if product == "assembly":
        from anomaly.demo.assembly import generate_assembly

        return generate_assembly(folder)
    from anomaly.demo.product import generate_product

    return generate_product(folder)


def run(args: argparse.Namespace) -> int:
    from anomaly.bundle import load_bundle
    from anomaly.datasets import MVTecCategory, find_categories
    from anomaly.imageio import read_image, write_png
    from anomaly.inspect import inspect, render_overlay
    from anomaly.store import ModelStore
    from anomaly.training import train_into

    start_console(args.quiet)
    product = PRODUCTS[args.product]
    out = args.out or product.out
    data = args.data or product.data or out / "data"
    model_name = args.model or product.model
    categories = find_categories(data) if data.is_dir() else []
    if not categories:
        print(f"generating the {product.label} into {data} ...")
        categories = [_generate(args.product, data)]
    category = MVTecCategory(categories[0])
    train_paths = category.train_good()
    print(f"training {model_name} on {len(train_paths)} good images of '{category.name}' ...")
    start = time.perf_counter()
    store = ModelStore(out / "models")
    trained = train_into(store, f"demo-{category.name}", model_name, train_paths, source=str(category.root),
                         promote=True)
    print(f"trained in {time.perf_counter() - start:.1f} s -> model '{trained.name}' version {trained.version} "
          f"in {store.root}")
    bundle = load_bundle(trained.path)
    overlays = out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in category.test_samples():
        image = read_image(sample.path)
        (result,) = inspect(bundle, [image])
        write_png(overlays / f"{sample.defect_type}_{sample.path.stem}.png", render_overlay(bundle, image, result))
        rows.append((sample.defect_type, sample.path.name, result))
    print()
    print(f"{'image':32s} {'truth':6s} {'verdict':7s} {'score':>8s} {'calibrated':>10s}")
    for kind, file_name, r in rows:
        truth = "GOOD" if kind == "good" else "NG"
        print(f"{kind + '/' + file_name:32s} {truth:6s} {r.verdict:7s} {r.score:8.3f} {r.calibrated_score:10.2f}")
    total = Counter(kind for kind, _, _ in rows)
    flagged = Counter(kind for kind, _, r in rows if r.verdict != "GOOD")
    defect_kinds = [kind for kind in total if kind != "good"]
    caught = sum(flagged[kind] for kind in defect_kinds)
    n_def = sum(total[kind] for kind in defect_kinds)
    print(f"\ndefective parts flagged (NG or REVIEW): {caught}/{n_def}; good parts flagged: "
          f"{flagged['good']}/{total['good']}")
    for kind in defect_kinds:
        print(f"  {kind:24s} {flagged[kind]}/{total[kind]} flagged")
    print(f"heat-map overlays: {overlays.resolve()}")
    if args.serve:
        from anomaly.cli.serve import serve_store

        return serve_store(store.root, host="127.0.0.1", port=args.port, workers=1)
    return 0
