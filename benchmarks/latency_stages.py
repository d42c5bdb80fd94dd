"""Where PatchCore's scoring time goes, stage by stage, against the floor (decode + backbone).

Fits PatchCore (or the given parameters) on a few good images of one set, then times every
stage of one-image scoring on its test images, with the floor timed on the same image in
alternating order (as ``anomaly eval`` does):

    python benchmarks/latency_stages.py ../shared/datasets/deeppcb/pcb [--param KEY=VALUE ...]

Prints the median of each stage in milliseconds and the ratio of the end-to-end median to
the floor's. The stages are those of :meth:`anomaly.detectors.patchcore.PatchCore._score`:
decode and prepare the tensor, backbone, patch aggregation, nearest-neighbour search, image
score (refined on the finest grid when the grid is coarser) and maps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.cli.common import parse_params  # noqa: E402
from anomaly.datasets import MVTecCategory  # noqa: E402
from anomaly.detectors.patchcore import eq7_score  # noqa: E402
from anomaly.detectors.registry import create_detector  # noqa: E402
from anomaly.features.patches import aggregate  # noqa: E402
from anomaly.features.preprocess import prepare_batch  # noqa: E402
from anomaly.imageio import decode_image  # noqa: E402
from anomaly.maps import model_resolution_map, to_image_map  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("category", type=Path)
    p.add_argument("--train", type=int, default=30, help="good images to fit on (default 30)")
    p.add_argument("--test", type=int, default=100, help="test images to time (default 100)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    category = MVTecCategory(args.category)
    det = create_detector("patchcore", parse_params(args.param)).fit(category.train_good()[: args.train])
    ext, geometry = det.extractor, det.geometry
    times: dict[str, list[float]] = {}

    def lap(name: str, start: float) -> float:
        now = time.perf_counter()
        times.setdefault(name, []).append((now - start) * 1e3)
        return now

    def score(data: bytes) -> None:
        t = t0 = time.perf_counter()
        batch, placements = prepare_batch([data], geometry, ext.mean, ext.std)
        t = lap("decode + prepare", t)
        with torch.inference_mode():
            layers = ext(torch.from_numpy(batch))
            t = lap("backbone", t)
            feats = aggregate(layers, ext.reductions, ext.offsets, patch_size=int(det.patch_size),
                              out_stride=det.feature_stride, grid=det.feature_grid,
                              channels_per_layer=det._channels_per_layer, origin=det.feature_origin,
                              sampling=det.coarse_sampling)
            t = lap("aggregate", t)
        n, dim, h, w = feats.shape
        queries = feats.permute(0, 2, 3, 1).reshape(-1, dim).numpy()
        dist, idx = det._knn.search(queries, 1)
        t = lap("nearest neighbours", t)
        if det.fine_bank_ is not None:
            det._refined_scores(dist[:, 0].reshape(1, -1), layers)
            t = lap("refine (finest grid)", t)
        else:
            eq7_score(queries, dist[:, 0], idx[:, 0], det.memory_bank_, det.bank_neighbors_)
        model_map = model_resolution_map(dist[:, 0].reshape(h, w), geometry.size, float(det.smoothing_sigma),
                                         det.feature_stride, det.feature_origin)
        to_image_map(model_map, geometry, placements[0])
        t = lap("image score + maps", t)
        times.setdefault("end to end", []).append((t - t0) * 1e3)

    for k, sample in enumerate(category.test_samples()[: args.test]):
        data = sample.path.read_bytes()
        if k % 2:
            score(data)
        t0 = time.perf_counter()
        image = decode_image(data)
        t1 = lap("floor: decode", t0)
        batch, _ = prepare_batch([image], geometry, ext.mean, ext.std)
        t2 = time.perf_counter()
        ext(torch.from_numpy(batch))
        lap("floor: backbone", t2)
        times.setdefault("floor", []).append((t1 - t0 + time.perf_counter() - t2) * 1e3)
        if not k % 2:
            score(data)

    print(f"{category.root.parent.name}/{category.name}, PatchCore {det.get_params()}, "
          f"bank {det.memory_bank_.shape}, torch threads {torch.get_num_threads()}")
    for name, values in times.items():
        print(f"  {name:20s} {np.median(values):7.2f} ms")
    print(f"  end to end / floor   {np.median(times['end to end']) / np.median(times['floor']):7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
