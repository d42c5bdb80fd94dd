"""Cost of measuring defect regions on large frames, and what the linear-time contrast changed.

    python benchmarks/regions_cost.py [--sides 900 1350 1800 4000] [--dilation-max-side 1350]
                                      [--sets data/bracket ../shared/datasets/anomalib_hazelnut_toy/hazelnut]
                                      [--json benchmarks/results/regions/regions.json]

1. Time: :func:`anomaly.regions.find_regions` with contrast on a synthetic NG map of each side
   (a broken area of a quarter of the frame plus 20 small spots on a textured image), against
   the disk dilation the contrast used before (run up to ``--dilation-max-side``: it costs
   roughly side^4).
2. Agreement: on each set's test images, PatchCore (defaults, trained on the set's
   ``train/good``) maps are measured with both ring definitions; every region field but
   ``contrast`` must be identical, and the contrast difference is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import anomaly.regions as regions  # noqa: E402
from anomaly.bench.provenance import run_provenance  # noqa: E402
from report import save_result  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)


def dilated_ring(inside: np.ndarray, radius: int) -> np.ndarray:
    """The background ring as measured before: a dilation by OpenCV's elliptic disk of that radius."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(inside.astype(np.uint8), kernel).astype(bool) & ~inside


def _with_dilation(fn, *args, **kwargs):
    linear = regions._ring
    regions._ring = dilated_ring
    try:
        return fn(*args, **kwargs)
    finally:
        regions._ring = linear


def synthetic_ng(side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured ``(side, side)`` uint8 image and its map: a broken quarter and 20 spots."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(60, 200, (side, side)).astype(np.uint8), (0, 0), 3)
    amap = np.zeros((side, side), np.float32)
    s = side // 2
    cv2.ellipse(amap, (side // 3, side // 3), (s // 2, s // 3), 30, 0, 360, 1.0, -1)
    for _ in range(20):
        cx, cy = rng.integers(side // 10, side - side // 10, 2)
        cv2.circle(amap, (int(cx), int(cy)), int(rng.integers(3, 12)), 0.8, -1)
    image[amap > 0.5] //= 2
    return image, amap


def timing(sides: list[int], dilation_max_side: int, repeats: int = 3) -> list[dict]:
    rows = []
    for side in sides:
        image, amap = synthetic_ng(side)
        row = {"side": side}
        for name, run in (("linear", lambda: regions.find_regions(amap, 0.5, image=image)),
                          ("dilation", lambda: _with_dilation(regions.find_regions, amap, 0.5, image=image))):
            if name == "dilation" and side > dilation_max_side:
                continue
            times = []
            for _ in range(repeats if name == "linear" else 1):
                start = time.perf_counter()
                found = run()
                times.append(time.perf_counter() - start)
            row[f"{name}_s"] = round(min(times), 4)
            row["regions"] = len(found)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def agreement(category: Path) -> dict:
    from anomaly.datasets import MVTecCategory
    from anomaly.imageio import read_image
    from anomaly.training import TrainingOptions, fit_calibrated

    cat = MVTecCategory(category)
    model = fit_calibrated("patchcore", cat.train_good(), TrainingOptions(detection=False))
    pixel = float(model.calibration.pixel_threshold)
    n_regions = 0
    differences = []
    other_fields_equal = True
    for sample in cat.test_samples():
        image = read_image(sample.path)
        amap = model.detector.score([image]).maps[0]
        new = regions.find_regions(amap, pixel, image=image)
        old = _with_dilation(regions.find_regions, amap, pixel, image=image)
        for a, b in zip(new, old):
            da, db = a.to_dict(), b.to_dict()
            ca, cb = da.pop("contrast"), db.pop("contrast")
            da.pop("polarity"), db.pop("polarity")
            other_fields_equal &= da == db
            differences.append(abs(ca - cb))
        other_fields_equal &= len(new) == len(old)
        n_regions += len(new)
    out = {"set": str(category), "test_images": len(cat.test_samples()), "regions": n_regions,
           "other_fields_identical": bool(other_fields_equal),
           "contrast_abs_difference_max": round(max(differences, default=0.0), 3),
           "contrast_abs_difference_median": round(float(np.median(differences)) if differences else 0.0, 3),
           "contrast_identical_share": round(float(np.mean([d == 0 for d in differences])) if differences else 1.0, 3)}
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[900, 1350, 1800, 4000])
    parser.add_argument("--dilation-max-side", type=int, default=1350)
    parser.add_argument("--sets", type=Path, nargs="*",
                        default=[REPO / "data" / "bracket",
                                 REPO.parent / "shared" / "datasets" / "anomalib_hazelnut_toy" / "hazelnut"])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "regions" / "regions.json")
    args = parser.parse_args()
    doc = {"command": ("python benchmarks/regions_cost.py " + " ".join(sys.argv[1:])).strip(),
           "provenance": run_provenance(),
           "timing": timing(args.sides, args.dilation_max_side),
           "agreement": [agreement(s) for s in args.sets if s.is_dir()]}
    save_result(doc, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
