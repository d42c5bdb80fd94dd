"""Moving thresholds without retraining: a new version each time, the old one untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pytest

from anomaly.arrays import load_arrays, save_arrays
from anomaly.bundle import save_bundle
from anomaly.calibration import calibrate
from anomaly.detectors import registry
from anomaly.detectors.base import AnomalyResult, Detector, hyperparameters, load_images
from anomaly.errors import InvalidParameterError
from anomaly.imageio import to_gray_float
from anomaly.store import ModelStore


@hyperparameters
class MeanDifference(Detector):
    """A torch-free stand-in: distance to the mean good image at 32 x 32, smoothed."""

    name = "mean-difference-test"

    size: int = 32

    def _fit(self, images: Sequence[Any]) -> None:
        self.mean_ = np.mean([self._small(i) for i in load_images(images)], axis=0).astype(np.float32)

    def _small(self, image: np.ndarray) -> np.ndarray:
        return cv2.resize(to_gray_float(image), (self.size, self.size), interpolation=cv2.INTER_AREA)

    def _score(self, images: Sequence[Any]) -> AnomalyResult:
        maps = []
        for image in load_images(images):
            diff = np.abs(to_gray_float(image) - cv2.resize(self.mean_, image.shape[1::-1]))
            maps.append(cv2.GaussianBlur(diff, (5, 5), 1.0).astype(np.float32))
        return AnomalyResult(scores=np.array([m.max() for m in maps]), maps=maps)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        save_arrays(directory / "state.npz", {"mean": self.mean_})
        return {"arrays": "state.npz"}

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        self.mean_ = load_arrays(directory / "state.npz", ["mean"])["mean"]


@pytest.fixture()
def fake_detector():
    registry.register(MeanDifference)
    yield MeanDifference
    registry._EXTRA.pop(MeanDifference.name, None)


@pytest.fixture()
def stored(fake_detector, good_parts, tmp_path):
    det = MeanDifference().fit(good_parts)
    rng = np.random.default_rng(0)
    cal = calibrate(rng.gumbel(1.0, 0.1, 60), target_frr=0.01, good_map_maxima=rng.gumbel(0.8, 0.1, 60))
    store = ModelStore(tmp_path / "store")
    version = store.add("part", lambda p: save_bundle(det, p, calibration=cal))
    return store, version


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_moving_a_threshold_writes_a_new_version_and_leaves_the_old_untouched(stored):
    from anomaly.thresholds import ThresholdChange, set_thresholds

    store, v1 = stored
    before = _digest(store.path("part", v1))
    old = store.manifest("part", v1)["calibration"]
    v2 = set_thresholds(store, "part", v1, change=ThresholdChange(t_ng=old["t_ng"] * 1.5), changed_by="qa",
                        reason="too many rejects")
    assert v2 == v1 + 1
    assert _digest(store.path("part", v1)) == before
    assert store.manifest("part", v1)["calibration"] == old
    new = store.manifest("part", v2)["calibration"]
    assert new["t_ng"] == pytest.approx(old["t_ng"] * 1.5)
    assert new["t_review"] == old["t_review"]
    assert new["expected"]["frr"] < old["expected"]["frr"]
    (change,) = new["history"]
    assert change["from_version"] == v1 and change["by"] == "qa" and change["before"]["t_ng"] == old["t_ng"]
    assert store.production("part") == v1  # not promoted unless asked
    loaded = store.load("part", v2)  # hashes verified: the detector files were copied as they were
    assert loaded.calibration.t_ng == new["t_ng"]
    assert store.manifest("part", v2)["notes"]["parent_version"] == v1


def test_rates_are_turned_into_thresholds_through_the_stored_sample(stored):
    from anomaly.thresholds import ThresholdChange, set_thresholds

    store, v1 = stored
    old = store.manifest("part", v1)["calibration"]
    v2 = set_thresholds(store, "part", change=ThresholdChange(target_frr=0.05, review_rate=0.1, pixel_rate=0.2),
                        promote=True)
    new = store.manifest("part", v2)["calibration"]
    assert new["t_ng"] < old["t_ng"] and new["t_review"] < new["t_ng"]
    assert new["expected"]["frr"] == pytest.approx(0.05, rel=1e-6)
    assert new["expected"]["review_fraction"] == pytest.approx(0.10, rel=1e-6)
    assert new["pixel_threshold"] < old["pixel_threshold"]
    assert store.production("part") == v2


def test_bad_moves_are_refused_and_write_nothing(stored):
    from anomaly.thresholds import ThresholdChange, set_thresholds

    store, v1 = stored
    t_ng = store.manifest("part", v1)["calibration"]["t_ng"]
    with pytest.raises(InvalidParameterError, match="t_review"):
        set_thresholds(store, "part", change=ThresholdChange(t_review=t_ng + 1.0))
    with pytest.raises(InvalidParameterError, match="nothing to change"):
        set_thresholds(store, "part", change=ThresholdChange())
    with pytest.raises(InvalidParameterError, match="unknown grading"):
        set_thresholds(store, "part", change=ThresholdChange(grading={"ng_if": {}}))
    assert store.versions("part") == [v1]


def test_cli_set_threshold(stored, capsys):
    from anomaly.cli.main import main

    store, v1 = stored
    rc = main(["models", "set-threshold", "part", "--t-ng", "5.0", "--t-review", "4.0", "--store", str(store.root)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == v1 + 1 and out["t_ng"] == 5.0 and out["t_review"] == 4.0 and out["parent_version"] == v1


def test_inspect_reports_measured_regions_and_graded_verdicts(stored, test_parts):
    from anomaly.inspect import inspect
    from anomaly.thresholds import ThresholdChange, set_thresholds

    store, v1 = stored
    images, mask = test_parts
    # Thresholds on this stand-in's own scale: a pasted 12 x 12 square is far above both.
    grading = {"min_area_px": 20, "ng_if_any": {"area_px": 10_000}, "score_ng_without_ng_region": "REVIEW"}
    change = ThresholdChange(t_ng=0.3, t_review=0.2, pixel_threshold=0.3, grading=grading)
    v2 = set_thresholds(store, "part", v1, change=change)
    good, bad = inspect(store.load("part", v2), [images[0], images[4]])
    assert good.verdict == "GOOD" and good.regions == []
    assert bad.score_verdict == "NG" and bad.verdict == "REVIEW"  # only regions smaller than the NG rule
    (region,) = bad.regions
    x, y, w, h = region["bbox"]
    assert mask[y + h // 2, x + w // 2] and region["polarity"] == "brighter"
    assert any("no region meets an NG rule" in r for r in bad.reasons)
    assert 50 <= bad.to_dict()["regions"][0]["area_px"] <= 400
