"""More goods for a stored model: extension against a fit on every good, and a new version from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly.accepted_input import InputGeometryError
from anomaly.adding import add_goods
from anomaly.detectors.registry import create_detector
from anomaly.errors import DatasetError, InvalidParameterError
from anomaly.imageio import write_png
from anomaly.store import ModelStore
from anomaly.training import TrainingOptions, train_into
from tests.conftest import make_part


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(0)
    return [make_part(rng, size=128) for _ in range(40)], [make_part(rng, size=128) for _ in range(8)]


def test_padim_extended_equals_padim_fitted_on_every_good(parts):
    goods, test = parts
    extended = create_detector("padim", {"image_size": 64}).fit(goods[:10]).extend(goods[10:20])
    whole = create_detector("padim", {"image_size": 64}).fit(goods[:20])
    assert extended.n_train_ == 20
    np.testing.assert_allclose(extended.mean_, whole.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(extended.score(test).scores, whole.score(test).scores, rtol=1e-5)


def test_patchcore_extended_comes_close_to_a_fit_on_every_good(parts):
    goods, test = parts
    first = create_detector("patchcore", {"image_size": 128}).fit(goods[:20])
    whole = create_detector("patchcore", {"image_size": 128}).fit(goods)
    extended = create_detector("patchcore", {"image_size": 128}).fit(goods[:20]).extend(goods[20:])
    assert extended.n_patches_seen_ == whole.n_patches_seen_
    assert extended.memory_bank_.shape == whole.memory_bank_.shape
    s_first, s_whole, s_ext = (m.score(test).scores for m in (first, whole, extended))
    # The new goods are learnt: clean parts score as a fit on every good scores them, not as before.
    assert abs(s_ext.mean() - s_whole.mean()) < 0.25 * abs(s_first.mean() - s_whole.mean())
    assert np.abs(s_ext - s_whole).max() < 0.1 * s_whole.mean()


def test_a_model_that_cannot_extend_says_so(parts):
    goods, _ = parts
    model = create_detector("difference", {}).fit(goods[:4])
    with pytest.raises(InvalidParameterError, match="onboard again"):
        model.extend(goods[4:6])


def test_adding_goods_writes_a_version_from_the_stored_one(parts, tmp_path, capsys):
    from anomaly.cli.main import main

    goods, test = parts
    store = ModelStore(tmp_path / "store")
    first = train_into(store, "plate", "patchcore", goods[:8], TrainingOptions(n_folds=4),
                       params={"image_size": 64}, promote=True)
    folder = tmp_path / "more"
    folder.mkdir()
    for i, image in enumerate(goods[8:20]):
        write_png(folder / f"more-{i}.png", image)
    assert main(["onboard", str(folder), "--name", "plate", "--add", "--quiet", "--store", str(store.root)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == first.version + 1 and answer["added"]["n_added"] == 12
    manifest = store.manifest("plate", answer["version"])
    cal = manifest["calibration"]
    # The first 8 cross-fitted scores are kept as stored; the 12 added ones come from version 1.
    assert cal["good_scores"][:8] == store.manifest("plate", first.version)["calibration"]["good_scores"]
    assert len(cal["good_scores"]) == 20 and manifest["training_data"]["n_images"] == 20
    assert manifest["notes"]["onboarding"]["added"][-1]["from_version"] == first.version
    assert not manifest["notes"]["onboarding"]["provisional"]  # 20 goods now
    assert "onboarding/report.html" in manifest["files"]
    bad = test[0].copy()
    bad[40:60, 50:70] = 255
    loaded = store.load("plate", answer["version"])
    scores = loaded.detector.score([test[1], bad]).scores
    assert loaded.calibration.verdict(float(scores[1])) == "NG" and scores[0] < scores[1]
    with pytest.raises(DatasetError, match="at least 2"):
        add_goods(store, "plate", goods[:1])
    # A good of another size than the model's is refused by name, before anything is learnt.
    odd = tmp_path / "odd"
    odd.mkdir()
    write_png(odd / "ok.png", goods[30])
    write_png(odd / "wide.png", np.concatenate([goods[31], goods[32]], axis=1))
    with pytest.raises(InputGeometryError, match="wide.png"):
        add_goods(store, "plate", sorted(odd.iterdir()))
    assert store.versions("plate") == [first.version, answer["version"]]
    (odd / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        add_goods(store, "plate", sorted(odd.iterdir()))


def test_the_service_adds_goods_as_a_job_and_shows_the_report(parts, tmp_path):
    import io
    from service import create_app
    from service.testing import finished_job, make_test_config, png_bytes

    goods, _ = parts
    store = ModelStore(tmp_path / "store")
    train_into(store, "plate", "padim", goods[:6], TrainingOptions(n_folds=3), params={"image_size": 64},
               promote=True)
    app = create_app(make_test_config(tmp_path, tmp_path / "store"))
    client = app.test_client()
    try:
        more = [(io.BytesIO(png_bytes(image)), f"more-{i}.png") for i, image in enumerate(goods[6:12])]
        r = client.post("/api/v1/models/plate/versions", content_type="multipart/form-data",
                        data={"images": more, "detector": "add", "promote": "true"})
        assert r.status_code == 202, r.get_json()
        job = finished_job(client, r.get_json(), timeout=120)
        assert job["status"] == "succeeded" and job["version"] == 2, job
        manifest = store.manifest("plate", 2)
        assert manifest["notes"]["onboarding"]["added"][-1]["n_added"] == 6 and store.production("plate") == 2
        assert manifest["notes"]["job_id"] == job["job_id"]
        page = client.get("/models/plate/2/report")
        assert page.status_code == 200 and "report-added" in page.get_data(as_text=True)
        r = app.test_client().post("/api/v1/models/plate/versions", content_type="multipart/form-data",
                                   data={"images": [(io.BytesIO(png_bytes(goods[0])), "a.png")] * 2, "detector": "add",
                                         "params": '{"image_size": 32}'})  # a client without the page's session
        assert r.status_code == 400 and "keeps the stored model's parameters" in r.get_json()["message"]
    finally:
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()
