"""The ``anomaly`` command line: one module per verb under ``anomaly.cli``.

Each verb module has ``register(subparsers)`` that adds its parser and sets ``func``;
adding a verb means adding its module name to ``VERBS``. Heavy imports (torch) happen
inside the verbs, so ``anomaly --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from anomaly import __version__
from anomaly.errors import AnomalyError
from anomaly.logs import configure_logging

#: Verb modules, in the order ``--help`` lists them.
VERBS = ["onboard", "train", "score", "export", "eval", "models", "synth", "serve", "worker", "bench", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly",
        description="Learn a product from good images only, then judge every part.",
    )
    parser.add_argument("--version", action="version", version=f"anomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log lines: -v our debug lines and the libraries' INFO lines, -vv all "
                             "(also $ANOMALY_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        try:
            module = importlib.import_module(f"anomaly.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name == f"anomaly.cli.{verb}":
                continue  # verb not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(args.verbose, quiet=getattr(args, "quiet", False))
        result = args.func(args)
    except AnomalyError as exc:
        print(json.dumps({"error": exc.code, "message": str(exc)}), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
