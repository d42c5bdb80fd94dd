"""Bundles (no pickle, hashes checked) and the versioned model store."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from anomaly.bundle import FORMAT_VERSION, load_bundle, save_bundle
from anomaly.detectors.registry import create_detector
from anomaly.errors import BundleError, InvalidParameterError, ModelNotFoundError
from anomaly.store import ModelStore


@pytest.fixture(scope="module")
def fitted(good_parts):
    return create_detector("patchcore", {"image_size": 64}).fit(good_parts)


def test_manifest_records_what_it_must(fitted, tmp_path):
    manifest = save_bundle(fitted, tmp_path / "b", calibration={"t_review": 1.0, "t_ng": 2.0})
    for key in ("format_version", "detector", "params", "packages", "backbone", "created", "calibration", "files"):
        assert key in manifest
    assert manifest["backbone"]["name"] == "efficientnet_lite0" and len(manifest["backbone"]["weights_sha256"]) == 64
    assert "numpy" in manifest["packages"] and "torch" in manifest["packages"]
    assert set(manifest["files"]) == {"state.npz", "bank.faiss"}


def _saved_without(detector, key: str, directory):
    """Save ``detector``, drop ``key`` from the manifest's parameters and state (a bundle
    written before the parameter existed), and load it back."""
    save_bundle(detector, directory)
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["params"][key], manifest["state"][key], manifest["sha256"]  # nor the manifest's hash
    path.write_text(json.dumps(manifest))
    return load_bundle(directory).detector


def test_bundle_from_before_the_grid_origin_keeps_the_input_anchored_grid(fitted, good_parts, tmp_path):
    # A bundle written before ``grid_origin`` existed has neither the parameter nor the
    # state key; its bank was built on the grid anchored at input pixel (0, 0), and it
    # must still be scored on that grid, not on the new default one.
    old = create_detector("patchcore", {"image_size": 64, "grid_origin": "input"}).fit(good_parts)
    loaded = _saved_without(old, "grid_origin", tmp_path / "b")
    assert loaded.grid_origin == "input" and loaded.feature_origin == (0.0, 0.0)
    np.testing.assert_allclose(loaded.score(good_parts[:2]).scores, old.score(good_parts[:2]).scores, rtol=1e-5)
    assert fitted.grid_origin == "layer" and fitted.feature_origin != (0.0, 0.0)
    reloaded = load_bundle(save_bundle(fitted, tmp_path / "new") and tmp_path / "new").detector
    assert reloaded.grid_origin == "layer"


def test_padim_bundle_from_before_the_coarse_sampling_keeps_bilinear_sampling(good_parts, tmp_path):
    # Its Gaussians were fitted on bilinearly sampled coarser layers; scoring must sample
    # them the same way, not with PaDiM's new nearest-cell default.
    old = create_detector("padim", {"image_size": 64, "coarse_sampling": "linear"}).fit(good_parts)
    loaded = _saved_without(old, "coarse_sampling", tmp_path / "b")
    assert loaded.coarse_sampling == "linear"
    np.testing.assert_allclose(loaded.score(good_parts[:2]).scores, old.score(good_parts[:2]).scores, rtol=1e-5)
    new = create_detector("padim", {"image_size": 64}).fit(good_parts)
    assert new.coarse_sampling == "nearest"
    reloaded = load_bundle(save_bundle(new, tmp_path / "new") and tmp_path / "new").detector
    assert reloaded.coarse_sampling == "nearest"
    np.testing.assert_allclose(reloaded.score(good_parts[:2]).scores, new.score(good_parts[:2]).scores, rtol=1e-5)
    # The two samplings give other features (the stride-16 layer's columns of the grid).
    assert not torch.allclose(new._features(good_parts[:1])[0], loaded._features(good_parts[:1])[0], rtol=1e-3)


def test_tampered_file_refused(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    with open(tmp_path / "b" / "state.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "b")


def test_edited_calibration_refused_like_an_edited_file(fitted, tmp_path):
    # Thresholds set by hand in manifest.json would turn every broken part GOOD.
    save_bundle(fitted, tmp_path / "b", calibration={"t_ng": 2.0, "t_review": 1.5})
    assert load_bundle(tmp_path / "b").calibration["t_ng"] == 2.0
    path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["calibration"]["t_ng"] = manifest["calibration"]["t_review"] = 1e9
    path.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError, match="changed after the bundle was written"):
        load_bundle(tmp_path / "b")
    path.write_text(json.dumps({**manifest, "calibration": {"t_ng": 2.0, "t_review": 1.5}}, indent=4))
    assert load_bundle(tmp_path / "b").calibration["t_ng"] == 2.0  # the same content, laid out anew


def test_other_format_version_refused(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version"):
        load_bundle(tmp_path / "b")


def test_missing_file_and_not_a_bundle(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    os.remove(tmp_path / "b" / "bank.faiss")
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_bundles_are_never_overwritten(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    with pytest.raises(BundleError, match="exists"):
        save_bundle(fitted, tmp_path / "b")


def test_store_versions_promotion_and_rollback(fitted, tmp_path):
    store = ModelStore(tmp_path)
    v1 = store.add("part-a", lambda p: save_bundle(fitted, p))
    v2 = store.add("part-a", lambda p: save_bundle(fitted, p))
    assert (v1, v2) == (1, 2)
    assert store.production("part-a") == 1  # only the first version is promoted by default
    store.promote("part-a", 2)
    assert store.production("part-a") == 2
    assert store.rollback("part-a") == 1
    with pytest.raises(ModelNotFoundError):
        store.rollback("part-a")
    assert [v.version for v in store.list("part-a")] == [1, 2]
    loaded = store.load("part-a")
    assert loaded.path.name == "1"
    with pytest.raises(ModelNotFoundError):
        store.path("part-a", 7)
    with pytest.raises(ModelNotFoundError):
        store.path("other")
    # Stored files are read-only: versions are immutable.
    assert not os.stat(store.path("part-a", 2) / "state.npz").st_mode & 0o222


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 65])
def test_model_names_that_could_be_paths_are_refused(tmp_path, name):
    with pytest.raises(InvalidParameterError):
        ModelStore(tmp_path).versions(name)


def test_failed_write_leaves_nothing(tmp_path):
    store = ModelStore(tmp_path)

    def boom(path):
        path.mkdir()
        (path / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.add("m", boom)
    assert store.versions("m") == [] and not any(p.name.startswith(".new") for p in (tmp_path / "m").iterdir())
