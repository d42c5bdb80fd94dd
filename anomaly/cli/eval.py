"""``anomaly eval DATASET --model M``: train on train/good, measure on test/, JSON out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from anomaly.cli.common import add_model_options, model_params, print_json, start_console
from anomaly.cli.train import add_calibration_options, training_options
from anomaly.datasets import find_categories
from anomaly.errors import DatasetError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="train on train/good of an MVTec-layout set and measure on test/",
                       description=__doc__)
    p.add_argument("dataset", type=Path, help="an MVTec-layout category (or a folder of categories)")
    add_model_options(p)
    add_calibration_options(p)
    p.add_argument("--json", type=Path, dest="json_out", help="write the report(s) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.evaluate import evaluate

    start_console(args.quiet)
    params = model_params(args)
    options = training_options(args)
    categories = find_categories(args.dataset)
    if not categories:
        raise DatasetError(f"no MVTec-layout category (a folder with train/good) at or below {args.dataset}")
    reports = [
        evaluate(c, args.model, params=params, options=options)
        for c in categories
    ]
    out = reports[0] if len(reports) == 1 else reports
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2))
    print_json(out)
    return 0
