"""Good-only calibration on the real sets: thresholds, what they cost, and what they catch.

For every MVTec-layout set under ``../shared/datasets`` (or ``--root``) this runs the
equivalent of ``anomaly eval SET --model patchcore --target-frr 0.01``: PatchCore with its
defaults is cross-fitted on ``train/good``, calibrated for a 1 % false-reject rate from
those good images alone, and measured on ``test/``. It prints a Markdown table with the
false-reject rate measured on ``test/good`` (95 % Clopper-Pearson interval), the recall at
``t_ng`` beside the recall at the F1-optimal oracle threshold, the REVIEW fraction, and
the region figures (share of ground-truth defect regions a reported region overlaps,
reported regions per good image).

``--timing`` measures, for a 200-image model, the plain ``fit`` time against the time
cross-fitting and calibration add (the final model included), and the detection
estimate's time, alternating the runs so machine load hits both alike.

Usage::

    .venv/bin/python benchmarks/calibration.py --out bench-out            # every set
    .venv/bin/python benchmarks/calibration.py --sets hazelnut grid       # some
    .venv/bin/python benchmarks/calibration.py --timing --timing-only     # the time figure
    .venv/bin/python benchmarks/calibration.py --reports benchmarks/results/foundation
        # the table from the PatchCore reports benchmarks/foundation.py wrote (the same
        # evaluation: `anomaly eval` calibrates for a 1 % false-reject rate by default)

deeppcb's 901 training images are cut to a seeded 200 by default (``--limit-train``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from anomaly.evaluate import evaluate  # noqa: E402
from anomaly.training import TrainingOptions  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

DEFAULT_ROOT = ROOT.parent / "shared" / "datasets"
DEFAULT_LIMITS = {"pcb": 200}


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def ci(rate: dict) -> str:
    lo, hi = rate["ci95"]
    return f"{pct(rate['rate'])} [{pct(lo)}, {pct(hi)}] ({rate['k']}/{rate['n']})"


def row(report: dict) -> str:
    g, o, r = report["good_only"], report.get("oracle") or {}, report.get("regions") or {}
    e = (report["thresholds"].get("expected") or {})
    exp = f"{pct(e.get('frr'))} [{pct(e['frr_interval'][0])}, {pct(e['frr_interval'][1])}]" if e else "-"
    return " | ".join([
        f"| {Path(report['dataset']).parent.name}/{report['category']}",
        f"{report['n_train']}",
        f"{report['n_test'] - report['n_test_defective']}/{report['n_test_defective']}",
        f"{report['image_auroc']:.3f}" if report["image_auroc"] is not None else "-",
        exp,
        ci(g["frr_test_good"]),
        pct(g["recall"]["rate"]),
        pct(g["flagged_recall"]["rate"]),
        pct(g["review_fraction"]),
        pct(o["frr_test_good"]["rate"]) if o else "-",
        pct(o["recall"]["rate"]) if o else "-",
        pct(r.get("gt_regions_overlapped")),
        f"{r['false_regions_per_good_image']:.2f}" if r.get("false_regions_per_good_image") is not None else "-",
        f"{report['train_seconds']:.0f} |",
    ])


HEADER = (
    "| set | train | test good/defective | image AUROC | expected FRR % [CP 95 %] (cross-fit) "
    "| FRR % on test/good [CP 95 %] | recall % @t_ng | flagged recall % @t_review | REVIEW % "
    "| oracle FRR % | oracle recall % | GT regions overlapped % | false regions / good image | train s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def per_type_lines(report: dict) -> list[str]:
    out = []
    for t, v in report["per_defect_type"].items():
        out.append(f"  - {t} (n={v['n']}): recall @t_ng {pct(v.get('recall'))} %, flagged {pct(v.get('flagged_recall'))} %, "
                   f"oracle {pct(v.get('recall_oracle'))} %")
    return out


def run_sets(root: Path, names: list[str] | None, limits: dict[str, int], out: Path | None,
             detection: bool, target_frr: float) -> list[dict]:
    reports = []
    for category in find_categories(root):
        label = f"{category.parent.name}/{category.name}"
        if names and not any(n in label for n in names):
            continue
        limit = limits.get(category.name)
        print(f"# {label}: eval patchcore, target FRR {target_frr:.1%}"
              + (f", {limit} seeded training images" if limit else ""), file=sys.stderr, flush=True)
        start = time.perf_counter()
        report = evaluate(category, "patchcore", options=TrainingOptions(target_frr=target_frr, max_images=limit,
                                                                         detection=detection))
        report["wall_seconds"] = round(time.perf_counter() - start, 1)
        report["load_average"] = os.getloadavg()
        reports.append(report)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{category.parent.name}_{category.name}.json").write_text(json.dumps(report, indent=2))
        print(HEADER.splitlines()[0] + "\n" + HEADER.splitlines()[1] + "\n" + row(report), file=sys.stderr, flush=True)
    return reports


def timing(root: Path, n: int, repeats: int) -> dict:
    """Plain fit vs cross-fit + calibration (final model included) vs detection estimate, 200 images."""
    from anomaly.detection_estimate import estimate_detection
    from anomaly.detectors.registry import create_detector
    from anomaly.imageio import read_image
    from anomaly.training import fit_calibrated

    category = MVTecCategory(root / "magnetic_tile" / "magnetic_tile")
    paths = category.train_good()
    pick = np.sort(np.random.default_rng(0).choice(len(paths), n, replace=False))
    images = [read_image(paths[i]) for i in pick]
    fits, trains, cals, detections = [], [], [], []
    for r in range(repeats):
        order = ("fit", "train") if r % 2 == 0 else ("train", "fit")
        for what in order:
            start = time.perf_counter()
            if what == "fit":
                create_detector("patchcore", {}).fit(images)
                fits.append(time.perf_counter() - start)
            else:
                model = fit_calibrated("patchcore", images, TrainingOptions(target_frr=0.01, detection=False))
                trains.append(time.perf_counter() - start)
                cals.append(model.calibration_seconds)
                start = time.perf_counter()
                estimate_detection(model.detector, images[:16], model.calibration, random_state=0)
                detections.append(time.perf_counter() - start)
            print(f"  {what}: {(fits if what == 'fit' else trains)[-1]:.1f} s (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    fit, tr = float(np.median(fits)), float(np.median(trains))
    return {"n_images": n, "set": "magnetic_tile (seeded choice)", "repeats": repeats,
            "fit_seconds": fits, "train_seconds": trains, "thresholds_seconds": cals, "detection_seconds": detections,
            "added_by_calibration_seconds": tr - fit, "added_over_fit": (tr - fit) / fit,
            "detection_over_fit": float(np.median(detections)) / fit}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--sets", nargs="*", help="only sets whose 'dataset/category' contains one of these")
    p.add_argument("--limit-train", action="append", default=[], metavar="CATEGORY=N",
                   help="seeded training subset per category (default pcb=200)")
    p.add_argument("--target-frr", type=float, default=0.01)
    p.add_argument("--no-detection-estimate", action="store_true")
    p.add_argument("--out", type=Path, help="write one JSON report per set here")
    p.add_argument("--reports", type=Path,
                   help="read the PatchCore eval reports (*patchcore.json) in this folder instead of evaluating")
    p.add_argument("--timing", action="store_true", help="also measure calibration time against fit time")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--timing-images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    limits = dict(DEFAULT_LIMITS)
    for item in args.limit_train:
        key, value = item.split("=", 1)
        limits[key] = int(value)

    if args.reports:
        reports = [json.loads(f.read_text()) for f in sorted(args.reports.glob("*patchcore.json"))]
        if args.sets:
            reports = [r for r in reports
                       if any(n in f"{Path(r['dataset']).parent.name}/{r['category']}" for n in args.sets)]
        if not reports:
            p.error(f"no *patchcore.json report in {args.reports}")
        args.target_frr = reports[0]["thresholds"].get("target_frr", args.target_frr)
    elif args.timing_only:
        reports = []
    else:
        reports = run_sets(args.root, args.sets, limits, args.out, not args.no_detection_estimate, args.target_frr)
    if reports:
        print(f"\nPatchCore defaults, thresholds from train/good only (cross-fitted, 5 folds), "
              f"target false-reject rate {args.target_frr:.0%}:\n")
        print(HEADER)
        for report in reports:
            print(row(report))
        print("\nPer defect type (recall at the good-only t_ng, at t_review, at the oracle F1 threshold):")
        for report in reports:
            print(f"- {report['category']}:")
            print("\n".join(per_type_lines(report)))
        print("\nDetection estimate at calibration (synthetic defects, contrast 0.2):")
        for report in reports:
            det = report.get("detection_estimate") or {}
            print(f"- {report['category']}: {det.get('summary')}; smallest size caught at 90 %: {det.get('min_size_90')}")
    if args.timing or args.timing_only:
        t = timing(args.root, args.timing_images, args.repeats)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "timing.json").write_text(json.dumps(t, indent=2))
        print(f"\nCalibration time, {t['n_images']}-image PatchCore model ({t['set']}), median of {t['repeats']}:")
        print(f"- plain fit: {np.median(t['fit_seconds']):.1f} s")
        print(f"- cross-fit + calibration (final model included): {np.median(t['train_seconds']):.1f} s "
              f"-> adds {t['added_by_calibration_seconds']:.1f} s = {t['added_over_fit']:.2f} x the fit time")
        print(f"- detection estimate (synthetic defects): {np.median(t['detection_seconds']):.1f} s "
              f"= {t['detection_over_fit']:.2f} x the fit time")
    if args.out:
        write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
