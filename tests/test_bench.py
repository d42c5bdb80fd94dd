"""``anomaly bench`` end to end on a tiny generated dataset (ours always, anomalib when installed)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.bench.peer_anomalib import peer_python
from anomaly.bench.protocol import model_settings, subsample_test, subsample_train
from anomaly.cli.main import main
from anomaly.datasets import Sample
from anomaly.metrics import image_auroc, rank_refused_above
from tests.conftest import REPO, make_part

TOP_KEYS = {"schema", "complete", "command", "started", "finished", "wall_seconds", "machine", "commit", "packages",
            "peer", "protocol", "backbone_check", "results", "summary"}
MACHINE_KEYS = {"cpu_count", "usable_cores", "cpu_model", "cpu_id", "memory_gb", "platform", "python",
                "load_average", "load_average_end"}
RESULT_KEYS = {"category", "dataset", "model", "setting", "seeds", "n_train_total", "n_fit", "n_test_total", "n_test",
               "n_test_defective", "notes", "ours", "peer", "peer_skipped", "ratios", "test_sets", "differences"}
FIGURE_KEYS = {"image_auroc", "pixel_auroc", "aupro", "pixel_metrics_note", "fit_seconds", "model_load_seconds", "latency_ms", "model_ms",
               "decode_ms_p50", "preprocess_ms_p50", "backbone_ms_p50", "latency_over_backbone", "peak_rss_mb",
               "fit_peak_rss_mb", "import_rss_mb", "peak_anon_mb", "fit_peak_anon_mb", "import_anon_mb", "bundle_mb", "bundle_backbone_mb", "bundle_holds_backbone",
               "torch_threads", "params", "backbone", "training", "image_auroc_std", "pixel_auroc_std", "aupro_std",
               "replicates"}
RATIO_KEYS = {"fit_seconds", "latency_p50", "latency_p90", "model_p50", "model_p90", "backbone_p50", "peak_rss_mb",
              "peak_anon_mb", "bundle_mb", "image_auroc_delta", "pixel_auroc_delta", "aupro_delta"}
SUMMARY_KEYS = {"wall_seconds", "cases", "cases_compared", "fits_refused"}
COMPARED_KEYS = {"image_auroc", "pixel_auroc", "aupro", "latency_p50", "model_p50", "fit_seconds", "peak_rss_mb"}
OUTPUTS = ("bench.json", "bench.md", "accuracy.png", "latency.png")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """One MVTec-layout category: 8 good training parts, 3 good and 3 defective test parts with masks."""
    root = tmp_path_factory.mktemp("bench-data")
    _write_plate(root / "plate", np.random.default_rng(0), spot_suffix=".jpg")
    return root


def _write_plate(cat: Path, rng: np.random.Generator, *, spot_suffix: str = ".png", first_good: int = 0) -> None:
    """8 good training parts; 3 good test parts (numbered from ``first_good``) and 3 with a
    bright 12 px square, with its mask."""
    for folder in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (cat / folder).mkdir(parents=True)
    for i in range(8):
        cv2.imwrite(str(cat / "train/good" / f"{i:03d}.png"), make_part(rng))
    for i in range(3):
        cv2.imwrite(str(cat / "test/good" / f"{first_good + i:03d}.png"), make_part(rng))
        bad = make_part(rng)
        bad[30:42, 60:72] = 250
        mask = np.zeros(bad.shape[:2], np.uint8)
        mask[30:42, 60:72] = 255
        cv2.imwrite(str(cat / "test/spot" / f"{i:03d}{spot_suffix}"), bad)
        cv2.imwrite(str(cat / "ground_truth/spot" / f"{i:03d}_mask.png"), mask)


def _run(root: Path, out: Path, peer: str, models: tuple[str, ...], seeds: tuple[int, ...] = (0,)) -> dict:
    code = main(["bench", str(root), "--out", str(out), "--peer", peer, "--models", *models, "--image-size", "64",
                 "--max-train", "6", "--max-test", "all", "--seeds", *map(str, seeds),
                 # 6 images x 64 patches: at the default 1 % the bank would hold 4 patches.
                 "--matched-coreset-ratio", "0.25", "--quiet"])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("accuracy.png", "latency.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "bench.json").read_text())


def _check_common(doc: dict, models: tuple[str, ...]) -> None:
    assert TOP_KEYS <= set(doc)
    assert doc["complete"] is True
    assert MACHINE_KEYS <= set(doc["machine"])
    assert {"sha", "dirty"} <= set(doc["commit"])
    assert set(doc["summary"]) == SUMMARY_KEYS  # figures only: no pass/fail, no budget
    assert doc["schema"] == "anomaly-bench/2" and "auroc_tolerance" not in doc["protocol"]
    assert doc["command"].startswith("anomaly bench ")
    assert {(r["model"], r["setting"]) for r in doc["results"]} == {
        (m, s) for m in models for s in ("matched", "defaults")}
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r) and "checks" not in r
        assert (r["n_fit"], r["n_train_total"], r["n_test"], r["n_test_defective"]) == (6, 8, 6, 3)
        assert FIGURE_KEYS <= set(r["ours"])
        assert r["ours"]["image_auroc"] > 0.9  # a bright square on a plain part
        assert r["ours"]["pixel_auroc"] is not None and r["ours"]["aupro"] is not None
        assert r["ours"]["latency_ms"]["p50"] > 0 and r["ours"]["backbone_ms_p50"] > 0


@pytest.mark.slow
def test_bench_ours_only(tiny_root, tmp_path):
    # One model keeps this quick (each case starts fresh worker processes); every output
    # and key is the same for the others, which the anomalib test below runs.
    # Two seeds: each is a replicate with its own fit; the figures combine them.
    doc = _run(tiny_root, tmp_path / "out", "none", ("patchcore",), seeds=(0, 1))
    _check_common(doc, ("patchcore",))
    assert doc["peer"]["available"] is False and doc["backbone_check"] is None
    assert doc["protocol"]["seeds"] == [0, 1] and "--seeds 0 1" in doc["command"]
    for r in doc["results"]:
        assert r["peer"] is None and r["ratios"] is None and r["peer_skipped"]
        assert r["seeds"] == [0, 1]
        reps = r["ours"]["replicates"]
        assert [rep["seed"] for rep in reps] == [0, 1]
        assert r["ours"]["image_auroc"] == pytest.approx(np.mean([rep["image_auroc"] for rep in reps]), abs=1e-4)
        # The per-image record reproduces each seed's AUROC.
        assert [t["seed"] for t in r["test_sets"]] == [0, 1] and r["differences"] is None
        for rep, test_set in zip(reps, r["test_sets"]):
            assert len(test_set["images"]) == len(test_set["labels"]) == len(rep["scores"]) == 6
            assert len(rep["e2e_ms"]) == len(rep["model_ms"]) == 6 and min(rep["e2e_ms"]) > 0
            assert all((tiny_root / "plate" / name).is_file() for name in test_set["images"])
            assert image_auroc(test_set["labels"], rep["scores"]) == pytest.approx(rep["image_auroc"], abs=1e-6)
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "## matched settings" in md and "## defaults settings" in md and "| plate | patchcore |" in md
    assert "## Image AUROC per seed" in md
    assert "## Paired differences" not in md and "table above" not in md and "check" not in md.lower()
    assert doc["summary"]["cases_compared"] == 0 and doc["summary"]["fits_refused"] == []


@pytest.mark.slow
def test_bench_with_anomalib(tiny_root, tmp_path):
    python, reason = peer_python(REPO)
    if python is None:
        pytest.skip(f"anomalib not available: {reason}")
    doc = _run(tiny_root, tmp_path / "out", "anomalib", ("patchcore", "padim"))
    _check_common(doc, ("patchcore", "padim"))
    assert doc["peer"]["available"] is True and doc["peer"]["version"]
    check = doc["backbone_check"]
    assert check["identical"] and check["peer_layers"] == ["blocks.1", "blocks.2", "blocks.4"]
    for r in doc["results"]:
        assert FIGURE_KEYS <= set(r["peer"]), r["setting"]
        assert RATIO_KEYS <= set(r["ratios"])
        assert r["peer"]["image_auroc"] is not None
        diffs = r["differences"]
        assert set(diffs) == COMPARED_KEYS
        auroc = diffs["image_auroc"]
        assert auroc["value"] == pytest.approx(r["ratios"]["image_auroc_delta"], abs=1e-3)
        assert auroc["images"]["low"] <= auroc["value"] <= auroc["images"]["high"]
        assert auroc["images"]["resamples"] == 2000 and auroc["seeds"]["values"]
        latency = diffs["latency_p50"]
        assert latency["value"] == pytest.approx(r["ratios"]["latency_p50"], rel=0.02)
        assert latency["images"]["low"] <= latency["value"] <= latency["images"]["high"]
        assert diffs["fit_seconds"]["images"] is None and diffs["fit_seconds"]["seeds"]["values"]
    by_case = {(r["model"], r["setting"]): r for r in doc["results"]}
    # Matched PaDiM: anomalib keeps the channels ours drew for the seed; defaults: its own draw.
    from anomaly.detectors.padim import channel_subset

    padim = by_case[("padim", "matched")]["peer"]
    seed = padim["replicates"][0]["seed"]  # the one whose fit "training" describes
    assert padim["training"]["channel_index"] == channel_subset(24 + 40 + 112, 100, seed).tolist()
    own = by_case[("padim", "defaults")]["peer"]
    assert "shared_with" not in own and own["training"]["channels_of_seed"] is None
    assert own["training"]["channel_index"] != padim["training"]["channel_index"]
    matched = by_case[("patchcore", "matched")]
    assert matched["peer"]["backbone"]["layers"] == ["blocks.2", "blocks.4"]
    assert matched["peer"]["backbone"]["weights_sha256"] == matched["ours"]["backbone"]["weights_sha256"]


@pytest.mark.slow
def test_bench_ganomaly_against_anomalib_when_installed(tiny_root, tmp_path):
    # GANs on request, tiny budget; both Skip-GANomaly cases reuse GANomaly's peer run.
    python, _ = peer_python(REPO)
    peer = "anomalib" if python else "none"
    out = tmp_path / "out"
    code = main(["bench", str(tiny_root), "--out", str(out), "--peer", peer, "--models", "ganomaly", "skip-ganomaly",
                 "--max-train", "6", "--max-test", "all", "--seeds", "0", "--gan-image-size", "32",
                 "--gan-epochs", "1", "--quiet"])
    assert code == 0
    doc = json.loads((out / "bench.json").read_text())
    assert doc["complete"] and "--gan-image-size 32 --gan-epochs 1" in doc["command"]
    by_case = {(r["model"], r["setting"]): r for r in doc["results"]}
    assert set(by_case) == {(m, s) for m in ("ganomaly", "skip-ganomaly") for s in ("matched", "defaults")}
    for (model, setting), r in by_case.items():
        assert r["ours"]["image_auroc"] is not None and r["ours"]["pixel_auroc"] is not None
        assert r["ours"]["params"]["image_size"] == 32 and r["ours"]["backbone"] is None
        assert "checks" not in r
        if python is None:
            assert r["peer"] is None and r["differences"] is None
            continue
        assert r["differences"]["pixel_auroc"] is None  # the peer's GANomaly gives no map
        assert r["peer"]["image_auroc"] is not None and r["peer"]["pixel_auroc"] is None
        assert r["peer"]["pixel_metrics_note"] == "the model gives no anomaly map"
        assert r["peer"]["params"]["n_features"] == (32 if setting == "matched" else 64)
        assert r["ratios"]["latency_p50"] is not None
        if model == "skip-ganomaly":
            assert r["peer"]["shared_with"] == f"ganomaly/{setting}"
    assert "## Image AUROC per seed" in (out / "bench.md").read_text()


def _run_record(seed: int, auroc: float, e2e: list[float], fit: float, rss: float) -> dict:
    return {"seed": seed, "hello": {"torch_threads": 2},
            "fit": {"fit_seconds": fit, "bundle_mb": 1.0, "params": {}, "backbone": {}, "training": {}},
            "finish": {"image_auroc": auroc, "pixel_auroc": None, "aupro": None, "peak_rss_mb": rss},
            "timings": [{"score": v / 100, "e2e_ms": v, "model_ms": v - 1.0, "decode_ms": 1.0, "backbone_ms": 5.0}
                        for v in e2e]}


def test_replicates_combine_as_documented():
    from anomaly.bench.figures import figures

    fig = figures([_run_record(0, 0.8, [10.0, 12.0], 3.0, 900.0),
                    _run_record(1, 0.9, [14.0, 16.0], 5.0, 1100.0),
                    _run_record(2, 1.0, [18.0], 4.0, 1000.0)])
    assert fig["image_auroc"] == pytest.approx(0.9)
    assert fig["image_auroc_std"] == pytest.approx(0.1)
    assert fig["pixel_auroc"] is None and fig["pixel_auroc_std"] is None
    assert fig["latency_ms"]["p50"] == pytest.approx(14.0)  # pooled over every replicate's images
    assert fig["fit_seconds"] == pytest.approx(4.0)  # median
    assert fig["peak_rss_mb"] == 1100.0  # largest
    assert fig["latency_over_backbone"] == pytest.approx(14.0 / 5.0)
    assert [r["image_auroc"] for r in fig["replicates"]] == [0.8, 0.9, 1.0]
    assert [r["scores"] for r in fig["replicates"]] == [[0.1, 0.12], [0.14, 0.16], [0.18]]
    assert [r["e2e_ms"] for r in fig["replicates"]] == [[10.0, 12.0], [14.0, 16.0], [18.0]]
    assert [r["model_ms"] for r in fig["replicates"]] == [[9.0, 11.0], [13.0, 15.0], [17.0]]
    one = figures([_run_record(3, 0.7, [10.0], 2.0, 800.0)])
    assert one["image_auroc"] == pytest.approx(0.7) and one["image_auroc_std"] is None


def _replicate(seed: int, labels: list[int], scores, e2e_ms, fit: float, rss: float) -> dict:
    """One seed's record of one system, as :func:`anomaly.bench.figures.figures` writes it."""
    return {"seed": seed, "image_auroc": image_auroc(labels, rank_refused_above(scores)), "pixel_auroc": None,
            "aupro": None,
            "fit_seconds": fit, "peak_rss_mb": rss, "scores": [None if s is None else float(s) for s in scores],
            "e2e_ms": [None if v is None else float(v) for v in e2e_ms],
            "model_ms": [None if v is None else float(v) / 2 for v in e2e_ms]}


