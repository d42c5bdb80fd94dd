"""The demo product over HTTP, with its built-in answer: every defective part NG, every good part GOOD.

The model is trained as ``anomaly demo`` trains it (PatchCore defaults on ``data/bracket/train/good``),
stored, and served by the application; each of the 37 test parts is posted to the scoring API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly.datasets import MVTecCategory
from anomaly.store import ModelStore
from anomaly.training import train_into
from service import create_app
from service.testing import make_test_config

DEMO = Path(__file__).resolve().parents[1] / "data" / "bracket"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DEMO / "train" / "good").is_dir(), reason="committed demo set not present")]


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("demo-http")
    category = MVTecCategory(DEMO)
    store = ModelStore(tmp / "store")
    train_into(store, "demo-bracket", "patchcore", category.train_good(), source=str(DEMO), promote=True)
    app = create_app(make_test_config(tmp, store.root))
    yield app.test_client(), category
    app.extensions["anomaly_db"].dispose()


def test_every_demo_test_part_gets_its_verdict_over_http(demo_client):
    client, category = demo_client
    wrong = []
    for sample in category.test_samples():
        r = client.post(f"/api/v1/models/demo-bracket/score?part_id={sample.defect_type}-{sample.path.stem}",
                        data=sample.path.read_bytes(), content_type="image/png")
        assert r.status_code == 200, r.get_json()
        expected = "GOOD" if sample.defect_type == "good" else "NG"
        if r.get_json()["verdict"] != expected:
            wrong.append((sample.defect_type, sample.path.name, r.get_json()["verdict"]))
        if expected == "NG":
            assert r.get_json()["regions"], f"{sample.path} judged NG without a measured region"
    assert wrong == []
    assert client.get("/api/v1/inspections").get_json()["total"] == len(category.test_samples())
