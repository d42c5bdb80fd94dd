"""``anomaly score IMAGES... --name NAME``: verdicts as JSON lines, optional overlays.

``--bundle DIR --runtime onnx`` scores with an exported folder (``anomaly export``) through
onnxruntime, without torch, and prints the same lines as the stored version gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anomaly.cli.common import add_store_option, open_store
from anomaly.imageio import is_image_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score image files or folders with a stored model; JSON lines out",
                       description=__doc__)
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--name", "-n", help="model name in the store")
    source.add_argument("--bundle", type=Path, help="a bundle folder (or with --runtime onnx an exported "
                                                    "folder) instead of a stored model")
    p.add_argument("--runtime", choices=["bundle", "onnx"], default="bundle",
                   help="bundle (default): the stored model with its own code; onnx: an exported folder "
                        "given with --bundle, through onnxruntime (no torch needed)")
    p.add_argument("--version", type=int, help="model version (default: production)")
    p.add_argument("--overlays", type=Path, help="write heat-map overlay PNGs into this folder")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    add_store_option(p)
    p.set_defaults(func=run)


def expand_inputs(inputs: list[Path], recursive: bool) -> list[Path]:
    files = []
    for item in inputs:
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            files += sorted(p for p in item.glob(pattern) if p.is_file() and is_image_file(p))
        else:
            files.append(item)
    return files


def run(args: argparse.Namespace) -> int:
    from anomaly.bundle import load_bundle
    from anomaly.errors import AnomalyError, DeployError
    from anomaly.imageio import read_image, write_png
    from anomaly.inspect import inspect, render_overlay

    if args.runtime == "onnx":
        from anomaly.runtime.deployed import load_deployed

        if not args.bundle:
            raise DeployError("--runtime onnx scores an exported folder: give it with --bundle DIR")
        bundle = load_deployed(args.bundle)
        model_name, version = bundle.name, bundle.version
    elif args.bundle:
        bundle = load_bundle(args.bundle)
        model_name, version = args.bundle.name, None
    else:
        store = open_store(args)
        path = store.path(args.name, args.version)
        bundle = load_bundle(path)
        model_name, version = args.name, int(path.name)
    if args.overlays:
        args.overlays.mkdir(parents=True, exist_ok=True)
    failures = 0
    for i, path in enumerate(expand_inputs(args.inputs, args.recursive)):
        record = {"file": str(path), "model": model_name, "version": version}
        try:
            image = read_image(path)
            (result,) = inspect(bundle, [image])
        except AnomalyError as exc:
            failures += 1
            record.update({"error": exc.code, "message": str(exc)})
            print(json.dumps(record), flush=True)
            continue
        record.update(result.to_dict())
        if args.overlays:
            out = args.overlays / f"{i:05d}_{path.stem}_{result.verdict}.png"
            write_png(out, render_overlay(bundle, image, result))
            record["overlay"] = str(out)
        print(json.dumps(record), flush=True)
    if failures:
        print(f"{failures} file(s) could not be scored", file=sys.stderr)
    return 1 if failures else 0
