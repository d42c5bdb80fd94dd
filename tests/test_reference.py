"""Reference mode: an image against its own golden image, through a tolerance band."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alignment.reference import compare_to_reference, find_regions, tolerance_band_deviation
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError
from anomaly.imageio import encode_png

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DEEPPCB = DATASETS / "deeppcb" / "pcb"


def circuit(size: int = 256) -> np.ndarray:
    """A binarised PCB-like reference: dark copper traces and pads on white."""
    img = np.full((size, size), 250, np.uint8)
    for i, x in enumerate(range(30, size - 20, 28)):
        cv2.line(img, (x, 20), (x, size - 60 - 10 * (i % 3)), 8, 7)
        cv2.circle(img, (x, size - 60 - 10 * (i % 3)), 9, 8, -1)
    cv2.line(img, (20, size - 25), (size - 20, size - 25), 8, 9)
    cv2.rectangle(img, (90, 200), (150, 215), 8, -1)
    return img


def shifted(image: np.ndarray, dx: float, dy: float, angle: float = 0.0) -> np.ndarray:
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def noisy(image: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair():
    reference = circuit()
    test = circuit()
    test[100:112, 37:53] = 8  # short between the first two traces (x = 30 and 58)
    test[60:72, 84:95] = 250  # open: a gap cut through the trace at x = 86
    image = noisy(shifted(test, 2.4, -1.6, angle=0.4))
    return reference, image


def test_defects_are_found_and_nothing_else(pair):
    reference, image = pair
    result = compare_to_reference(image, reference)
    assert result.map.shape == image.shape and result.map.dtype == np.float32
    assert len(result.regions) == 2, result.regions
    found = {r.polarity: r for r in result.regions}
    # The short is extra copper (dark), the open missing copper (bright), both moved by ~(2.4, -1.6).
    assert abs(found["dark"].centroid[0] - 47.4) < 4 and abs(found["dark"].centroid[1] - 104.4) < 4
    assert abs(found["bright"].centroid[0] - 91.9) < 4 and abs(found["bright"].centroid[1] - 64.4) < 4
    assert result.quality > 0.95


def test_edges_stay_quiet_thanks_to_the_band():
    reference = circuit()
    image = noisy(shifted(circuit(), 1.0, 0.0))
    # Not registered on purpose: a one-pixel offset lights every edge without a band ...
    bare = compare_to_reference(image, reference, motion="none", tolerance_px=0, open_px=0, min_area=5)
    assert len(bare.regions) > 5
    # ... and none with a one-pixel band.
    banded = compare_to_reference(image, reference, motion="none", tolerance_px=1)
    assert banded.regions == []


def test_band_deviation_is_signed_and_zero_inside_the_band():
    reference = np.zeros((20, 20), np.float32)
    reference[:, 10:] = 1.0
    image = reference.copy()
    image[:, 9] = 1.0  # the edge moved by one pixel: inside a one-pixel band
    image[5, 2] = 0.8  # a bright speck in the dark half
    image[15, 15] = 0.1  # a dark speck in the bright half
    dev = tolerance_band_deviation(image, reference, tolerance_px=1)
    assert dev[:, 9].max() == 0.0
    assert dev[5, 2] == pytest.approx(0.8) and dev[15, 15] == pytest.approx(-0.9)


def test_find_regions_filters_small_and_thin_ones():
    signed = np.zeros((40, 40), np.float32)
    signed[5:15, 5:15] = 3.0
    signed[30, 5:35] = -3.0  # one pixel thin: an edge seam
    signed[20, 20] = 5.0
    regions = find_regions(signed, threshold=1.0, min_area=4, open_px=1)
    assert [(r.x, r.y, r.width, r.height, r.polarity) for r in regions] == [(5, 5, 10, 10, "bright")]
    assert len(find_regions(signed, threshold=1.0, min_area=1, open_px=0)) == 3


def test_accepts_paths_bytes_and_a_colour_image(pair, tmp_path):
    reference, image = pair
    path = tmp_path / "ref.png"
    path.write_bytes(encode_png(reference))
    result = compare_to_reference(np.stack([image] * 3, axis=2), str(path))
    assert len(result.regions) == 2


def test_bad_input_raises_typed_errors(pair):
    reference, image = pair
    with pytest.raises(InvalidImageError, match="256 x 256"):
        compare_to_reference(image[:200], reference)
    with pytest.raises(InvalidImageError, match="blank"):
        compare_to_reference(np.zeros_like(image), reference)
    with pytest.raises(InvalidImageError, match="saturated|uniform"):
        compare_to_reference(np.full_like(image, 255), reference)
    with pytest.raises(InvalidImageError):
        compare_to_reference(b"not an image", reference)
    with pytest.raises(InvalidParameterError):
        compare_to_reference(image, reference, tolerance_px=-1)
    with pytest.raises(InvalidParameterError):
        compare_to_reference(image, reference, motion="elastic")


def test_another_board_is_not_aligned_silently(pair):
    reference, _ = pair
    rng = np.random.default_rng(3)
    other = np.where(cv2.GaussianBlur(rng.random((256, 256)), (0, 0), 6) > 0.5, 250, 8).astype(np.uint8)
    with pytest.raises(AlignmentError):
        compare_to_reference(other, reference, min_quality=0.8)


@pytest.mark.skipif(not DEEPPCB.is_dir(), reason="needs ../shared/datasets/deeppcb")
def test_deeppcb_pairs_in_reference_mode():
    tests = sorted((DEEPPCB / "test" / "combined").glob("*_test.jpg"))[::75]
    hit = boxes = false = 0
    for path in tests:
        reference = DEEPPCB / "test" / "good" / path.name.replace("_test", "_temp")
        mask = cv2.imread(str(DEEPPCB / "ground_truth" / "combined" / f"{path.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
        count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8))
        result = compare_to_reference(str(path), str(reference))
        seen = set()
        for region in result.regions:
            box = labels[region.y : region.y + region.height, region.x : region.x + region.width]
            ids = set(np.unique(box[np.abs(result.signed[region.y : region.y + region.height,
                                                         region.x : region.x + region.width]) > 1])) - {0}
            seen |= ids
            false += not ids
        hit += len(seen)
        boxes += count - 1
    assert hit / boxes >= 0.95 and false / len(tests) <= 1.0, (hit, boxes, false)