def _compared_case(labels: list[int], ours: list[dict], peer: list[dict]) -> dict:
    return {"test_sets": [{"seed": r["seed"], "labels": labels} for r in ours],
            "ours": {"replicates": ours}, "peer": {"replicates": peer}}


LABELS = [0] * 20 + [1] * 10


def test_identical_systems_differ_by_nothing():
    from anomaly.bench.compare import differences

    rng = np.random.default_rng(0)
    reps = [_replicate(seed, LABELS, rng.normal(size=30), rng.uniform(10, 30, 30), 2.0 + seed, 1000.0)
            for seed in range(3)]
    found = differences(_compared_case(LABELS, reps, [dict(r) for r in reps]))
    auroc = found["image_auroc"]
    assert auroc["value"] == 0.0 and auroc["images"]["low"] <= 0.0 <= auroc["images"]["high"]
    assert auroc["seeds"]["values"] == [0.0, 0.0, 0.0]
    for name in ("latency_p50", "model_p50"):
        assert found[name]["value"] == 1.0 and (found[name]["images"]["low"], found[name]["images"]["high"]) == (1, 1)
    assert found["fit_seconds"] == {"value": 1.0, "images": None,
                                    "seeds": {"values": [1.0] * 3, "mean": 1.0, "sd": 0.0, "min": 1.0, "max": 1.0}}
    assert found["pixel_auroc"] is None and found["aupro"] is None  # neither system has the figure
    assert differences({**_compared_case(LABELS, reps, reps), "peer": None}) is None


