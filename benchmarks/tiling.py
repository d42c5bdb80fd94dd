"""Tiled scoring of a large frame, end to end, beside the 256 px model, in one run.

Both PatchCore models are trained (``anomaly.training.train_into``, the product's one path)
on the same goods of a large-frame category (default: MVTec ``grid``, 1024 x 1024): one
tiled at native resolution (256 px tiles, 32 px overlap: 25 tiles per frame), one at the
default 256 px stretched input. Then each test image, as the PNG bytes a client sends, is
inspected end to end (decode, accepted-input check, score, verdict and regions:
``anomaly.inspect.inspect``) by both models in turn, alternating which goes first, so both
see the same load on these shared cores; the ratio is taken within the run.

    python benchmarks/tiling.py [--datasets ../shared/datasets] [--set grid] [--max-goods 100]
                                [--images 40] [--out benchmarks/results/tiling]

Writes ``latency.json`` and ``summary.md`` in ``--out``, then rewrites benchmarks/REPORT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

MODELS = {
    "tiled-256": {"image_size": 256, "resize": "tile", "tile_overlap": 32, "tile_scale": 1.0},
    "stretched-256": {"image_size": 256},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--set", default="grid", help="category whose name contains this (a large-frame one)")
    parser.add_argument("--max-goods", type=int, default=100)
    parser.add_argument("--images", type=int, default=40, help="test images inspected by each model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tiling")
    args = parser.parse_args()

    from anomaly.inspect import inspect
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into

    category = next(c for c in find_categories(args.datasets) if args.set in f"{c.parent.name}/{c.name}")
    data = MVTecCategory(category)
    goods = data.train_good()
    if len(goods) > args.max_goods:
        goods = [goods[i] for i in np.sort(np.random.default_rng(args.seed).choice(len(goods), args.max_goods,
                                                                                  replace=False))]
    tests = [sample.path for sample in data.test_samples()]
    tests = [tests[i] for i in np.sort(np.random.default_rng(args.seed).choice(len(tests), min(args.images,
                                                                                             len(tests)),
                                                                              replace=False))]
    payloads = [Path(p).read_bytes() for p in tests]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(scratch)
        bundles = {}
        for name, params in MODELS.items():
            print(f"# training {name} on {len(goods)} goods", file=sys.stderr, flush=True)
            start = time.perf_counter()
            trained = train_into(store, name, "patchcore", goods,
                                 TrainingOptions(seed=args.seed, detection=False), params=params)
            bundles[name] = store.load(name, trained.version)
            results[name] = {"params": params, "train_seconds": round(time.perf_counter() - start, 1),
                             "training": bundles[name].manifest.get("training")}
        for bundle in bundles.values():  # warm-up: backbone threads, caches
            for payload in payloads[:2]:
                inspect(bundle, [payload])
        times = {name: [] for name in MODELS}
        verdicts = {name: [] for name in MODELS}
        order = list(MODELS)
        for i, payload in enumerate(payloads):
            for name in (order if i % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                answer = inspect(bundles[name], [payload])[0]
                times[name].append((time.perf_counter() - start) * 1e3)
                verdicts[name].append(answer.verdict)
    first = Path(tests[0])
    for name in MODELS:
        t = np.asarray(times[name])
        results[name].update({"inspect_ms_p50": round(float(np.percentile(t, 50)), 1),
                              "inspect_ms_p90": round(float(np.percentile(t, 90)), 1),
                              "verdicts": {v: verdicts[name].count(v) for v in ("GOOD", "REVIEW", "NG")}})
    ratio = results["tiled-256"]["inspect_ms_p50"] / results["stretched-256"]["inspect_ms_p50"]
    import cv2

    height, width = cv2.imread(str(first), cv2.IMREAD_UNCHANGED).shape[:2]
    doc = {"set": f"{category.parent.name}/{category.name}", "frame": [height, width], "goods": len(goods),
           "test_images": len(payloads), "models": results, "tiled_over_stretched_p50": round(ratio, 2),
           "method": "end to end per PNG payload (decode, accepted-input check, score, verdict and regions), one "
                     "image per call, the two models alternating which goes first",
           "provenance": {**run_provenance(), "commit": git_commit(REPO)}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(doc, indent=2))
    (args.out / "summary.md").write_text(summary(doc))
    print(summary(doc))
    write_report()
    return 0


def summary(doc: dict) -> str:
    """The table of both models."""
    lines = [f"{doc['set']}, frames {doc['frame'][1]} x {doc['frame'][0]}, {doc['goods']} goods, "
             f"{doc['test_images']} test images each; {doc['method']}.", "",
             "| model | input | train s | inspect p50 ms | inspect p90 ms | bank | verdicts |",
             "|---|---|---|---|---|---|---|"]
    for name, m in doc["models"].items():
        bank = (m.get("training") or {}).get("bank_size")
        verdicts = ", ".join(f"{k} {v}" for k, v in m["verdicts"].items())
        lines.append(f"| {name} | `{json.dumps(m['params'])}` | {m['train_seconds']} | {m['inspect_ms_p50']} | "
                     f"{m['inspect_ms_p90']} | {bank} | {verdicts} |")
    lines += ["", f"Tiled over stretched, p50: **{doc['tiled_over_stretched_p50']} x** (same run)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
