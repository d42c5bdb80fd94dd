"""Input geometry: ROI, stretch and letterbox, and maps back in original coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anomaly.errors import InvalidImageError, InvalidParameterError
from anomaly.geometry import Geometry, resize_image


def test_stretch_round_trip_keeps_a_blob_in_place():
    geo = Geometry(size=(64, 64))
    image = np.zeros((200, 300), np.float32)
    resized, placement = geo.forward(image)
    assert resized.shape == (64, 64)
    model_map = np.zeros((64, 64), np.float32)
    model_map[32, 16] = 1.0  # model pixel -> original (100, 75) roughly
    back = geo.backward(model_map, placement)
    assert back.shape == (200, 300)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(y - 101) <= 3 and abs(x - 76) <= 4


def test_letterbox_keeps_aspect_and_maps_back():
    geo = Geometry(size=(64, 64), resize="letterbox")
    strip = np.zeros((100, 400, 3), np.uint8)  # a long part
    resized, placement = geo.forward(strip)
    assert resized.shape == (64, 64, 3)
    cx, cy, cw, ch = placement.content
    assert (cw, ch) == (64, 16) and cy == 24
    model_map = np.zeros((64, 64), np.float32)
    model_map[cy + 8, 48] = 1.0
    back = geo.backward(model_map, placement)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(y - 50) <= 4 and abs(x - 300) <= 5


def test_feature_grid_map_is_upsampled_first():
    geo = Geometry(size=(64, 64))
    _, placement = geo.forward(np.zeros((128, 128), np.uint8))
    grid = np.zeros((8, 8), np.float32)
    grid[2, 6] = 1.0
    back = geo.backward(grid, placement)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(y - 40) <= 8 and abs(x - 104) <= 8


def test_roi_crop_and_fill_outside():
    geo = Geometry(size=(32, 32), roi=(10, 20, 50, 40))
    image = np.zeros((100, 100), np.uint8)
    image[20:60, 10:60] = 255
    resized, placement = geo.forward(image)
    assert resized.min() == 255  # only the ROI is seen
    back = geo.backward(np.ones((32, 32), np.float32), placement, fill=-1.0)
    assert back[0, 0] == -1.0 and back[30, 30] == 1.0


def test_roi_outside_image_is_an_image_error():
    with pytest.raises(InvalidImageError):
        Geometry(size=(32, 32), roi=(500, 500, 10, 10)).forward(np.zeros((100, 100), np.uint8))


@pytest.mark.parametrize("kwargs", [{"size": (8, 8)}, {"resize": "squash"}, {"roi": (0, 0, 0, 5)}])
def test_bad_parameters(kwargs):
    with pytest.raises(InvalidParameterError):
        Geometry(**kwargs)


def test_resize_image_shrinks_by_a_fraction_through_a_whole_factor():
    # 640 -> 256 is area averaging by 2 (to 320), then bilinear by 1.25.
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (640, 640, 3), dtype=np.uint8), (0, 0), 2.0)
    out = resize_image(image, 256, 256)
    two_step = cv2.resize(cv2.resize(image, (320, 320), interpolation=cv2.INTER_AREA), (256, 256),
                          interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, two_step)
    # ... which stays close to OpenCV's exact area average on a smooth image.
    exact = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(out.astype(float) - exact).mean() < 1.0


@pytest.mark.parametrize("shape, size", [((512, 512), (256, 256)), ((641, 640), (256, 256)), ((100, 301), (256, 64))])
def test_resize_image_uses_the_plain_area_average_where_it_is_fast_or_needed(shape, size):
    # Whole factors (fast in OpenCV), sizes no whole factor divides, and mixed up/down scaling.
    image = np.random.default_rng(1).integers(0, 65536, shape, dtype=np.uint16)
    out = resize_image(image, size[1], size[0])
    np.testing.assert_array_equal(out, cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA))


def test_resize_image_enlarges_bilinearly():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(resize_image(image, 8, 8), cv2.resize(image, (8, 8), interpolation=cv2.INTER_LINEAR))
