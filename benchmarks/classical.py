"""Figures of the classical baselines (alignment/): speed, registration accuracy, DeepPCB, textures.

Prints a Markdown table of every "must reach" figure of the classical-baselines issue:

* latency (p50, p90) of align + score of one gray image at 1024 x 1024 and 640 x 640,
  for ``difference`` and ``gmm`` (the generated assembly board, scaled; CPU only);
* fit time of 200 good images at 640 x 640 (and ``difference`` at 1024 x 1024);
* registration accuracy: DeepPCB good images warped by known random transforms
  (rotation up to 3 degrees, shift up to 20 px), RMS corner error of the recovered one
  (two ways of building the moved image, see :func:`bench_registration`);
* DeepPCB in reference mode: share of annotated defect boxes touched by a detected
  region, and false regions (touching no box) per image, at the one default setting of
  :func:`alignment.reference.compare_to_reference` (and the plain global-affine floor);
* image AUROC (and pixel AUROC where masks exist) of ``difference`` and ``gmm`` on the
  texture sets magnetic_tile and elpv, through the Detector API.

Run from the repository root::

    .venv/bin/python benchmarks/classical.py [--json OUT] [--limit N] [--skip SECTION ...]

Real data is read from ``../shared/datasets``; sections whose data is absent are skipped.
The machine's load average is printed with the figures: latency on a shared machine is
only as good as the quiet it was measured in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignment.reference import compare_to_reference  # noqa: E402
from alignment.registration import RegistrationOptions, register  # noqa: E402
from alignment.transforms import corner_rms_error  # noqa: E402
from anomaly.datasets import MVTecCategory  # noqa: E402
from anomaly.demo.assembly import render_good  # noqa: E402
from anomaly.detectors.registry import create_detector  # noqa: E402
from anomaly.errors import AnomalyError  # noqa: E402
from anomaly.metrics import PixelMetrics, image_auroc, quantile_thresholds  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

DATASETS = REPO.parent / "shared" / "datasets"
SECTIONS = ("latency", "fit", "registration", "reference", "textures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--limit", type=int, default=None, help="DeepPCB pairs / goods at most (default: all)")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    parser.add_argument("--datasets", type=Path, default=DATASETS, help="real data root (default ../shared/datasets)")
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, str, str]] = []  # figure, value, goal, note
    report: dict[str, Any] = {"load_before": os.getloadavg(), "cpu_count": os.cpu_count(),
                              "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads()}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": lambda: bench_latency(rows),
        "fit": lambda: bench_fit(rows),
        "registration": lambda: bench_registration(rows, args.datasets, args.limit),
        "reference": lambda: bench_reference(rows, args.datasets, args.limit),
        "textures": lambda: bench_textures(rows, args.datasets),
    }
    for name in SECTIONS:
        if name in args.skip:
            continue
        start = time.perf_counter()
        report[name] = runners[name]()
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"[{name} done in {report[name]['seconds']} s, load {os.getloadavg()[0]:.1f}]", file=sys.stderr)
    report["load_after"] = os.getloadavg()
    print(f"\nMachine: {os.cpu_count()} CPU cores, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads); "
          f"load average {report['load_before'][0]:.1f} before, {report['load_after'][0]:.1f} after.\n")
    print("| figure | value | goal | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=_jsonable))
        write_report()
    return 0


# --------------------------------------------------------------------------- data


def gray_boards(n: int, size: int, seed: int, *, distinct: int = 24) -> list[np.ndarray]:
    """``n`` good gray boards at ``size``: ``distinct`` renderings, each re-posed and re-noised.

    Rendering a board is slower than what is measured, so 200 goods are made from 24
    renderings moved by a fresh random shift (up to 4 px) and rotation (up to 1 degree)
    with fresh sensor noise: as different as goods on a line are.
    """
    rng = np.random.default_rng(seed)
    base = [cv2.cvtColor(render_good(size, np.random.default_rng([seed, i])), cv2.COLOR_RGB2GRAY)
            for i in range(min(n, distinct))]
    out = []
    for i in range(n):
        image = base[i % len(base)]
        if i >= len(base):
            m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-1, 1), 1.0)
            m[:, 2] += rng.uniform(-4, 4, 2) * size / 256
            image = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        noise = rng.normal(0, 1.5, image.shape)
        out.append(np.clip(image + noise, 0, 255).astype(np.uint8))
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


# --------------------------------------------------------------------------- sections


def bench_latency(rows) -> dict[str, Any]:
    """p50/p90 of ``detector.score([image])`` (decode check + register + compare + map back)."""
    out: dict[str, Any] = {}
    for size, goal in ((1024, 30.0), (640, 15.0)):
        goods = gray_boards(24, size, seed=1)
        tests = gray_boards(12, size, seed=2, distinct=12)
        for name, params in (("difference", {}), ("gmm", {"n_components": 2})):
            detector = create_detector(name, params).fit(goods)
            for image in tests[:3]:
                detector.score([image])  # warm-up: first calls allocate
            times, cpu = [], []
            for _ in range(5):
                for image in tests:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    detector.score([image])
                    times.append(time.perf_counter() - start)
                    cpu.append(time.process_time() - start_cpu)
            p50, p90, cpu50 = _pct(times, 50), _pct(times, 90), _pct(cpu, 50)
            out[f"{name}_{size}"] = {"p50_ms": p50, "p90_ms": p90, "cpu_p50_ms": cpu50, "n": len(times),
                                     "load": os.getloadavg()[0]}
            rows.append((f"align + score {size}x{size} gray, `{name}`", f"p50 {p50:.1f} ms (p90 {p90:.1f})",
                         f"<= {goal:.0f} ms" if name == "difference" else "(no goal)",
                         f"{len(times)} calls; CPU time p50 {cpu50:.1f} ms (all threads); "
                         f"load {os.getloadavg()[0]:.1f}; rigid ECC, 2-level pyramid, finest 256 px"))
    return out


def bench_fit(rows) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, params, size in (("difference", {}, 640), ("gmm", {"n_components": 2}, 640),
                               ("difference", {}, 1024)):
        goods = gray_boards(200, size, seed=3)
        start, start_cpu = time.perf_counter(), time.process_time()
        create_detector(name, params).fit(goods)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        out[f"{name}_{size}"] = {"seconds": seconds, "cpu_seconds": cpu, "n_images": len(goods),
                                 "load": os.getloadavg()[0]}
        rows.append((f"fit 200 goods {size}x{size} gray, `{name}`", f"{seconds:.1f} s",
                     "<= 20 s" if name == "difference" else "(no goal)",
                     f"CPU time {cpu:.1f} s (all threads), load {os.getloadavg()[0]:.1f}; template refined "
                     "from 48 goods, then all 200 aligned to it, then the statistics"))
        del goods
    return out


def bench_registration(rows, datasets: Path, limit: int | None) -> dict[str, Any]:
    """DeepPCB goods moved by known random rigid transforms (rotation <= 3 deg, shift <= 20 px).

    Two ways of making the moved image, both with the right answer built in:

    * ``full frame``: the whole good image is warped; what enters the frame at the border
      is mirrored content (BORDER_REFLECT);
    * ``camera crop``: the good image is the scene, the template is its central crop and
      the moved image the same crop of the warped scene, so what enters the frame is
      real board content, as with a camera over a moving part.

    The transforms are rigid, so ``motion="rigid"`` is the model a user would choose; the
    affine model (two more degrees of freedom than the truth) is shown beside it.
    """
    goods_dir = datasets / "deeppcb" / "pcb" / "train" / "good"
    if not goods_dir.is_dir():
        rows.append(("registration RMS corner error, DeepPCB", "skipped", "<= 0.5 px", f"{goods_dir} absent"))
        return {"skipped": True}
    paths = sorted(goods_dir.glob("*.jpg"))[: limit or None]
    rng = np.random.default_rng(0)
    margin = 48
    crop = np.array([[1.0, 0.0, margin], [0.0, 1.0, margin], [0.0, 0.0, 1.0]])
    cases = []
    for path in paths:
        scene = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        h, w = scene.shape
        truth = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-3, 3), 1.0), [0, 0, 1]])
        truth[:2, 2] += rng.uniform(-20, 20, 2)
        moved = cv2.warpAffine(scene, truth[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        cases.append((scene, moved, truth))
    out: dict[str, Any] = {"n": len(paths)}
    for protocol, motion in (("full frame", "rigid"), ("full frame", "affine"), ("camera crop", "rigid")):
        errors, times, failures = [], [], 0
        for scene, moved, truth in cases:
            if protocol == "camera crop":
                h, w = scene.shape
                template, image = scene[margin : h - margin, margin : w - margin], moved[margin : h - margin, margin : w - margin]
                expected = np.linalg.inv(crop) @ truth @ crop
            else:
                template, image, expected = scene, moved, truth
            start = time.perf_counter()
            try:
                result = register(image, template, options=RegistrationOptions(motion=motion))
            except AnomalyError:
                failures += 1  # raised, never silent: counted apart, not in the RMS
                continue
            times.append(time.perf_counter() - start)
            errors.append(corner_rms_error(result.matrix, expected, template.shape))
        e = np.asarray(errors)
        rms = float(np.sqrt(np.mean(e**2)))
        key = f"{protocol}, {motion}"
        out[key] = {"rms_px": rms, "median_px": float(np.median(e)), "p95_px": float(np.percentile(e, 95)),
                    "max_px": float(e.max()), "over_0_5_px": int((e > 0.5).sum()), "failures": failures,
                    "p50_ms": _pct(times, 50)}
        rows.append((f"registration RMS corner error, DeepPCB goods, {key}", f"{rms:.3f} px",
                     "<= 0.5 px" if motion == "rigid" else "(comparison)",
                     f"{len(e)} aligned, {failures} AlignmentError; median {out[key]['median_px']:.3f}, "
                     f"max {out[key]['max_px']:.2f} px, {out[key]['over_0_5_px']} over 0.5 px; "
                     f"p50 {out[key]['p50_ms']:.1f} ms"))
    return out


def bench_reference(rows, datasets: Path, limit: int | None) -> dict[str, Any]:
    root = datasets / "deeppcb" / "pcb"
    if not root.is_dir():
        rows.append(("DeepPCB reference mode", "skipped", ">= 98 %, <= 0.3", f"{root} absent"))
        return {"skipped": True}
    tests = sorted((root / "test" / "combined").glob("*_test.jpg"))[: limit or None]
    out: dict[str, Any] = {}
    for label, options in (("default setting", {}), ("plain global affine (floor)", {"local_grid": 0})):
        hit = boxes = false = errors = 0
        times = []
        for path in tests:
            reference = root / "test" / "good" / path.name.replace("_test", "_temp")
            mask = cv2.imread(str(root / "ground_truth" / "combined" / f"{path.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
            count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8))
            boxes += count - 1
            start = time.perf_counter()
            try:
                result = compare_to_reference(str(path), str(reference), **options)
            except AnomalyError:
                errors += 1
                continue
            times.append(time.perf_counter() - start)
            seen: set[int] = set()
            for region in result.regions:
                window = (slice(region.y, region.y + region.height), slice(region.x, region.x + region.width))
                ids = set(np.unique(labels[window][np.abs(result.signed[window]) > 1.0])) - {0}
                seen |= ids
                false += not ids
            hit += len(seen)
        recall, fp = hit / max(boxes, 1), false / max(len(tests), 1)
        out[label] = {"pairs": len(tests), "boxes": boxes, "boxes_hit": hit, "recall": recall,
                      "false_regions": false, "false_per_image": fp, "errors": errors, "p50_ms": _pct(times, 50)}
        rows.append((f"DeepPCB reference mode, {label}: boxes found", f"{100 * recall:.2f} %", ">= 98 %",
                     f"{hit}/{boxes} boxes, {len(tests)} pairs, {errors} alignment errors"))
        rows.append((f"DeepPCB reference mode, {label}: false regions / image", f"{fp:.3f}", "<= 0.3",
                     f"{false} regions touching no box; p50 {out[label]['p50_ms']:.0f} ms per pair"))
    return out


def bench_textures(rows, datasets: Path) -> dict[str, Any]:
    sets = {
        # Crops of varying size: resized to one size; nothing to align.
        "magnetic_tile": (datasets / "magnetic_tile" / "magnetic_tile", {"motion": "none", "image_size": 192}),
        # Cells already cropped and rectified: nothing to align either.
        "elpv": (datasets / "elpv" / "mono", {"motion": "none"}),
    }
    out: dict[str, Any] = {}
    for set_name, (folder, base) in sets.items():
        if not folder.is_dir():
            rows.append((f"{set_name}", "skipped", "(honest figure)", f"{folder} absent"))
            continue
        category = MVTecCategory(folder)
        samples = category.test_samples()
        for name, extra in (("difference", {}), ("gmm", {"n_components": 2})):
            start = time.perf_counter()
            detector = create_detector(name, {**base, **extra}).fit(category.train_good())
            fit_s = time.perf_counter() - start
            scores, maps = [], []
            for sample in samples:
                result = detector.score([str(sample.path)])
                scores.append(float(result.scores[0]))
                maps.append(result.maps[0])
            labels = [s.label for s in samples]
            auroc = image_auroc(labels, scores)
            pixel = None
            if any(s.mask_path is not None for s in samples):
                metrics = PixelMetrics(quantile_thresholds(maps, n_bins=2000))
                for sample, amap in zip(samples, maps):
                    mask = sample.read_mask(amap.shape)
                    if mask is not None:
                        metrics.add(amap, mask)
                pixel = metrics.auroc()
            out[f"{set_name}_{name}"] = {"image_auroc": auroc, "pixel_auroc": pixel, "fit_s": fit_s,
                                         "n_test": len(samples)}
            value = f"image AUROC {auroc:.3f}" + (f", pixel AUROC {pixel:.3f}" if pixel is not None else "")
            rows.append((f"{set_name}, `{name}` ({', '.join(f'{k}={v}' for k, v in base.items())})", value,
                         "(honest figure)", f"{len(samples)} test images, fit {fit_s:.1f} s"))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