def test_a_system_better_on_every_image_has_an_interval_above_zero():
    from anomaly.bench.compare import differences

    rng = np.random.default_rng(1)
    ours, peer = [], []
    for seed in range(3):
        noise = rng.normal(size=30)  # the peer ranks at random; ours lifts every defective image by 3
        e2e = rng.uniform(10, 30, 30)
        peer.append(_replicate(seed, LABELS, noise, e2e, 4.0, 1000.0))
        ours.append(_replicate(seed, LABELS, noise + 3.0 * np.array(LABELS), e2e, 1.0, 800.0))
    auroc = differences(_compared_case(LABELS, ours, peer))["image_auroc"]
    assert auroc["value"] > 0.2 and auroc["images"]["low"] > 0.0 and auroc["seeds"]["min"] > 0.0
    mean_peer = np.mean([r["image_auroc"] for r in peer])
    assert auroc["value"] == pytest.approx(np.mean([r["image_auroc"] for r in ours]) - mean_peer, abs=1e-4)


def test_a_known_latency_ratio_is_found():
    from anomaly.bench.compare import differences, paired_ratio_of_medians

    rng = np.random.default_rng(2)
    scores = rng.normal(size=30)
    peer = [_replicate(seed, LABELS, scores, rng.lognormal(3.0, 0.5, 30), 4.0 + seed, 1000.0) for seed in range(3)]
    # Ours twice as slow on every image: paired, every resample finds exactly 2.
    ours = [_replicate(r["seed"], LABELS, scores, 2.0 * np.array(r["e2e_ms"]), 2.0 + r["seed"], 500.0)
            for r in peer]
    found = differences(_compared_case(LABELS, ours, peer))
    latency = found["latency_p50"]
    assert latency["value"] == pytest.approx(2.0)
    assert (latency["images"]["low"], latency["images"]["high"]) == (pytest.approx(2.0), pytest.approx(2.0))
    assert latency["seeds"]["values"] == [2.0, 2.0, 2.0]
    assert found["peak_rss_mb"]["value"] == 0.5
    assert found["fit_seconds"]["seeds"] == {"values": [0.5, 0.6, 0.667], "mean": 0.589, "sd": 0.084,
                                             "min": 0.5, "max": 0.667}
    # Unrelated images, twice the time on average: an interval around 2 that is not a point.
    blocks = [(2.0 * rng.lognormal(3.0, 0.3, 200), rng.lognormal(3.0, 0.3, 200)) for _ in range(3)]
    noisy = paired_ratio_of_medians(blocks)
    assert noisy.low < 2.0 < noisy.high and 1.8 < noisy.value < 2.2 and noisy.high - noisy.low > 0.05
    assert paired_ratio_of_medians(blocks) == noisy  # seeded


