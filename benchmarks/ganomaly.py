"""GANomaly and Skip-GANomaly against anomalib 2.7.0's GANomaly, side by side on the real sets.

For every MVTec-layout set under the datasets folder, every seed and every model:

1. the same training images for every model and seed: a seeded subset of at most
   ``--max-train`` (200) of ``train/good`` (subset seed 0, so the seeds vary the training
   only);
2. the same budget: ``--epochs`` epochs at ``--image-size`` with ``--batch-size`` and Adam
   (lr 0.0002, betas 0.5/0.999, the paper's and anomalib's settings); ours may stop early on
   its held-out good images (part of the method; it holds out 10 % of the subset);
3. every test image scored alone, from its file's bytes to its score, timed; image AUROC
   over the whole ``test/`` split.

Models:

* ``ganomaly``, ``skip-ganomaly``: ours, through the registry with default parameters
  except the budget above and ``random_state=seed``;
* ``anomalib-ganomaly`` (with ``--peer``, run under ``.venv-peer/bin/python``): anomalib's
  ``GanomalyModel`` (its torch model) with ``n_features`` equal to ours, trained by the
  same steps as its Lightning ``training_step`` (generator: ``GeneratorLoss`` with
  weights 1/50/1; discriminator: ``DiscriminatorLoss``), on images read and prepared the
  way anomalib does (``read_image``, ``Resize`` + ImageNet ``Normalize``); scored with its
  raw ``pred_score`` (no normalisation, which anomalib would fit on the test set).

Results are appended to a JSON-lines file as they come (a rerun skips what is done), and a
table with mean +- standard deviation over seeds is printed at the end.

Training and scoring are timed on the wall clock and in CPU time of the process; on a
shared machine the wall clock measures the neighbours too, so each row records the load
average and the torch thread count (``--threads 1`` avoids the stalls of two OpenMP
threads on an oversubscribed machine; results do not depend on it).

Usage::

    .venv/bin/python benchmarks/ganomaly.py --out runs/benchmarks/ganomaly-ours.jsonl
    .venv-peer/bin/python benchmarks/ganomaly.py --peer --models anomalib-ganomaly \
        --out runs/benchmarks/ganomaly-peer.jsonl
    .venv/bin/python benchmarks/ganomaly.py --table-only --out runs/benchmarks/ganomaly-ours.jsonl \
        --include runs/benchmarks/ganomaly-peer.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from anomaly.metrics import image_auroc  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

OURS = ("ganomaly", "skip-ganomaly")
PEER = "anomalib-ganomaly"
DEFAULT_OUT = REPO / "runs" / "benchmarks" / "ganomaly.jsonl"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def training_subset(category: MVTecCategory, max_train: int) -> list[Path]:
    paths = category.train_good()
    if len(paths) > max_train:
        pick = np.sort(np.random.default_rng(0).choice(len(paths), max_train, replace=False))
        paths = [paths[i] for i in pick]
    return paths


def test_subset(category: MVTecCategory, max_test: int | None):
    samples = category.test_samples()
    if max_test and len(samples) > max_test:
        pick = np.sort(np.random.default_rng(0).choice(len(samples), max_test, replace=False))
        samples = [samples[i] for i in pick]
    return samples


# -- ours ---------------------------------------------------------------------------------
def fit_ours(name: str, paths: list[Path], args, seed: int) -> tuple[Callable[[bytes], float], dict[str, Any]]:
    from anomaly.detectors.registry import create_detector

    params = {"image_size": args.image_size, "batch_size": args.batch_size, "max_epochs": args.epochs,
              "random_state": seed}
    detector = create_detector(name, params).fit([str(p) for p in paths])
    meta = detector.training_meta()
    info = {"params": detector.get_params(), "epochs_run": meta["epochs"], "best_epoch": meta["best_epoch"],
            "stopped_early": meta["stopped_early"], "steps": meta["steps"]}
    return (lambda data: float(detector.score([data]).scores[0])), info


# -- anomalib's GANomaly ------------------------------------------------------------------
def fit_peer(paths: list[Path], args, seed: int) -> tuple[Callable[[bytes], float], dict[str, Any]]:
    import io

    import torch
    from PIL import Image
    from torchvision.transforms.v2.functional import to_dtype, to_image
    from anomalib.data.utils import read_image

    from anomaly.bench.peer_anomalib import ganomaly_transform, train_ganomaly

    transform = ganomaly_transform((args.image_size, args.image_size))
    # read_image: (3, H, W) float in [0, 1], as anomalib's datamodule reads them.
    data = torch.stack([transform(read_image(str(p), as_tensor=True)) for p in paths])
    model, steps = train_ganomaly(data, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
                                  n_features=args.n_features, seed=seed)

    def score(data_bytes: bytes) -> float:
        # anomalib's read_image on the file's bytes: PIL, RGB, float in [0, 1].
        image = Image.open(io.BytesIO(data_bytes)).convert("RGB")
        x = transform(to_dtype(to_image(image), torch.float32, scale=True))[None]
        with torch.inference_mode():
            out = model(x)
        pred = out.pred_score if hasattr(out, "pred_score") else out
        return float(pred.reshape(-1)[0])

    import anomalib

    return score, {"anomalib": anomalib.__version__, "n_features": args.n_features, "steps": steps,
                   "epochs_run": args.epochs}


# -- one run ------------------------------------------------------------------------------
def run_one(category: MVTecCategory, model: str, seed: int, args) -> dict[str, Any]:
    paths = training_subset(category, args.max_train)
    samples = test_subset(category, args.max_test)
    load_before = load_average()
    t0 = time.perf_counter()
    c0 = time.process_time()
    if model == PEER:
        score, info = fit_peer(paths, args, seed)
    else:
        score, info = fit_ours(model, paths, args, seed)
    train_s = time.perf_counter() - t0
    train_cpu_s = time.process_time() - c0
    scores, labels, ms, cpu_ms = [], [], [], []
    for sample in samples:
        data = sample.path.read_bytes()
        t, c = time.perf_counter(), time.process_time()
        scores.append(score(data))
        ms.append((time.perf_counter() - t) * 1e3)
        cpu_ms.append((time.process_time() - c) * 1e3)
        labels.append(sample.label)
    return {
        "set": category.name,
        "dataset": str(category.root),
        "model": model,
        "seed": seed,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "n_train": len(paths),
        "n_test": len(samples),
        "image_auroc": image_auroc(labels, scores),
        "train_seconds": round(train_s, 1),
        "train_cpu_seconds": round(train_cpu_s, 1),
        "score_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "score_ms_p90": round(float(np.percentile(ms, 90)), 2),
        "score_cpu_ms_p50": round(float(np.percentile(cpu_ms, 50)), 2),
        "threads": _threads(),
        "load_average": [load_before, load_average()],
        **info,
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths if path.is_file() for line in path.read_text().splitlines()
            if line.strip()]


def done_keys(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    return {_key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def _key(row: dict[str, Any]) -> tuple:
    return (row["dataset"], row["model"], row["seed"], row["image_size"], row["epochs"], row["batch_size"],
            row["n_test"])


def table(paths: list[Path], args) -> str:
    rows = [r for r in read_rows(paths) if r["image_size"] == args.image_size and r["epochs"] == args.epochs
            and r["batch_size"] == args.batch_size]
    sets = sorted({r["set"] for r in rows})
    models = [m for m in (*OURS, PEER) if any(r["model"] == m for r in rows)]
    lines = [f"image AUROC, mean +- std over seeds (n seeds); {args.epochs} epochs at {args.image_size} px, "
             f"batch {args.batch_size}, <= {args.max_train} training images",
             "| set | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    timing = ["", "| set | model | train s (wall, mean) | train CPU s | score p50 ms (wall) | score p50 CPU ms "
              "| load avg |", "|---|---|---|---|---|---|---|"]
    wins = {m: 0 for m in OURS}
    for s in sets:
        cells, means = [], {}
        for m in models:
            vals = [r["image_auroc"] for r in rows if r["set"] == s and r["model"] == m and r["image_auroc"] is not None]
            if vals:
                means[m] = float(np.mean(vals))
                cells.append(f"{np.mean(vals):.3f} +- {np.std(vals):.3f} ({len(vals)})")
                sub = [r for r in rows if r["set"] == s and r["model"] == m]
                timing.append(
                    f"| {s} | {m} | {np.mean([r['train_seconds'] for r in sub]):.0f} | "
                    f"{np.mean([r['train_cpu_seconds'] for r in sub]):.0f} | "
                    f"{np.median([r['score_ms_p50'] for r in sub]):.1f} | "
                    f"{np.median([r.get('score_cpu_ms_p50', np.nan) for r in sub]):.1f} | "
                    f"{np.mean([np.mean(r['load_average']) for r in sub]):.1f} |")
            else:
                cells.append("-")
        for m in OURS:
            if m in means and PEER in means and means[m] > means[PEER]:
                wins[m] += 1
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if PEER in models:
        n_peer = len({r["set"] for r in rows if r["model"] == PEER})
        lines.append("")
        lines.append("higher mean than anomalib's GANomaly on: " + ", ".join(
            f"{m} {wins[m]} of {n_peer} sets" for m in OURS if m in models))
    return "\n".join(lines + timing)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--sets", nargs="*", help="category names to run (default: all found)")
    p.add_argument("--models", nargs="*", help=f"default: {' '.join(OURS)} (+ {PEER} with --peer)")
    p.add_argument("--peer", action="store_true", help=f"also run {PEER} (needs anomalib 2.7.0)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=15, help="epoch budget for every model")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n-features", type=int, default=32, help="width of anomalib's model (ours: its default, 32)")
    p.add_argument("--max-train", type=int, default=200)
    p.add_argument("--max-test", type=int, help="score a seeded subset of the test split (default: all)")
    p.add_argument("--threads", type=int, help="torch threads in this process (default: torch's)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON-lines results file (appended)")
    p.add_argument("--include", nargs="*", type=Path, default=[], help="more results files for the table")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = args.models or [*OURS, *([PEER] if args.peer else [])]
    if PEER in models and not args.peer:
        p.error(f"{PEER} needs --peer")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        categories = find_categories(args.datasets)
        if args.sets:
            categories = [c for c in categories if c.name in set(args.sets)]
        done = done_keys(args.out)
        for seed in args.seeds:  # every set once before the next seed: partial runs cover all sets
            for root in categories:
                category = MVTecCategory(root)
                n_test = len(test_subset(category, args.max_test))
                for model in models:
                    key = (str(category.root), model, seed, args.image_size, args.epochs, args.batch_size, n_test)
                    if key in done:
                        continue
                    row = run_one(category, model, seed, args)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps({k: row[k] for k in ("set", "model", "seed", "image_auroc", "train_seconds",
                                                          "train_cpu_seconds", "score_ms_p50", "load_average")}),
                          flush=True)
    print(table([args.out, *args.include], args))
    if not args.table_only:
        write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
