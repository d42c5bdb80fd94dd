"""Bundles (no pickle, hashes checked) and the versioned model store."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly.bundle import FORMAT_VERSION, load_bundle, migrate_manifest, read_manifest, save_bundle
from anomaly.calibration import Calibration
from anomaly.detectors.registry import create_detector
from anomaly.errors import BundleError, InvalidParameterError, ModelNotFoundError
from anomaly.imageio import as_image
from anomaly.store import ModelStore


@pytest.fixture(scope="module")
def fitted(good_parts):
    return create_detector("patchcore", {"image_size": 64}).fit(good_parts)


def test_manifest_records_what_it_must(fitted, tmp_path):
    manifest = save_bundle(fitted, tmp_path / "b", calibration=Calibration(t_review=1.0, t_ng=2.0))
    for key in ("format_version", "detector", "params", "packages", "backbone", "created", "calibration", "files"):
        assert key in manifest
    assert manifest["backbone"]["name"] == "efficientnet_lite0" and len(manifest["backbone"]["weights_sha256"]) == 64
    assert "numpy" in manifest["packages"] and "torch" in manifest["packages"]
    assert set(manifest["files"]) == {"state.npz", "bank.faiss"}


V1 = Path(__file__).parent / "data" / "bundle_v1"
#: What the format-1 step drops from each committed bundle's parameters (the behaviour kept).
V1_DROPPED = {
    "patchcore": {"grid_origin": "layer", "coarse_sampling": "linear", "refine_cells": 8, "coarse_bank_size": 1024},
    "padim": {"grid_origin": "layer", "coarse_sampling": "nearest"},
    "difference": {},
}


def _v1_images(name: str) -> list[np.ndarray]:
    images = [as_image(str(V1 / f)) for f in ("good.png", "scratch.png")]
    return [i[::2, ::2].copy() for i in images] if name == "difference" else images


@pytest.mark.parametrize("name", sorted(V1_DROPPED))
def test_format_1_bundle_loads_migrated_and_scores_the_same(name):
    # Written by the format-1 code (tests/data/bundle_v1/README.md); its scores then are stored beside it.
    expected = json.loads((V1 / "expected.json").read_text())[name]
    stored = json.loads((V1 / name / "manifest.json").read_text())
    assert stored["format_version"] == 1 and stored["params"] == expected["params"]
    bundle = load_bundle(V1 / name)
    assert bundle.manifest["format_version"] == FORMAT_VERSION == 3
    # Through format 2 (options dropped) to 3 (PatchCore's tiling options, which it did not use, filled).
    tiling = {"tile_overlap": 32, "tile_scale": 1.0} if name == "patchcore" else {}
    assert bundle.manifest["migration"] == {"from_format_version": 1, "filled": tiling, "dropped": V1_DROPPED[name],
                                            "removed": {}}
    kept = {**{k: v for k, v in expected["params"].items() if k not in V1_DROPPED[name]}, **tiling}
    assert bundle.detector.get_params() == bundle.manifest["params"] == kept
    # float32 scores: the BLAS kernels a CPU picks (AVX2, AVX-512) round differently, by about 1e-6 of the score
    # (PaDiM's Mahalanobis sums differed by 1.5e-6 on this machine); a changed model moves them by far more.
    np.testing.assert_allclose(bundle.detector.score(_v1_images(name)).scores, expected["scores"], rtol=1e-5, atol=1e-6)


def test_migration_fills_the_values_old_bundles_were_fitted_with():
    old = json.loads((V1 / "patchcore" / "manifest.json").read_text())
    del old["params"]["grid_stride"], old["params"]["channels_per_layer"]  # from before those options
    new = migrate_manifest(old)
    assert new["params"]["grid_stride"] is None  # the finest grid: "auto" came later
    assert new["params"]["channels_per_layer"] is None
    assert new["migration"]["filled"] == {"grid_stride": None, "channels_per_layer": None, "tile_overlap": 32,
                                          "tile_scale": 1.0}
    assert "grid_origin" not in new["state"] and "grid_stride" not in old["params"]  # a copy; the input is kept
    assert migrate_manifest(new) is new


@pytest.mark.parametrize("name, edit, removed", [
    ("patchcore", lambda m: m["state"].update(grid_origin="input"), {"grid_origin": "input"}),
    ("patchcore", lambda m: m["state"].pop("grid_origin"), {"grid_origin": "input"}),  # from before the option
    ("padim", lambda m: m["state"].update(coarse_sampling="linear"), {"coarse_sampling": "linear"}),
    ("padim", lambda m: m["state"].pop("coarse_sampling"), {"coarse_sampling": "linear"}),  # from before it
    ("patchcore", lambda m: m["params"].update(refine_cells=64), {"refine_cells": 64}),
])
def test_format_1_bundle_fitted_with_a_removed_behaviour_is_refused(name, edit, removed, tmp_path):
    # Its manifest still reads (listing, inspection); loading the model says to retrain it.
    shutil.copytree(V1 / name, tmp_path / name)
    path = tmp_path / name / "manifest.json"
    old = json.loads(path.read_text())
    edit(old)
    del old["sha256"]
    path.write_text(json.dumps(old))
    assert read_manifest(tmp_path / name)["migration"]["removed"] == removed
    key, value = next(iter(removed.items()))
    with pytest.raises(BundleError, match=f"{key}={value!r}.*retrain"):
        load_bundle(tmp_path / name)


def _as_format_1(directory, params: dict, state: dict) -> None:
    """Rewrite a bundle's manifest as the format-1 code wrote it (its own hash left out)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["params"].update(params)
    manifest["state"].update(state)
    del manifest["sha256"]
    path.write_text(json.dumps({**manifest, "format_version": 1}))