def test_refused_images_leave_the_per_image_interval_out_and_missing_pairs_are_dropped():
    from anomaly.bench.compare import differences, paired_ratio_of_medians

    rng = np.random.default_rng(3)
    scores, e2e = list(rng.normal(size=30)), list(rng.uniform(10, 30, 30))
    peer = [_replicate(0, LABELS, scores, e2e, 4.0, 1000.0)]
    refused = _replicate(0, LABELS, [None, *scores[1:]], [None, *(2 * v for v in e2e[1:])], 4.0, 1000.0)
    found = differences(_compared_case(LABELS, [refused], peer))
    assert found["image_auroc"]["images"] is None  # no raw score to resample for the refused image
    assert found["image_auroc"]["value"] == pytest.approx(refused["image_auroc"] - peer[0]["image_auroc"], abs=1e-4)
    assert found["latency_p50"]["value"] == pytest.approx(2.0)  # the refused image's pair is left out
    assert paired_ratio_of_medians([([None, None], [1.0, 2.0])]) is None
    with pytest.raises(ValueError, match="one entry per image"):
        paired_ratio_of_medians([([1.0, 2.0], [1.0])])


def test_seed_spread():
    from anomaly.bench.compare import seed_spread

    assert seed_spread([0.8, None, 1.0, 0.9]) == {"values": [0.8, 1.0, 0.9], "mean": 0.9, "sd": 0.1, "min": 0.8,
                                                  "max": 1.0}
    assert seed_spread([0.7]) == {"values": [0.7], "mean": 0.7, "sd": None, "min": 0.7, "max": 0.7}
    assert seed_spread([None]) is None


