"""``anomaly bench DATASETS_ROOT``: our detectors against anomalib's, in one run, on this machine.

Writes ``bench.json``, ``bench.md``, ``accuracy.png`` and ``latency.png`` to ``--out``
(keys documented in :mod:`anomaly.bench`): both systems' figures side by side and their
paired differences with bootstrap intervals over images and spreads over seeds; it
judges nothing (no pass/fail). anomalib is optional: ``pip install .[peer]``
(or a venv at ``.venv-peer``, or ``--peer-python``); without it only our side runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from anomaly.cli.common import parse_params
from anomaly.progress import enable_progress


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


def _limit(value: str) -> int | None:
    return None if value.lower() in ("0", "none", "all") else int(value)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="compare our detectors with anomalib's on MVTec-layout sets",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="a folder of MVTec-layout categories (or one category)")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="our detectors (default: patchcore padim; ganomaly and skip-ganomaly are compared with "
                        "anomalib's GANomaly on request)")
    p.add_argument("--settings", nargs="+", metavar="SETTING", help="matched and/or defaults (default: both)")
    p.add_argument("--categories", nargs="+", metavar="NAME",
                   help="only these categories (folder name or dataset/category; default: all under ROOT)")
    p.add_argument("--peer", default="anomalib", choices=["anomalib", "none"],
                   help="system to compare with (default: anomalib, when installed)")
    p.add_argument("--peer-python", help="interpreter that has anomalib (default: this one, then .venv-peer)")
    p.add_argument("--ours-python", help="interpreter of our workers (default: the peer's, so both load the same "
                                         "torch binaries; else this one)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder (default: runs/bench)")
    p.add_argument("--max-train", type=_limit, default=100, metavar="N",
                   help="at most N training images per set, seeded, both systems (default 100; 'all' = no limit)")
    p.add_argument("--max-test", type=_limit, default=150, metavar="N",
                   help="at most N test images per set, seeded and stratified (default 150; 'all' = no limit)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="one replicate per seed (sub-sample and every model's random choices, both systems); "
                        "accuracy is their mean (default: 0 1 2)")
    p.add_argument("--image-size", type=int, default=256, help="square model input of both systems (default 256)")
    p.add_argument("--matched-coreset-ratio", type=float, default=0.01,
                   help="PatchCore coreset ratio of the matched comparison (default 0.01)")
    p.add_argument("--peer-defaults-max-patches", type=_limit, default=40_000, metavar="N",
                   help="run anomalib's default PatchCore (10%% coreset) only where the training patches are at "
                        "most N (default 40000; 'all' = everywhere: tens of minutes per large set)")
    p.add_argument("--gan-image-size", type=int, default=128,
                   help="square input of both systems' GANs (--models ganomaly skip-ganomaly; default 128)")
    p.add_argument("--gan-epochs", type=int, default=15, help="training epochs of both systems' GANs (default 15)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="hyper-parameter laid over OUR side's parameters in every comparison (JSON value; "
                        "repeatable), e.g. --param grid_stride=null to measure an option; anomalib's are unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly.bench import BenchConfig, run_bench
    from anomaly.bench.protocol import BENCH_MODELS, SETTINGS
    from anomaly.bench.run import DEFAULT_SEEDS

    enable_progress(not args.quiet)
    config = BenchConfig(
        root=args.root,
        out=args.out,
        models=tuple(_names(args.models) or BENCH_MODELS),
        settings=tuple(_names(args.settings) or SETTINGS),
        categories=tuple(_names(args.categories) or ()),
        peer=None if args.peer == "none" else args.peer,
        peer_python=args.peer_python,
        ours_python=args.ours_python,
        max_train=args.max_train,
        max_test=args.max_test,
        seeds=tuple(args.seeds) if args.seeds else DEFAULT_SEEDS,
        image_size=args.image_size,
        matched_coreset_ratio=args.matched_coreset_ratio,
        peer_defaults_max_patches=args.peer_defaults_max_patches,
        gan_image_size=args.gan_image_size,
        gan_epochs=args.gan_epochs,
        ours_params=parse_params(args.param),
    )
    # A stopped run (SIGTERM) unwinds like Ctrl-C: workers are closed and the outputs so far
    # written, with ``complete: false``.
    signal.signal(signal.SIGTERM, _interrupt)
    run_bench(config)
    print((Path(args.out) / "bench.md").read_text())
    print(f"outputs in {args.out}: bench.json, bench.md, accuracy.png, latency.png", file=sys.stderr)
    return 0
