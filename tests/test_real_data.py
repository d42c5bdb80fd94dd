"""Integration on the real sets in ../shared/datasets (skipped when absent)."""

from __future__ import annotations

import pytest

from anomaly.evaluate import evaluate


@pytest.mark.datasets
@pytest.mark.slow
def test_patchcore_on_hazelnut_toy(datasets_root):
    category = datasets_root / "anomalib_hazelnut_toy" / "hazelnut"
    if not category.is_dir():
        pytest.skip("hazelnut toy set absent")
    report = evaluate(category, "patchcore")
    assert report["image_auroc"] >= 0.95
    assert report["pixel_auroc"] > 0.9
    assert report["n_test"] == 23
