"""A model refuses images unlike its training images: built-in sizes, aspect ratios and colours."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.accepted_input import AcceptedInput, InputGeometryError


@pytest.fixture
def colour_900() -> AcceptedInput:
    return AcceptedInput.of([np.zeros((900, 900, 3), np.uint8) + np.array([10, 20, 30], np.uint8),
                             np.zeros((880, 910, 3), np.uint8) + np.array([5, 9, 7], np.uint8)])


def test_geometry_of_the_training_images_round_trips(colour_900):
    assert colour_900.height == (880, 900) and colour_900.width == (900, 910) and not colour_900.gray
    assert AcceptedInput.from_dict(colour_900.to_dict()) == colour_900


@pytest.mark.parametrize("shape", [(900, 900, 3), (450, 460, 3), (1800, 1800, 3), (1000, 1100, 3)])
def test_images_within_the_tolerances_pass(colour_900, shape):
    colour_900.check(np.dstack([np.full(shape[:2], v, np.uint8) for v in (1, 2, 3)]))


@pytest.mark.parametrize("shape, words", [((1, 1, 3), "height"), ((1, 10000, 3), "height"),
                                          ((439, 439, 3), "height"), ((1801, 1801, 3), "height"),
                                          ((900, 1400, 3), "aspect"), ((900, 900), "gray image")])
def test_images_unlike_the_training_images_are_refused(colour_900, shape, words):
    image = np.ones(shape, np.uint8)
    if image.ndim == 3:
        image[..., 0] = 7
    with pytest.raises(InputGeometryError, match=words) as info:
        colour_900.check(image)
    assert info.value.http_status == 422


def test_gray_model_takes_gray_stored_as_rgb_and_refuses_colour():
    gray = AcceptedInput.of([np.full((64, 64), 9, np.uint8)] * 2)
    gray.check(np.full((64, 64, 3), 5, np.uint8))  # three equal channels: a gray file saved as RGB
    colour = np.full((64, 64, 3), 5, np.uint8)
    colour[..., 2] = 6
    with pytest.raises(InputGeometryError, match="colour image"):
        gray.check(colour)
