"""Metrics: PRO on a hand-computed case, binned pixel AUROC against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly.metrics import (PixelMetrics, f1_max, image_auroc, paired_auroc_difference, pro_curve,
                             quantile_thresholds)


def test_pro_on_a_hand_computed_case():
    # One 4x4 image; defect = left 2x2 block (4 px, one region); 12 good pixels.
    amap = np.array([[4, 3, 0, 0],
                     [2, 1, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 5]], np.float32)
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    acc = PixelMetrics(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    acc.add(amap, mask)
    # Every threshold 1..5 keeps the good pixel valued 5 above it: FPR = 1/12 throughout,
    # while the region overlap is 4/4, 3/4, 2/4, 1/4, 0/4. No threshold reaches an FPR below
    # 1/12 with any overlap (above 5 both are 0), so PRO is 0 on [0, 1/12), rises vertically
    # to 1 at 1/12 and stays 1 to 0.3: area = (0.3 - 1/12) * 1.
    expected = (0.3 - 1 / 12) / 0.3
    assert acc.aupro() == pytest.approx(expected, abs=1e-9)


def test_pro_curve_interpolates_at_the_limit():
    # PRO rises linearly with FPR: area up to 0.3 of y = x is 0.045 -> normalised 0.15.
    fpr = np.linspace(0, 1, 101)
    assert pro_curve(fpr, fpr, 0.3) == pytest.approx(0.15, abs=1e-9)


def test_two_regions_are_averaged_not_pooled():
    amap = np.zeros((10, 10), np.float32)
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True          # small region, fully detected
    mask[5:10, 5:10] = True        # large region, not detected
    amap[0:2, 0:2] = 1.0
    acc = PixelMetrics(np.array([0.5]))
    acc.add(amap, mask)
    # One threshold: FPR 0, PRO = mean(1, 0) = 0.5 -> area with the curve held flat to 0.3.
    assert acc.aupro() == pytest.approx(0.5, abs=1e-9)


def test_binned_pixel_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for _ in range(5):
        mask = np.zeros((64, 64), bool)
        mask[20:30, 20:40] = True
        amap = rng.normal(0, 1, (64, 64)).astype(np.float32) + 1.5 * mask
        maps.append(amap)
        masks.append(mask)
    acc = PixelMetrics(quantile_thresholds(maps, n_bins=4000))
    for a, m in zip(maps, masks):
        acc.add(a, m)
    exact = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([a.ravel() for a in maps]))
    assert acc.auroc() == pytest.approx(exact, abs=1e-3)


def test_image_metrics():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert image_auroc([0, 0], [0.1, 0.2]) is None
    f1, thr = f1_max([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert f1 == 1.0 and thr == pytest.approx(0.3)


def test_paired_auroc_difference_point_estimate_and_interval():
    rng = np.random.default_rng(0)
    blocks = []
    for n_good, n_bad in ((20, 40), (15, 30)):
        y = np.r_[np.zeros(n_good), np.ones(n_bad)].astype(int)
        base = rng.normal(size=len(y)) + 1.5 * y
        # B ranks two more pairs the wrong way than A; ties count one half on both sides.
        blocks.append((y, base, base + rng.normal(0, 0.3, len(y))))
    found = paired_auroc_difference(blocks, resamples=500, seed=1)
    expected = np.mean([image_auroc(y, a) - image_auroc(y, b) for y, a, b in blocks])
    assert found.delta == pytest.approx(expected, abs=1e-12)
    assert found.low <= found.delta <= found.high and found.level == 0.95
    # Identical systems: every resample's difference is zero.
    same = paired_auroc_difference([(y, a, a) for y, a, _ in blocks], resamples=200)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    # A separates perfectly, B is noise: the whole interval is above zero.
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    clear = paired_auroc_difference([(y, y + 0.01 * rng.random(60), rng.random(60))], resamples=500)
    assert clear.low > 0.2
    # Seeded; and no block with both classes gives no answer.
    again = paired_auroc_difference(blocks, resamples=500, seed=1)
    assert (again.low, again.high) == (found.low, found.high)
    assert paired_auroc_difference([([1, 1], [0.1, 0.2], [0.3, 0.1])]) is None
