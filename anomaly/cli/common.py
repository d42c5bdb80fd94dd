"""Options and helpers several verbs share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anomaly.progress import enable_progress
from anomaly.store import ModelStore, default_store_root


def start_console(quiet: bool) -> None:
    """Progress bars on standard error (none when ``quiet``); ``anomaly.cli.main`` sets up the log lines."""
    enable_progress(not quiet)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--backbone``, ``--image-size`` and ``--param`` (read by :func:`model_params`)."""
    parser.add_argument("--model", "-m", default="patchcore", help="detector name (default: patchcore)")
    parser.add_argument("--backbone", help="timm backbone for deep detectors (default: the detector's)")
    parser.add_argument("--image-size", type=int, help="model input size in pixels")
    parser.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                        help="any detector parameter (JSON value)")


def model_params(args: argparse.Namespace) -> dict[str, Any]:
    """The detector parameters given by the options of :func:`add_model_options`."""
    params = parse_params(args.param)
    if args.backbone:
        params["backbone"] = args.backbone
    if args.image_size:
        params["image_size"] = args.image_size
    return params


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"model store folder (default: $ANOMALY_STORE or ./{default_store_root()})",
    )


def open_store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(args.store)


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs to a dict; values parsed as JSON when they are JSON."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise argparse.ArgumentTypeError(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
