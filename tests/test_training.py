"""One way to train: TrainingOptions checked once, train_into storing the version, the same options from CLI and HTTP."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from anomaly.errors import InvalidParameterError
from anomaly.store import ModelStore
from anomaly.training import TrainingOptions, train_into
from service import create_app
from service.testing import finished_job, make_part, make_test_config, png_bytes

FAST = {"image_size": 64}


@pytest.mark.parametrize("bad", [
    {"target_frr": 0.0}, {"target_frr": 0.5}, {"target_frr": float("nan")}, {"target_frr": True},
    {"review_rate": -0.1}, {"target_frr": 0.4, "review_rate": 0.6}, {"pixel_rate": 1.0},
    {"n_folds": 1}, {"n_folds": 2.5}, {"seed": -1}, {"pixel_size_mm": 0.0}, {"detection": "yes"},
    {"max_images": 1}, {"grading": {"ng_if": {}}},
])
def test_options_refuse_bad_values(bad):
    with pytest.raises(InvalidParameterError):
        TrainingOptions(**bad)


def test_options_round_trip_and_refuse_unknown_names():
    options = TrainingOptions(target_frr=0.02, review_rate=0.0, pixel_rate=0.1, n_folds=3, seed=4,
                              pixel_size_mm=0.05, grading={"ng_if_any": {"area_px": 30}}, detection=False,
                              max_images=10)
    assert TrainingOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    assert TrainingOptions.from_dict({"seed": None}) == TrainingOptions()  # None means the default
    with pytest.raises(InvalidParameterError, match="unknown training option"):
        TrainingOptions.from_dict({"folds": 3})


def test_train_into_stores_a_version_with_its_options(tmp_path, good_parts):
    store = ModelStore(tmp_path / "store")
    options = TrainingOptions(n_folds=2, detection=False, review_rate=0.0, max_images=6, seed=3)
    first = train_into(store, "part", "patchcore", good_parts, options, {"by": "test"}, params=FAST, source="here")
    assert (first.version, first.production) == (1, True)  # a model's first version goes to production
    second = train_into(store, "part", "patchcore", good_parts, options, params=FAST)
    assert (second.version, second.production) == (2, False)
    manifest = store.manifest("part", 1)
    assert manifest["training_data"]["options"] == options.to_dict()
    assert manifest["training_data"]["n_images"] == 6 and manifest["training_data"]["source"] == "here"
    assert manifest["notes"]["by"] == "test" and manifest["notes"]["fit_seconds"] > 0
    loaded = store.load("part", 1)
    assert loaded.calibration == first.model.calibration  # what was stored is what was calibrated
    assert loaded.calibration.t_review == loaded.calibration.t_ng  # review_rate 0: one cut
    # The same seed picks the same images: the two versions were trained on the same data.
    assert store.manifest("part", 2)["training_data"]["fingerprint"] == manifest["training_data"]["fingerprint"]


def test_cli_flags_are_the_options(tmp_path, good_parts, capsys):
    from anomaly.cli.main import main
    from anomaly.imageio import write_png

    folder = tmp_path / "goods"
    folder.mkdir()
    for i, image in enumerate(good_parts[:6]):
        write_png(folder / f"{i}.png", image)
    rc = main(["train", str(folder), "--name", "cli", "--param", "image_size=64", "--folds", "2",
               "--no-detection-estimate", "--review-rate", "0", "--max-images", "4", "--seed", "2", "--quiet",
               "--store", str(tmp_path / "store")])
    assert rc == 0
    options = ModelStore(tmp_path / "store").manifest("cli", 1)["training_data"]["options"]
    assert options == TrainingOptions(n_folds=2, detection=False, review_rate=0.0, max_images=4, seed=2).to_dict()


def _post_training(client, name: str, **fields):
    rng = np.random.default_rng(7)
    files = [(io.BytesIO(png_bytes(make_part(rng))), f"{i}.png") for i in range(6)]
    return client.post(f"/api/v1/models/{name}/versions", content_type="multipart/form-data",
                       data={"images": files, "params": json.dumps(FAST), **fields})


def test_the_service_takes_every_training_option(tmp_path):
    app = create_app(make_test_config(tmp_path, tmp_path / "store"))
    client = app.test_client()
    try:
        for fields in ({"review_rate": "-1"}, {"target_frr": "0.7"}, {"grading": "{not json"}, {"max_images": "1"},
                       {"pixel_size_mm": "nan"}, {"n_folds": "21"}):
            r = _post_training(client, "refused", **fields)
            assert r.status_code == 400, (fields, r.get_json())
        r = _post_training(client, "opts", n_folds="2", detection="false", review_rate="0", pixel_rate="0.2",
                           target_frr="0.05", seed="5", max_images="5", pixel_size_mm="0.1",
                           grading=json.dumps({"ng_if_any": {"area_px": 40}}))
        assert r.status_code == 202, r.get_json()
        job = finished_job(client, r.get_json(), timeout=120)
        assert job["status"] == "succeeded", job
        manifest = ModelStore(tmp_path / "store").manifest("opts", job["version"])
        assert manifest["training_data"]["options"] == TrainingOptions(
            n_folds=2, detection=False, review_rate=0.0, pixel_rate=0.2, target_frr=0.05, seed=5, max_images=5,
            pixel_size_mm=0.1, grading={"ng_if_any": {"area_px": 40}}).to_dict()
        cal = manifest["calibration"]
        assert cal["t_review"] == cal["t_ng"] and cal["pixel_rate"] == 0.2 and cal["pixel_size_mm"] == 0.1
        assert manifest["training_data"]["n_images"] == 5 and manifest["notes"]["trained_by"] == "service"
    finally:
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()
