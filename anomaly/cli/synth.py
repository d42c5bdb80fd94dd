"""``anomaly synth GOOD_DIR OUT_DIR``: good images to an MVTec-layout set with synthetic defects.

Use it to measure a detector where no real defect exists: train and evaluate on the
written folder (``anomaly eval OUT_DIR``), and read the smallest size and contrast each
kind is still found at. ``synthesis.json`` in OUT_DIR records every image's kind, size,
contrast and seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anomaly.cli.common import print_json
from anomaly.progress import enable_progress

# Kept here rather than imported, so that ``anomaly --help`` does not load the synthesis
# code; ``synthesize_dataset`` checks names against the real list.
_KINDS_HELP = "scratch spot stain brightness cutpaste poisson missing deform"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="make defective images with exact masks from good ones (MVTec layout)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("good_dir", type=Path, help="folder of good images, or an MVTec category (uses train/good)")
    p.add_argument("out_dir", type=Path, help="category folder to write (its train/test/ground_truth are replaced)")
    p.add_argument("--kinds", nargs="+", metavar="KIND",
                   help=f"defect kinds, space- or comma-separated (default: all of {_KINDS_HELP})")
    p.add_argument("--sizes", nargs="+", type=float, default=[16.0, 32.0], metavar="PX",
                   help="defect sizes, longest extent in pixels (default: 16 32)")
    p.add_argument("--contrast", nargs="+", type=float, default=[0.1, 0.3], metavar="C", dest="contrasts",
                   help="defect contrasts in [0.01, 1], fraction of full scale (default: 0.1 0.3)")
    p.add_argument("--n-per", type=int, default=2, metavar="N",
                   help="images per kind, size and contrast (default: 2)")
    p.add_argument("--test-fraction", type=float, default=0.25, metavar="F",
                   help="share of the good images held out for test/good and as defect bases (default: 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of every defect (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.datasets import good_images
    from anomaly.synthesis import KINDS, synthesize_dataset

    enable_progress(not args.quiet)
    kinds = [k for item in args.kinds for k in item.split(",") if k] if args.kinds else list(KINDS)
    root = synthesize_dataset(
        good_images(args.good_dir),
        args.out_dir,
        kinds=kinds,
        sizes=args.sizes,
        contrasts=args.contrasts,
        n_per=args.n_per,
        test_fraction=args.test_fraction,
        random_state=args.seed,
    )
    record_path = root / "synthesis.json"
    record = json.loads(record_path.read_text())
    print_json({
        "out_dir": str(root),
        "train_good": len(record["train"]),
        "test_good": len(record["test_good"]),
        "defective": len(record["defects"]),
        "kinds": record["kinds"],
        "record": str(record_path),
    })
    return 0