def test_format_1_patchcore_without_the_refining_bank_loads_only_on_the_finest_grid(fitted, good_parts, tmp_path):
    grid_v1 = {"grid_origin": "layer", "coarse_sampling": "linear"}
    save_bundle(fitted, tmp_path / "finest")  # 64 px: the finest grid, nothing to refine
    _as_format_1(tmp_path / "finest", {**grid_v1, "refine_cells": 8, "coarse_bank_size": 1024}, grid_v1)
    loaded = load_bundle(tmp_path / "finest").detector
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.score(good_parts[:2]).scores, fitted.score(good_parts[:2]).scores)
    # A 16 px grid scored without refinement (refine_cells=0, or from before it): that scoring is gone.
    coarse = create_detector("patchcore", {"image_size": 128, "grid_stride": 16})
    coarse.refine_cells = 0
    save_bundle(coarse.fit(good_parts[:3]), tmp_path / "coarse")
    _as_format_1(tmp_path / "coarse", {**grid_v1, "refine_cells": 0}, grid_v1)
    with pytest.raises(BundleError, match="finest-grid bank.*retrain"):
        load_bundle(tmp_path / "coarse")


def test_loading_never_stands_a_default_in_for_a_recorded_parameter(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["params"]["coreset_ratio"], manifest["sha256"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks parameter.*coreset_ratio"):
        load_bundle(tmp_path / "b")


def test_tampered_file_refused(fitted, tmp_path):
    save_bundle(fitted, tmp_path / "b")
    with open(tmp_path / "b" / "state.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "b")


def test_edited_calibration_refused_like_an_edited_file(fitted, tmp_path):
    # Thresholds set by hand in manifest.json would turn every broken part GOOD.
    save_bundle(fitted, tmp_path / "b", calibration=Calibration(t_ng=2.0, t_review=1.5))
    assert load_bundle(tmp_path / "b").calibration.t_ng == 2.0
    path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(path.read_text())
    original = dict(manifest["calibration"])
    manifest["calibration"]["t_ng"] = manifest["calibration"]["t_review"] = 1e9
    path.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError, match="changed after the bundle was written"):
        load_bundle(tmp_path / "b")
    path.write_text(json.dumps({**manifest, "calibration": original}, indent=4))
    assert load_bundle(tmp_path / "b").calibration.t_ng == 2.0  # the same content, laid out anew


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


def test_format_2_patchcore_loads_with_the_tiling_defaults(fitted, good_parts, tmp_path):
    # A format-2 PatchCore did not tile: its manifest lacks the tiling options, which are filled.
    save_bundle(fitted, tmp_path / "v2")
    path = tmp_path / "v2" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["params"]["tile_overlap"], manifest["params"]["tile_scale"], manifest["sha256"]
    path.write_text(json.dumps({**manifest, "format_version": 2}))
    loaded = load_bundle(tmp_path / "v2")
    assert loaded.manifest["migration"] == {"from_format_version": 2, "dropped": {}, "removed": {},
                                            "filled": {"tile_overlap": 32, "tile_scale": 1.0}}
    assert loaded.detector.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.detector.score(good_parts[:2]).scores, fitted.score(good_parts[:2]).scores)
