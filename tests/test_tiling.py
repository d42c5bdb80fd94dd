"""Tiling at native resolution: layouts, stitching in original coordinates, and a tiled PatchCore
that puts a pasted defect where it is."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.detectors.registry import create_detector
from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.tiling import MAX_TILES, Tiling, tile_origins


@pytest.mark.parametrize("length, tile, overlap", [(256, 256, 32), (100, 256, 32), (1024, 256, 32),
                                                   (1130, 256, 0), (460, 256, 64), (257, 256, 32)])
def test_origins_cover_the_axis_with_at_least_the_asked_overlap(length, tile, overlap):
    starts = tile_origins(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    gaps = np.diff(starts)
    assert np.all(gaps <= tile - overlap) and np.all(gaps > 0)


def test_a_known_coordinate_map_stitches_back_to_itself():
    # Each tile's map is the canvas's own x + 1000 y at its pixels, so the blend of the
    # overlaps is that value too, and the stitched map, taken back through scale and ROI,
    # is x + 1000 y of the scaled ROI resized to the ROI: the map lands in original coordinates.
    tiling = Tiling((64, 64), overlap=16, scale=0.5, roi=(40, 20, 300, 200))
    layout = tiling.layout((260, 400))
    assert layout.roi == (40, 20, 300, 200) and layout.scaled == (100, 150)
    assert len(layout) == 2 * 3
    stitcher = tiling.stitcher(layout)
    yy, xx = np.mgrid[0 : layout.canvas[0], 0 : layout.canvas[1]].astype(np.float32)
    canvas = xx + 1000 * yy
    for index, (r, c) in enumerate(layout.origins):
        stitcher.add(index, canvas[r : r + 64, c : c + 64])
    full = stitcher.result()
    assert full.shape == (260, 400)
    # Original pixel (y, x) in the ROI maps to scaled (0.5 (y - 20), 0.5 (x - 40)), within a pixel.
    for y, x in [(20, 40), (119, 339), (70, 190), (200, 300)]:
        expected = 0.5 * (x - 40) + 1000 * 0.5 * (y - 20)
        assert abs(full[y, x] - expected) <= 1000 * 0.75 + 0.75
    assert full[0, 0] == full.min()  # outside the ROI: the map's minimum


def test_cut_gives_canvas_crops_and_pads_a_short_side():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 300, 3), dtype=np.uint8)
    tiles, layout = Tiling((64, 128), overlap=32).cut(image)
    assert layout.canvas == (64, 300) and layout.scaled == (50, 300)
    assert [t.shape for t in tiles] == [(64, 128, 3)] * len(layout)
    np.testing.assert_array_equal(tiles[0][:50, :128], image[:, :128])
    np.testing.assert_array_equal(tiles[0][50:, :128], np.repeat(image[-1:, :128], 14, axis=0))  # replicated
    np.testing.assert_array_equal(tiles[-1][:50], image[:, -128:])


def test_too_many_tiles_and_bad_settings_are_refused():
    with pytest.raises(InvalidImageError, match="tiles"):
        Tiling((32, 32), overlap=0).layout((32 * 21, 32 * 20))  # 420 > MAX_TILES
    assert MAX_TILES < 420
    with pytest.raises(InvalidParameterError, match="tile_overlap"):
        Tiling((64, 64), overlap=40)
    with pytest.raises(InvalidParameterError, match="tile_scale"):
        Tiling((64, 64), scale=0.0)
    with pytest.raises(InvalidImageError, match="ROI"):
        Tiling((64, 64), roi=(500, 0, 10, 10)).layout((100, 100))


def test_padim_cannot_tile():
    with pytest.raises(InvalidParameterError, match="cannot tile"):
        create_detector("padim", {"resize": "tile"}).check_params()


def _plate(rng: np.random.Generator, shape=(240, 400)) -> np.ndarray:
    """A large frame of fine, even texture: a small defect is a few pixels once squeezed to 64 px."""
    base = 128 + rng.normal(0, 5, shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def test_tiled_patchcore_puts_a_small_pasted_defect_at_its_place():
    rng = np.random.default_rng(3)
    goods = [_plate(rng) for _ in range(4)]
    part = _plate(rng)
    part[150:162, 310:322] = 20  # 12 px dark spot at a known place, in original coordinates
    tiled = create_detector("patchcore", {"image_size": 64, "resize": "tile", "tile_overlap": 16,
                                          "batch_size": 16}).fit(goods)
    squeezed = create_detector("patchcore", {"image_size": 64, "batch_size": 16}).fit(goods)
    clean = _plate(rng)
    result = tiled.score([clean, part])
    amap = result.maps[1]
    assert amap.shape == part.shape
    y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
    assert 150 - 8 <= y < 162 + 8 and 310 - 8 <= x < 322 + 8, (y, x)
    # Tiled at native resolution the spot stands out far more than in the squeezed input.
    tiled_margin = result.scores[1] / result.scores[0]
    squeezed_scores = squeezed.score([clean, part]).scores
    assert tiled_margin > 1.5
    assert tiled_margin > squeezed_scores[1] / squeezed_scores[0]