def test_bench_md_shows_the_differences_and_no_verdict():
    from anomaly.bench.compare import differences, ratios
    from anomaly.bench.figures import figures
    from anomaly.bench.report import markdown

    runs = {name: [_run_record(seed, 0.9, [10.0 * scale, 12.0 * scale], 3.0 * scale, 900.0)
                   for seed in (0, 1)] for name, scale in (("ours", 1.0), ("peer", 2.0))}
    entry = {"category": "plate", "model": "patchcore", "setting": "matched", "n_fit": 6, "n_test": 2,
             "n_test_defective": 1, "ours": figures(runs["ours"]), "peer": figures(runs["peer"]),
             "peer_skipped": None, "failed": None,
             "test_sets": [{"seed": seed, "images": ["a.png", "b.png"], "labels": [0, 1]} for seed in (0, 1)]}
    entry["ratios"] = ratios(entry["ours"], entry["peer"])
    entry["differences"] = differences(entry)
    doc = {"complete": True, "command": "anomaly bench x", "machine": {}, "peer": {"name": "anomalib"},
           "protocol": {"settings": ["matched"], "max_train": 6, "max_test": None, "seeds": [0, 1],
                        "replicates": "r", "image_size": 64, "matched_coreset_ratio": 0.25, "timing": "t",
                        "scores": "s"},
           "summary": {"wall_seconds": 12.5}, "results": [entry]}
    md = markdown(doc)
    assert "## Paired differences, ours against anomalib" in md
    row = next(line for line in md.splitlines() if line.startswith("| plate | patchcore | matched | +0.000"))
    # e2e and model latency half the peer's on every image; fit half on both seeds
    assert "0.50× [0.50×, 0.50×]; seeds 0.50× to 0.50×" in row and "0.50× ± 0.00 (0.50× to 0.50×)" in row
    assert "wall time: 12.5 s" in md and "The paired differences and their intervals are in the table above" in md
    assert "check" not in md.lower() and "passed" not in md and "budget" not in md


