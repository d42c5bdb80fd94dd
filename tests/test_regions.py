"""Region measures on drawn shapes, whose right answers are known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.regions import find_regions, region_mask


def blank(shape=(200, 240)) -> np.ndarray:
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("vertical", [False, True])
def test_a_100_by_3_line_has_length_100_and_width_3(vertical):
    amap = blank()
    if vertical:
        amap[40:140, 60:63] = 1.0
    else:
        amap[60:63, 40:140] = 1.0
    (r,) = find_regions(amap, 0.5)
    assert r.length_px == pytest.approx(100.0) and r.width_px == pytest.approx(3.0)
    assert r.area_px == 300
    assert abs(r.angle_deg) == pytest.approx(90.0 if vertical else 0.0)
    assert (r.w, r.h) == ((3, 100) if vertical else (100, 3))


def test_a_diagonal_line_measures_its_length_and_angle():
    amap = blank().astype(np.uint8)
    cv2.line(amap, (20, 20), (120, 120), 1, 3)
    (r,) = find_regions(amap.astype(np.float32), 0.5)
    assert r.length_px == pytest.approx(100 * np.sqrt(2), rel=0.05)
    assert r.width_px < 6
    assert abs(abs(r.angle_deg) - 45) < 2


def test_a_disc_has_its_area_and_diameter():
    amap = blank().astype(np.uint8)
    cv2.circle(amap, (100, 100), 30, 1, -1)
    (r,) = find_regions(amap.astype(np.float32), 0.5)
    assert r.area_px == int(amap.sum())
    assert r.area_px == pytest.approx(np.pi * 30**2, rel=0.01)
    assert r.length_px == pytest.approx(61, abs=1.5) and r.width_px == pytest.approx(61, abs=1.5)
    assert r.centroid_x == pytest.approx(100) and r.centroid_y == pytest.approx(100)


def test_millimetres_from_the_pixel_size():
    amap = blank()
    amap[60:63, 40:140] = 1.0
    (r,) = find_regions(amap, 0.5, pixel_size_mm=0.02)
    assert r.length_mm == pytest.approx(2.0) and r.width_mm == pytest.approx(0.06)
    assert r.area_mm2 == pytest.approx(300 * 0.02**2)
    with pytest.raises(InvalidParameterError):
        find_regions(amap, 0.5, pixel_size_mm=0)


def test_scores_min_area_and_order():
    amap = blank()
    amap[10:20, 10:20] = 2.0  # 100 px, max 2
    amap[15, 15] = 3.0
    amap[100:130, 100:130] = 1.0  # 900 px, max 1
    amap[180, 200] = 5.0  # one pixel: noise
    regions = find_regions(amap, 0.5, min_area=10)
    assert [r.area_px for r in regions] == [100, 900]
    assert regions[0].max_score == 3.0 and (regions[0].peak_x, regions[0].peak_y) == (15, 15)
    assert regions[0].mean_score == pytest.approx((99 * 2 + 3) / 100)
    assert len(find_regions(amap, 0.5, min_area=1)) == 3
    assert find_regions(amap, 10.0) == []
    assert len(find_regions(amap, 0.5, min_area=1, max_regions=1)) == 1
    mask = region_mask(amap, 0.5, min_area=10)
    assert mask.sum() == 1000 and not mask[180, 200]


def test_contrast_and_polarity_against_local_background_and_reference():
    image = np.full((200, 240), 100, np.uint8)
    image[60:63, 40:140] = 160  # bright scratch
    image[150:170, 150:170] = 40  # dark spot
    amap = blank()
    amap[60:63, 40:140] = 1.0
    amap[150:170, 150:170] = 1.0
    by_area = sorted(find_regions(amap, 0.5, image=image), key=lambda r: r.area_px)
    assert by_area[0].polarity == "brighter" and by_area[0].contrast == pytest.approx(60)
    assert by_area[1].polarity == "darker" and by_area[1].contrast == pytest.approx(-60)
    reference = np.full_like(image, 90)
    rgb = np.stack([image] * 3, axis=2)
    by_area = sorted(find_regions(amap, 0.5, image=rgb, reference=reference), key=lambda r: r.area_px)
    assert by_area[0].contrast == pytest.approx(70, abs=0.5) and by_area[1].contrast == pytest.approx(-50, abs=0.5)


def test_to_dict_and_shape_errors():
    amap = blank()
    amap[60:63, 40:140] = 1.0
    d = find_regions(amap, 0.5)[0].to_dict()
    assert d["bbox"] == [40, 60, 100, 3] and d["length_px"] == 100 and d["contrast"] is None
    with pytest.raises(InvalidImageError):
        find_regions(amap[None], 0.5)
    with pytest.raises(InvalidImageError):
        find_regions(amap, 0.5, image=np.zeros((10, 10), np.uint8))


def test_contrast_background_is_the_euclidean_ring_around_the_region():
    # Built-in answer: the background is every pixel below the threshold within `ring` pixels
    # (Euclidean, centre to centre) of the region, found here by brute force over all pairs.
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (60, 70)).astype(np.uint8)
    amap = np.zeros((60, 70), np.float32)
    amap[25:33, 30:41] = 1.0
    amap[27, 41:44] = 1.0  # not a rectangle
    amap[5:8, 5:8] = 1.0  # another region: above the threshold, so never background
    region = max(find_regions(amap, 0.5, image=image, min_area=1), key=lambda r: r.area_px)
    inside = np.zeros_like(amap, bool)
    inside[25:33, 30:41] = True
    inside[27, 41:44] = True
    ring = max(3, int(round(0.5 * np.sqrt(region.w * region.h))))
    yy, xx = np.mgrid[:60, :70]
    iy, ix = np.nonzero(inside)
    nearest = np.sqrt((yy[..., None] - iy) ** 2 + (xx[..., None] - ix) ** 2).min(axis=2)
    background = (nearest <= ring) & (amap < 0.5)
    expected = image[inside].mean() - np.median(image[background])
    assert region.contrast == pytest.approx(expected, abs=1e-4)  # the image is taken as float32


def test_contrast_of_a_region_filling_most_of_a_large_image():
    # A region as large as a broken part on a 1800 px frame: measured like a small one.
    image = np.full((1800, 1800), 100, np.uint8)
    image[300:1500, 200:1600] = 40
    amap = np.zeros((1800, 1800), np.float32)
    amap[300:1500, 200:1600] = 1.0
    (region,) = find_regions(amap, 0.5, image=image)
    assert region.area_px == 1200 * 1400 and region.polarity == "darker" and region.contrast == pytest.approx(-60)
