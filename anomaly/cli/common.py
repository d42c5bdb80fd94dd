"""Options and helpers several verbs share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from anomaly.store import ModelStore, default_store_root


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