@pytest.mark.parametrize("change, match", [({"seeds": ()}, "seeds"), ({"seeds": (1, 1)}, "seeds"),
                                           ({"gan_epochs": 0}, "gan_epochs"), ({"max_test": 0}, "max_test"),
                                           ({"models": ("patchcore", "patchcor")}, "patchcor")])
def test_bad_bench_configuration_is_refused_before_anything_runs(tmp_path, change, match):
    from anomaly.bench import BenchConfig, run_bench
    from anomaly.errors import InvalidParameterError, UnknownDetectorError

    with pytest.raises((InvalidParameterError, UnknownDetectorError), match=match):
        run_bench(BenchConfig(root=tmp_path, out=tmp_path / "out", peer=None, **change))
    assert not (tmp_path / "out").exists()


def test_subsampling_is_seeded_and_stratified():
    paths = [f"{i:03d}.png" for i in range(50)]
    assert subsample_train(paths, 10, 0) == subsample_train(paths, 10, 0)
    assert subsample_train(paths, 10, 0) == sorted(subsample_train(paths, 10, 0))
    assert subsample_train(paths, None, 0) == paths
    samples = ([Sample(Path(f"g{i}"), 0, "good") for i in range(60)]
               + [Sample(Path(f"c{i}"), 1, "crack") for i in range(30)]
               + [Sample(Path(f"h{i}"), 1, "hole") for i in range(2)])
    picked = subsample_test(samples, 20, 0)
    assert len(picked) == 20
    counts = {t: sum(s.defect_type == t for s in picked) for t in ("good", "crack", "hole")}
    assert counts["good"] == 13 and counts["crack"] == 6 and counts["hole"] == 1
    assert picked == subsample_test(samples, 20, 0)


