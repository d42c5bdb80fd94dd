"""``anomaly export NAME[:VERSION] --format onnx --out DIR``: one deployable folder per model version.

Writes ``model.onnx`` (pixels in, image score and map out, everything between inside) and
``deploy.json`` (geometry, calibration, grading, name, version, hashes), after checking that
the export judges the model's own goods, and synthetic defects made from them, exactly as
the stored version does; an export that does not is refused and nothing is written. Score
it with ``anomaly score IMAGES --bundle DIR --runtime onnx`` or serve it with ``anomaly
serve --runtime onnx --bundle DIR``, on a machine without torch (``pip install
'anomaly-inspect[runtime]'``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from anomaly.cli.common import add_store_option, open_store, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a stored model version to ONNX with its deploy.json",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="NAME[:VERSION]", help="stored model (default version: production)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="folder to write (must not exist or be empty)")
    where.add_argument("--deploy-store", type=Path,
                       help="a deploy store (what `anomaly serve --runtime onnx --store DIR` serves): the export "
                            "goes in as NAME/VERSION, in production there when it is in production here")
    p.add_argument("--images", type=Path,
                   help="good images of the model for the parity check (a folder or an MVTec-layout set; "
                        "default: the folder the version was trained from, when it is still there)")
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="goods the parity check judges (a seeded choice; default 16), each also with a "
                        "synthetic defect")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 graph, kept only if it passes the quantisation gate")
    p.add_argument("--overwrite", action="store_true", help="replace the folder if it exists")
    add_store_option(p)
    p.set_defaults(func=run)


def split_model(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` to the name and the version (``None``: production)."""
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME or NAME:VERSION with a whole version, got {text!r}")
    return name, int(version) if version else None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from anomaly.bundle import load_bundle
    from anomaly.datasets import good_images
    from anomaly.errors import ExportError
    from anomaly.export.onnx_export import PARITY_GOODS, export_version

    name, version = split_model(args.model)
    store = open_store(args)
    path = store.path(name, version)
    bundle = load_bundle(path)
    source = args.images
    if source is None:
        recorded = (bundle.manifest.get("training_data") or {}).get("source") or ""
        if not recorded or not Path(recorded).is_dir():
            raise ExportError(f"{name}:{path.name} was trained from {recorded or 'an unrecorded source'!s}, which is "
                              "not a folder here: give its good images with --images for the parity check")
        source = Path(recorded)
    goods = good_images(source)
    n = min(len(goods), args.max_images or PARITY_GOODS)
    chosen = sorted(np.random.default_rng(0).choice(len(goods), size=n, replace=False).tolist())
    out = args.out
    if args.deploy_store is not None:
        args.deploy_store.mkdir(parents=True, exist_ok=True)
        out = args.deploy_store / f".export-{name}-{path.name}"
    deploy = export_version(bundle, out, name=name, version=int(path.name), goods=[goods[i] for i in chosen],
                            overwrite=args.overwrite or args.deploy_store is not None, int8=args.int8)
    if args.deploy_store is not None:
        from anomaly.runtime.store import DeployStore

        try:
            DeployStore(args.deploy_store).add_export(name, int(path.name), out,
                                                      promote=store.production(name) == int(path.name) or None)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        out = args.deploy_store / name / path.name
    print_json({"out": str(out), "model": name, "version": int(path.name), "detector": deploy["model"]["detector"],
                "graph_sha256": deploy["graph"]["sha256"], "parity": deploy["parity"],
                "int8": deploy.get("int8")})
    return 0
