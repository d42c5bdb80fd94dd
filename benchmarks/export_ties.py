"""Why an exported discriminator's map can differ from its bundle's: ties of the nearest good patch.

The discriminator with ``residual=True`` (its default until 2026-12-04, with Lite0 at 256 px
and a 256-wide head: ``discriminator-lite0-residual`` in ``benchmarks/export.py``) feeds each
patch's residual to the nearest patch of its bank. Where two bank patches are almost equally
near, the float rounding of another runtime (onnxruntime against torch, or another CPU) can
pick the other one: the residual, and so the logit at that cell, jump. This trains that
discriminator on a set as ``benchmarks/export.py`` does (same goods, same flow), exports it,
judges every test image through both, and for each image whose map differs past the parity
tolerance reports, on the bundle's side, the smallest gap between a cell's two nearest bank
distances, and the head's logit at that cell with the first and with the second nearest.

Writes ``benchmarks/results/export/residual_ties.json``::

    .venv/bin/python benchmarks/export_ties.py --set magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from anomaly.bench.provenance import run_provenance  # noqa: E402
from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from export import VARIANTS  # noqa: E402
from ganomaly import test_subset, training_subset  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "export" / "residual_ties.json"


def tie_at(detector, image: np.ndarray) -> dict:
    """The cell of ``image`` whose two nearest bank patches are nearest to a tie, and its logits with each."""
    import torch

    feats, _ = detector._features([image])
    n, dim = feats.shape[:2]
    x = detector._standard(feats.reshape(n, dim, -1).permute(0, 2, 1).reshape(-1, dim).numpy())
    dist, idx = detector._index.search(x, 2)
    gap = dist[:, 1] - dist[:, 0]
    cell = int(np.argmin(gap))
    inputs = np.stack([np.concatenate([x[cell], x[cell] - detector.bank_[idx[cell, k]]]) for k in (0, 1)])
    with torch.no_grad():
        logits = [float(v) for v in detector._head(torch.from_numpy(inputs))]
    return {"cell": cell, "distance_gap": float(gap[cell]), "nearest_distance": float(dist[cell, 0]),
            "logit_first_nearest": round(logits[0], 3), "logit_second_nearest": round(logits[1], 3)}


def main(argv: list[str] | None = None) -> int:
    from anomaly.export.onnx_export import export_version
    from anomaly.export.parity import MAP_TOL
    from anomaly.imageio import read_image
    from anomaly.inspect import inspect
    from anomaly.runtime.deployed import load_deployed
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--set", default="magnetic_tile")
    p.add_argument("--max-train", type=int, default=100)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    category = MVTecCategory(next(r for r in find_categories(args.datasets) if r.name == args.set))
    goods = training_subset(category, args.max_train)
    samples = test_subset(category, None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = ModelStore(work / "store")
        detector, params = VARIANTS["discriminator-lite0-residual"]
        trained = train_into(store, "ties", detector, goods, TrainingOptions(detection=False), params=params)
        bundle = store.load("ties", trained.version)
        chosen = sorted(np.random.default_rng(0).choice(len(goods), size=min(16, len(goods)), replace=False).tolist())
        export_version(bundle, work / "ex", name="ties", version=trained.version, goods=[goods[i] for i in chosen])
        exported = load_deployed(work / "ex")
        judged = []
        for i, sample in enumerate(samples):
            image = read_image(sample.path)
            a, b = inspect(bundle, [image])[0], inspect(exported, [image])[0]
            judged.append((i, image, a, b))
        low = min(float(a.map.min()) for _, _, a, _ in judged)
        high = max(float(a.map.max()) for _, _, a, _ in judged)
        rows = []
        for i, image, a, b in judged:
            share = float(np.abs(a.map - b.map).max()) / (high - low)
            if share > MAP_TOL:
                rows.append({"image": str(samples[i].path.relative_to(category.root)), "map_diff_of_range": share,
                             "pixels_apart": float((np.abs(a.map - b.map) > MAP_TOL * (high - low)).mean()),
                             "score_rel_diff": abs(b.score - a.score) / max(abs(a.score), 1e-12),
                             "same_verdict": a.verdict == b.verdict, **tie_at(bundle.detector, image)})
    doc = {"what": "exported discriminator maps apart from the bundle's, and the nearest-patch ties under them",
           "command": f"python benchmarks/export_ties.py --set {args.set}", "set": args.set,
           "n_train": len(goods), "n_test": len(samples), "map_tolerance_of_range": MAP_TOL,
           "images_apart": rows, "provenance": run_provenance()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