def test_matched_settings_agree_on_both_sides():
    patchcore = {s.setting: s for s in model_settings("patchcore", matched_coreset_ratio=0.01)}
    m = patchcore["matched"]
    assert m.ours["coreset_ratio"] == m.peer["coreset_ratio"] == 0.01
    assert m.ours["num_neighbors"] == m.peer["num_neighbors"]
    assert list(m.ours["layers"]) == m.peer["layers"] and m.ours["image_size"] == m.peer["image_size"]
    assert patchcore["defaults"].peer["coreset_ratio"] == 0.1
    padim = {s.setting: s for s in model_settings("padim")}["matched"]
    assert padim.ours["n_features"] == padim.peer["n_features"] and padim.ours["grid_stride"] == 4


def test_our_params_change_our_side_only_and_the_command_repeats_them(tmp_path):
    import shlex

    from anomaly.bench.run import BenchConfig, _setting, command_line
    from anomaly.cli.common import parse_params

    overrides = {"refine_cells": 0, "layers": [1, 2]}
    config = BenchConfig(root=tmp_path, out=tmp_path / "out", ours_params=overrides)
    plain = BenchConfig(root=tmp_path, out=tmp_path / "out")
    for setting in ("matched", "defaults"):
        a, b = _setting(config, "patchcore", setting, 0), _setting(plain, "patchcore", setting, 0)
        assert a.ours == {**b.ours, **overrides} and a.peer == b.peer
    args = shlex.split(command_line(config))
    given = [args[i + 1] for i, arg in enumerate(args) if arg == "--param"]
    assert parse_params(given) == overrides
    assert "--param" not in shlex.split(command_line(plain))


def test_workers_import_at_once_and_answer_in_order(tmp_path):
    """Two workers started without waiting both greet; replies sent ahead are read in order."""
    import sys

    from anomaly.bench.worker import BenchError, WorkerClient

    python = sys.executable
    first = WorkerClient(python, "ours", tmp_path / "a.log", REPO, greet=False)
    second = WorkerClient(python, "ours", tmp_path / "b.log", REPO, greet=False)
    try:
        assert first.hello == {} and second.hello == {}
        hellos = [first.greet(), second.greet()]
        assert [h["system"] for h in hellos] == ["ours", "ours"]
        assert hellos[0]["pid"] != hellos[1]["pid"]
        assert first.greet() is hellos[0]  # greeted once
        for client in (first, second):
            client.send({"op": "hello"})
        assert [c.receive("hello")["pid"] for c in (first, second)] == [h["pid"] for h in hellos]
        with pytest.raises(BenchError, match="failed on 'fit'"):
            first.call({"op": "fit", "model": "no-such-model", "params": {}, "train": [], "bundle_dir": str(tmp_path)})
    finally:
        first.close()
        second.close()

    dead = WorkerClient(python, "no-such-system", tmp_path / "c.log", REPO, greet=False)
    try:
        with pytest.raises(BenchError, match="stopped during 'hello'"):
            dead.greet()
    finally:
        dead.close()


@pytest.fixture(scope="module")
def classical_root(tmp_path_factory) -> Path:
    """Two sets for the classical models, with answers built in.

    ``plate``: 8 good training parts; test: one part turned a quarter (good, but it cannot
    be aligned; first, so the warm-up call meets a refusal too), 3 good parts, 3 parts with a bright square and one image of noise
    (no part in it). ``mixed``: training images of two sizes, which the classical models
    refuse (they compare pixel by pixel).
    """
    root = tmp_path_factory.mktemp("bench-classical")
    rng = np.random.default_rng(1)
    plate, mixed = root / "plate", root / "mixed"
    _write_plate(plate, rng, first_good=1)
    cv2.imwrite(str(plate / "test/good" / "000.png"), np.rot90(make_part(rng)).copy())
    for folder in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (mixed / folder).mkdir(parents=True)
    for i in range(8):
        cv2.imwrite(str(mixed / "train/good" / f"{i:03d}.png"), make_part(rng, size=96 if i % 2 else 80))
    (plate / "test/scramble").mkdir()
    (plate / "ground_truth/scramble").mkdir()
    cv2.imwrite(str(plate / "test/scramble" / "000.png"), rng.integers(0, 256, (96, 96, 3)).astype(np.uint8))
    cv2.imwrite(str(plate / "ground_truth/scramble" / "000_mask.png"), np.full((96, 96), 255, np.uint8))
    cv2.imwrite(str(mixed / "test/good" / "000.png"), make_part(rng))
    cv2.imwrite(str(mixed / "test/spot" / "000.png"), make_part(rng))
    cv2.imwrite(str(mixed / "ground_truth/spot" / "000_mask.png"), np.zeros((96, 96), np.uint8))
    return root


