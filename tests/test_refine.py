"""PatchCore's coarse-to-fine image score (``refine_cells``): the grid's top cells searched
again on the finest grid, against a bank of fine patches.

``refine_cells`` and ``coarse_bank_size`` are fixed choices (class constants), not
parameters; tests set them on one detector to compare with other values."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.bundle import load_bundle, save_bundle
from anomaly.detectors.patchcore import PatchCore, fine_owner
from anomaly.detectors.registry import create_detector
from anomaly.errors import InvalidParameterError
from anomaly.features.patches import aggregate_cells

# 128 px input, 16 px grid (8 x 8 cells) refined on the 8 px grid (16 x 16 cells).
COARSE = {"image_size": 128, "grid_stride": 16, "batch_size": 8}


def _patchcore(params: dict, **fixed) -> PatchCore:
    """A PatchCore with some of its fixed choices set otherwise on this one detector."""
    det = create_detector("patchcore", params)
    for key, value in fixed.items():
        setattr(det, key, value)
    return det


def _textured(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Plain noisy plates: every 16 px cell looks alike, so only a defect stands out."""
    return [np.clip(rng.normal(120, 12, (128, 128)), 0, 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def plates():
    rng = np.random.default_rng(3)
    goods = _textured(rng, 8)
    tests = _textured(rng, 4)
    bad = []
    for k, (y, x) in enumerate([(20, 20), (70, 90), (100, 36), (44, 100)]):
        img = tests[k].copy()
        img[y:y + 5, x:x + 5] = 255  # a 5 px spot, a tenth of a 16 px cell's area
        bad.append(img)
    return goods, tests, bad


@pytest.fixture(scope="module")
def models(plates):
    goods, _, _ = plates
    return {
        "refined": create_detector("patchcore", COARSE).fit(goods),
        "all cells": _patchcore(COARSE, refine_cells=64).fit(goods),
        "grid only": _patchcore(COARSE, refine_cells=0).fit(goods),
        "finest": create_detector("patchcore", {**COARSE, "grid_stride": None}).fit(goods),
    }


def test_refining_every_cell_is_the_finest_grid_score(models, plates):
    # Every fine cell is searched: the score is exactly the finest-grid model's (its bank
    # is the same selection from the same patches).
    _, tests, bad = plates
    np.testing.assert_array_equal(models["all cells"].fine_bank_, models["finest"].memory_bank_)
    np.testing.assert_allclose(models["all cells"].score(tests + bad).scores,
                               models["finest"].score(tests + bad).scores, rtol=1e-5)


def test_a_pasted_spot_is_found_by_refining_the_top_cells(models, plates):
    # The spot lifts its 16 px cell into the top eight, so the refined score equals what a
    # search of the whole finest grid gives, and every spotted plate outscores every good one.
    _, tests, bad = plates
    refined = models["refined"].score(tests + bad).scores
    finest = models["finest"].score(bad).scores
    np.testing.assert_allclose(refined[len(tests):], finest, rtol=1e-5)
    assert refined[len(tests):].min() > refined[: len(tests)].max()


def test_refinement_changes_the_score_not_the_map(models, plates):
    _, tests, bad = plates
    with_refine = models["refined"].score(bad[:2])
    without = models["grid only"].score(bad[:2])
    for a, b in zip(with_refine.maps, without.maps):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(with_refine.scores, without.scores)
    assert models["grid only"].fine_stride is None and models["grid only"].fine_bank_ is None
    meta = models["refined"].training_meta()
    assert meta["fine_grid_shape"] == [16, 16] and meta["fine_bank_size"] == models["refined"].fine_bank_.shape[0]
    assert "fine_bank_size" not in models["grid only"].training_meta()


def test_aggregating_a_few_cells_gives_those_cells_of_the_whole_grid(models, plates):
    det = models["refined"]
    layers, _ = det._layers(plates[2][:2])
    whole = det._aggregate(layers, 8).permute(0, 2, 3, 1).reshape(2, 256, -1).numpy()
    cells = [np.array([0, 17, 255]), np.array([5, 100])]
    ext = det.extractor
    some = aggregate_cells(layers, ext.reductions, ext.offsets, cells, patch_size=3, out_stride=8, grid=(16, 16),
                           origin=det.origin_for(8))
    for i in range(2):
        np.testing.assert_allclose(some[i], whole[i, cells[i]], rtol=1e-6, atol=1e-6)


def test_the_finest_grid_needs_no_refinement(models):
    assert models["finest"].fine_stride is None and models["finest"].fine_bank_ is None
    # "auto" keeps the finest grid on a 64 px input, so nothing to refine there either.
    small = create_detector("patchcore", {"image_size": 64})
    assert small.feature_stride == 8 and small.fine_stride is None


def test_each_fine_cell_belongs_to_the_nearest_grid_cell(models):
    det = models["refined"]
    (oy, ox), (fy, fx) = det.feature_origin, det.origin_for(8)
    owner = fine_owner((8, 8), 16, (oy, ox), (16, 16), 8, (fy, fx))
    coarse_y, coarse_x = 16 * np.arange(8) + oy, 16 * np.arange(8) + ox
    for i in range(16):
        for j in range(16):
            cy, cx = 8 * i + fy, 8 * j + fx
            d = (coarse_y[:, None] - cy) ** 2 + (coarse_x[None, :] - cx) ** 2
            assert d.reshape(-1)[owner[i * 16 + j]] == d.min()
    # Each grid cell owns some of the finest cells (about four).
    assert np.bincount(owner, minlength=64).min() >= 1


def test_refined_bundle_round_trip(models, plates, tmp_path):
    _, tests, bad = plates
    det = models["refined"]
    manifest = save_bundle(det, tmp_path / "b")
    assert {"fine_bank.faiss", "state.npz", "bank.faiss"} <= set(manifest["files"])
    loaded = load_bundle(tmp_path / "b").detector
    assert loaded.refine_cells == 8
    np.testing.assert_allclose(loaded.score(tests + bad).scores, det.score(tests + bad).scores, rtol=1e-6)


@pytest.mark.parametrize("option", ["refine_cells", "coarse_bank_size", "grid_origin", "coarse_sampling"])
def test_fixed_choices_are_not_parameters(option):
    # Options of bundle format 1 that no default needed otherwise (format-1 bundles: test_bundle_store).
    with pytest.raises(InvalidParameterError, match=f"{option}.*it takes"):
        create_detector("patchcore", {**COARSE, option: 8})


def test_the_grid_bank_of_a_refined_score_has_its_own_cap(plates):
    goods = plates[0]
    params = {**COARSE, "coreset_ratio": 1.0, "max_bank_size": 300}
    det = _patchcore(params, coarse_bank_size=100).fit(goods)
    assert det.memory_bank_.shape[0] == 100 and det.fine_bank_.shape[0] == 300
    # Without refinement the one bank keeps max_bank_size.
    plain = _patchcore(params, coarse_bank_size=100, refine_cells=0).fit(goods)
    assert plain.memory_bank_.shape[0] == 300 and plain.fine_bank_ is None
