"""Per-pixel GMM: EM recovers known modes; a bimodal region where the difference model cannot cope."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alignment.difference import DifferenceModel
from alignment.gmm import PixelGMM, fit_pixel_mixtures
from anomaly.demo.assembly import LAYOUT, render_layout
from anomaly.errors import InvalidParameterError

SIZE = 128
RED = (205, 35, 35)  # luminance about 86
BLUE = (80, 160, 230)  # luminance about 144: the other legitimate variant
AMBER = (150, 110, 60)  # luminance about 116: the wrong part, between the two
D1 = [c.name for c in LAYOUT].index("D1")


def board(seed: int, color: tuple[int, int, int] | None) -> np.ndarray:
    """A gray board whose LED D1 has body ``color`` (``None``: D1 not placed)."""
    layout = list(LAYOUT)
    part = layout[D1]
    layout[D1] = replace(part, colors=(color, part.colors[1])) if color else replace(part, present=False)
    rgb = render_layout(SIZE, tuple(layout), np.random.default_rng([11, seed]), noise=1.0)
    return (rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)


def d1_mask(seed: int) -> np.ndarray:
    """Where D1 is on board ``seed``: the pixels its presence changes."""
    return np.abs(board(seed, RED).astype(int) - board(seed, None).astype(int)) > 8


@pytest.fixture(scope="module")
def bimodal():
    # Two legitimate variants of D1, 2 : 1 as they come off the line.
    goods = [board(i, BLUE if i % 3 == 2 else RED) for i in range(24)]
    tests = [(board(100 + i, RED if i < 3 else BLUE), d1_mask(100 + i)) for i in range(6)]
    wrong = [(board(200 + i, AMBER), d1_mask(200 + i)) for i in range(3)]
    return goods, tests, wrong


def region_peak(detector, items) -> np.ndarray:
    maps = detector.score([image for image, _ in items]).maps
    return np.array([float(m[mask].max()) for m, (_, mask) in zip(maps, items)])


def test_gmm_separates_a_wrong_part_from_two_legitimate_variants(bimodal):
    goods, tests, wrong = bimodal
    gmm = PixelGMM(n_components=2).fit(goods)
    good_peaks, wrong_peaks = region_peak(gmm, tests), region_peak(gmm, wrong)
    # Any threshold between the two flags every wrong part and no good variant.
    assert wrong_peaks.min() > good_peaks.max(), (good_peaks, wrong_peaks)


@pytest.mark.parametrize("statistic", ["mean", "robust"])
def test_difference_model_cannot_in_that_region(bimodal, statistic):
    goods, tests, wrong = bimodal
    model = DifferenceModel(statistic=statistic).fit(goods)
    good_peaks, wrong_peaks = region_peak(model, tests), region_peak(model, wrong)
    # Whatever threshold flags the wrong part also flags a good variant: false alarms.
    assert wrong_peaks.min() <= good_peaks.max(), (good_peaks, wrong_peaks)


def test_em_recovers_known_modes_per_pixel():
    rng = np.random.default_rng(0)
    n, p = 120, 500
    share = rng.uniform(0.2, 0.8, p)  # each pixel has its own mixing proportion
    low, high = rng.uniform(0.1, 0.3, p), rng.uniform(0.6, 0.9, p)
    pick = rng.random((n, p)) < share
    samples = np.where(pick, high, low) + rng.normal(0, 0.02, (n, p))
    fitted = fit_pixel_mixtures(samples[..., None].astype(np.float32), n_components=2, std_floor=0.005,
                                max_iter=50, tol=1e-5, random_state=0)
    means = np.sort(fitted.means[..., 0], axis=0)
    assert np.abs(means[0] - low).max() < 0.02
    assert np.abs(means[1] - high).max() < 0.02
    order = np.argsort(fitted.means[..., 0], axis=0)
    weight_high = np.take_along_axis(fitted.weights, order, axis=0)[1]
    assert np.abs(weight_high - pick.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose(fitted.weights.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(np.sqrt(fitted.variances) >= 0.005 - 1e-7)


def test_em_is_seeded_and_independent_of_block_size():
    rng = np.random.default_rng(1)
    samples = rng.random((40, 3000, 3)).astype(np.float32)
    a = fit_pixel_mixtures(samples, n_components=3, std_floor=0.02, max_iter=5, tol=0.0, random_state=7)
    b = fit_pixel_mixtures(samples, n_components=3, std_floor=0.02, max_iter=5, tol=0.0, random_state=7)
    np.testing.assert_array_equal(a.means, b.means)
    # Pixel 10's fit does not change when the other pixels are left out.
    c = fit_pixel_mixtures(samples[:, :20], n_components=3, std_floor=0.02, max_iter=5, tol=0.0, random_state=7)
    np.testing.assert_allclose(a.means[:, 10], c.means[:, 10], atol=1e-6)


def test_constant_pixels_keep_the_variance_floor():
    samples = np.full((30, 50, 1), 0.5, np.float32)
    fitted = fit_pixel_mixtures(samples, n_components=3, std_floor=0.02, max_iter=10, tol=1e-4, random_state=0)
    assert np.allclose(fitted.variances, 0.02**2)
    assert np.all(np.isfinite(fitted.means))


def test_colour_mixture_and_signed_map(bimodal):
    layout = list(LAYOUT)
    goods = [render_layout(SIZE, tuple(layout), np.random.default_rng([12, i]), noise=1.0) for i in range(10)]
    model = PixelGMM(n_components=2, color=True).fit(goods)
    image = goods[0].copy()
    image[52:60, 36:44] = 255
    result = model.score([image])
    signed = result.extras["signed"][0]
    y, x = np.unravel_index(np.argmax(result.maps[0]), result.maps[0].shape)
    assert 50 <= y < 62 and 34 <= x < 46
    assert signed[y, x] > 0


def test_bad_parameters_raise(bimodal):
    goods = bimodal[0][:3]
    for params in ({"n_components": 0}, {"std_floor": 0}, {"max_iter": 0}, {"tol": -1}):
        with pytest.raises(InvalidParameterError):
            PixelGMM(**params).fit(goods)