def _pairwise_auroc(labels: list[int], scores: list[float]) -> float:
    """AUROC by counting (good, defective) pairs: the definition, ties counting half."""
    good = [s for s, y in zip(scores, labels) if y == 0]
    bad = [s for s, y in zip(scores, labels) if y == 1]
    wins = sum(1.0 if b > g else 0.5 if b == g else 0.0 for g in good for b in bad)
    return wins / (len(good) * len(bad))


@pytest.mark.slow
def test_classical_models_run_alone_refusals_are_results(classical_root, tmp_path):
    """Classical models have no anomalib counterpart: one ``defaults`` case per set, ours alone.

    A set whose training images the detector refuses is recorded with the error and the run
    goes on; a test part it cannot align is rejected (ranked above every scored image), as
    the service rejects it.
    """
    out = tmp_path / "out"
    assert main(["bench", str(classical_root), "--out", str(out), "--peer", "none", "--models", "difference",
                 "--max-test", "all", "--seeds", "0", "--quiet"]) == 0
    doc = json.loads((out / "bench.json").read_text())
    assert doc["complete"] is True
    by_set = {r["category"]: r for r in doc["results"]}
    assert sorted(by_set) == ["mixed", "plate"]
    assert all(r["setting"] == "defaults" and r["model"] == "difference" for r in doc["results"])

    mixed = by_set["mixed"]
    assert mixed["ours"] is None and mixed["differences"] is None and "checks" not in mixed
    assert doc["summary"]["fits_refused"] == ["mixed/difference/defaults"]
    assert mixed["failed"]["op"] == "fit" and mixed["failed"]["seed"] == 0
    assert mixed["failed"]["error"].startswith("InvalidImageError")

    plate = by_set["plate"]
    assert plate["failed"] is None
    ours, test_set = plate["ours"], plate["test_sets"][0]
    refused = {name for name, score in zip(test_set["images"], ours["replicates"][0]["scores"]) if score is None}
    assert refused == {"test/good/000.png", "test/scramble/000.png"}
    assert (ours["n_refused"], ours["n_refused_good"]) == (2, 1)
    # Refused parts rank above every scored one: the rotated good part outranks the three
    # spots (3 pairs lost), ties with the noise image (half a pair).
    ranked = [np.inf if s is None else s for s in ours["replicates"][0]["scores"]]
    expected = _pairwise_auroc(test_set["labels"], ranked)
    assert ours["image_auroc"] == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx((16 - 3 - 0.5) / 16)
    assert ours["pixel_auroc"] is not None and "2 refused" in ours["pixel_metrics_note"]

    md = (out / "bench.md").read_text()
    assert "mixed/difference: no figures; ours refused the training images of seed 0 (fit): InvalidImageError" in md
    assert "could not align 2 of the test images over the seeds (1 of them good)" in md


def test_a_typed_fit_error_is_a_result_and_other_errors_stop_the_run(tmp_path):
    import sys

    from anomaly.bench.worker import WorkerClient, WorkerRequestError

    with WorkerClient(sys.executable, "ours", tmp_path / "w.log", REPO) as worker:
        with pytest.raises(WorkerRequestError) as typed:  # our typed error: recorded by the bench
            worker.call({"op": "fit", "model": "no-such-model", "params": {}, "train": [], "bundle_dir": str(tmp_path)})
        with pytest.raises(WorkerRequestError) as untyped:  # anything else: the run stops
            worker.call({"op": "fit", "model": "patchcore", "params": {}, "bundle_dir": str(tmp_path)})
    assert (typed.value.op, typed.value.typed, typed.value.system) == ("fit", True, "ours")
    assert typed.value.error_type == "UnknownDetectorError"
    assert (untyped.value.typed, untyped.value.error_type) == (False, "KeyError")
