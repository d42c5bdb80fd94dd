"""Image AUROC of one detector configuration on the bench's seeded sub-samples, per seed.

Compares detector options on exactly the images ``anomaly bench`` uses (at most
``--max-train`` training and ``--max-test`` test images per set, chosen by the bench's
seeded rules, :mod:`anomaly.bench.protocol`), one fit per seed, without the peer and
without timing anything:

    python benchmarks/option_auroc.py --model padim --param n_features=200 \\
        ../shared/datasets/mvtec_ad_subset/grid ../shared/datasets/magnetic_tile/magnetic_tile

``--matched`` starts from the bench's matched parameters of the model (the ``--param``
values then override them); without it, from the detector's defaults. Prints one line per
set: each seed's image AUROC and their mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly.bench.protocol import model_settings, subsample_test, subsample_train  # noqa: E402
from anomaly.cli.common import parse_params  # noqa: E402
from anomaly.datasets import MVTecCategory  # noqa: E402
from anomaly.detectors.registry import create_detector  # noqa: E402
from anomaly.metrics import image_auroc  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("categories", type=Path, nargs="+", help="MVTec-layout category folders")
    p.add_argument("--model", default="patchcore")
    p.add_argument("--matched", action="store_true", help="start from the bench's matched parameters")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-train", type=int, default=100)
    p.add_argument("--max-test", type=int, default=150)
    args = p.parse_args(argv)

    overrides = parse_params(args.param)
    for root in args.categories:
        category = MVTecCategory(root)
        aurocs = []
        for seed in args.seeds:
            base = model_settings(args.model, seed=seed)[0].ours if args.matched else {"random_state": seed}
            params = {**base, **overrides}
            train = subsample_train(category.train_good(), args.max_train, seed)
            test = subsample_test(category.test_samples(), args.max_test, seed)
            detector = create_detector(args.model, params).fit(train)
            scores = detector.score([s.path for s in test]).scores
            aurocs.append(image_auroc([s.label for s in test], scores))
        label = "matched" if args.matched else "defaults"
        print(f"{category.name:14s} {args.model} {label} {overrides or ''}: "
              f"{' '.join(f'{a:.3f}' for a in aurocs)}  mean {np.mean(aurocs):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
