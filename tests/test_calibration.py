"""Calibration from good images only: tail estimate, intervals, cross-fitting, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from anomaly.calibration import Calibration, calibrate
from anomaly.crossfit import cross_fit
from anomaly.folds import assign_folds, shrink_map
from anomaly.detectors.registry import create_detector
from anomaly.errors import DatasetError, InvalidParameterError
from anomaly.tails import clopper_pearson, fit_tail, tail_quantile, tail_rate


# -- the tail estimate on known distributions ---------------------------------------------------
def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    lo, hi = clopper_pearson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 20))
    lo, hi = clopper_pearson(5, 100)
    assert lo == pytest.approx(stats.beta.ppf(0.025, 5, 96)) and hi == pytest.approx(stats.beta.ppf(0.975, 6, 95))


@pytest.mark.parametrize("dist", [stats.gumbel_r(), stats.norm(), stats.expon(), stats.lognorm(0.3)],
                         ids=["gumbel", "normal", "exponential", "lognormal"])
def test_threshold_recovers_the_quantile_within_its_stated_bound(dist):
    """200 good scores, 1 % target: the true rate at t_ng lies in the stated 95 % interval."""
    n, target, runs = 200, 0.01, 150
    true_rates, covered = [], 0
    for seed in range(runs):
        x = dist.rvs(n, random_state=seed)
        t = tail_quantile(x, target)
        rate = float(dist.sf(t))
        lo, hi = clopper_pearson(int(np.sum(x >= t)), n)
        covered += lo <= rate <= hi
        true_rates.append(rate)
    assert covered / runs >= 0.93
    assert 0.007 <= np.median(true_rates) <= 0.014
    assert np.quantile(true_rates, 0.9) <= 0.025


def test_calibrate_states_its_figures():
    x = stats.gumbel_r().rvs(200, random_state=1)
    cal = calibrate(x, target_frr=0.01, review_rate=0.04, good_map_maxima=x * 0.5)
    assert cal.t_review < cal.t_ng
    e = cal.expected
    assert e["frr"] == pytest.approx(0.01) and e["review_fraction"] == pytest.approx(0.04)
    assert e["frr_interval"][0] <= 0.01 <= e["frr_interval"][1]
    assert e["frr_interval_bootstrap"][0] <= 0.01 <= e["frr_interval_bootstrap"][1]
    assert e["region_rate"] == pytest.approx(0.05)
    assert cal.calibrated(cal.t_ng) == pytest.approx(1.0)
    assert cal.calibrated(float(np.median(x))) == pytest.approx(0.0)
    assert 0 < cal.scale["review_at"] < 1
    assert cal.good_scores == list(x) and cal.tail["estimator"] == "gpd-pwm"
    assert Calibration.from_manifest(json.loads(json.dumps(cal.to_dict()))) == cal  # the manifest round trip
    small = calibrate(x[:20], target_frr=0.01)
    assert small.tail["estimator"] == "exponential-mle"
    assert small.expected["frr_interval"][1] > 0.15  # 20 images say little, and the figures show it


def test_inside_the_sample_the_empirical_quantile_is_used():
    x = np.arange(1, 101, dtype=float)
    tail = fit_tail(x)
    assert tail["p_u"] == pytest.approx(0.2)
    assert tail_quantile(x, 0.5, tail) == pytest.approx(np.quantile(x, 0.5, method="weibull"))
    for rate in (0.1, 0.01, 0.001):
        assert tail_rate(x, tail_quantile(x, rate, tail), tail) == pytest.approx(rate)


def test_verdicts_and_single_cut():
    cal = calibrate(np.linspace(0, 1, 50), target_frr=0.02, review_rate=0)
    assert cal.t_review == cal.t_ng
    assert cal.verdict(cal.t_ng) == "NG" and cal.verdict(cal.t_ng - 1e-9) == "GOOD"
    cal = calibrate(np.linspace(0, 1, 50), target_frr=0.02, review_rate=0.1)
    assert cal.verdict((cal.t_review + cal.t_ng) / 2) == "REVIEW"
    with pytest.raises(InvalidParameterError, match="no calibrated thresholds"):
        Calibration().verdict(1.0)
    assert Calibration.from_manifest({"t_ng": 1.0, "future_key": 3}).to_dict()["future_key"] == 3  # unknown keys survive
    with pytest.raises(InvalidParameterError):
        calibrate([1.0, 2.0], target_frr=0.7)
    with pytest.raises(InvalidParameterError):
        calibrate([1.0])


# -- cross-fitting ------------------------------------------------------------------------------
def test_folds_are_seeded_and_balanced():
    folds = assign_folds(23, 5, 3)
    assert np.array_equal(folds, assign_folds(23, 5, 3))
    assert sorted(np.bincount(folds)) == [4, 4, 5, 5, 5]
    assert assign_folds(3, 5, 0).max() == 2
    with pytest.raises(InvalidParameterError):
        assign_folds(1, 5, 0)


def test_shrink_map_keeps_values():
    amap = np.random.default_rng(0).random((600, 300)).astype(np.float32)
    small = shrink_map(amap, 100)
    assert small.shape == (100, 50) and np.isin(small, amap).all()
    assert shrink_map(amap, None) is amap


FAST = {"image_size": 64, "batch_size": 8}


@pytest.mark.parametrize("name, params", [
    ("patchcore", {**FAST, "coreset_ratio": 1.0, "max_bank_size": 100_000}),
    # 16 px grid: the image score is refined on the 8 px grid against a second bank.
    ("patchcore", {**FAST, "grid_stride": 16, "coreset_ratio": 1.0, "max_bank_size": 100_000}),
    ("padim", FAST),
])
def test_cross_fit_scores_equal_refitting_each_fold(name, params, good_parts):
    """Feature reuse gives what refitting without the fold gives, and the final model is fit(all)."""
    images = good_parts[:6]
    detector, result, folds = cross_fit(name, images, params=params, n_folds=2, random_state=1, max_map_side=None)
    for j in range(2):
        inside = np.flatnonzero(folds == j)
        refit = create_detector(name, params).fit([images[i] for i in np.flatnonzero(folds != j)])
        expected = refit.score([images[i] for i in inside])
        np.testing.assert_allclose(result.scores[inside], expected.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.maps[inside[0]], expected.maps[0], rtol=1e-3, atol=1e-4)
    again = create_detector(name, params).fit(images)
    np.testing.assert_allclose(detector.score(images[:2]).scores, again.score(images[:2]).scores, rtol=1e-4)


def test_train_calibrates_from_cross_fitted_scores(good_parts, test_parts):
    from anomaly.training import TrainingOptions, fit_calibrated

    options = TrainingOptions(target_frr=0.05, n_folds=4, detection=False, grading={"ng_if_any": {"area_px": 50}})
    model = fit_calibrated("patchcore", good_parts, options, params=FAST)
    cal = model.calibration
    assert cal.n_good == len(good_parts) and cal.n_folds == 4 and len(cal.good_map_maxima) == len(good_parts)
    assert cal.t_review <= cal.t_ng and cal.pixel_threshold is not None
    assert cal.grading["ng_if_any"] == {"area_px": 50} and model.training.n_images == len(good_parts)
    assert model.training.extra["options"] == options.to_dict()
    images, _ = test_parts
    scores = model.detector.score(images).scores
    assert (scores[3:] >= cal.t_ng).all()
    # Out-of-fold scores are higher than the final model's scores of its own training images.
    assert np.median(cal.good_scores) > np.median(model.detector.score(good_parts).scores)
    with pytest.raises(DatasetError):
        fit_calibrated("patchcore", good_parts[:1], options, params=FAST)


# -- honest evaluation figures ----------------------------------------------------------------------
def test_eval_threshold_figures_at_good_only_and_oracle_thresholds():
    from anomaly.evaluate import threshold_report

    scores = np.array([0.1, 0.2, 0.3, 0.4, 1.5, 0.9, 1.2, 2.0, 3.0, 0.5])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    types = ["good"] * 5 + ["crack", "crack", "hole", "hole", "hole"]
    cal = Calibration(t_review=0.8, t_ng=1.0)
    figures, per_type = threshold_report(scores, labels, types, cal, ["GOOD"] * 4 + ["NG"] + ["NG"] * 5)
    g = figures["good_only"]
    assert g["frr_test_good"]["rate"] == pytest.approx(0.2) and g["frr_test_good"]["k"] == 1
    lo, hi = g["frr_test_good"]["ci95"]
    assert lo < 0.2 < hi
    assert g["recall"]["rate"] == pytest.approx(0.6) and g["flagged_recall"]["rate"] == pytest.approx(0.8)
    assert g["review_fraction"] == pytest.approx(0.1) and g["review_fraction_defective"] == pytest.approx(0.2)
    assert g["graded"]["recall"]["rate"] == 1.0
    assert figures["oracle"]["f1"] >= 0.8
    assert per_type["crack"]["recall"] == pytest.approx(0.5) and per_type["hole"]["flagged_recall"] == pytest.approx(2 / 3)


def test_eval_region_figures():
    from anomaly.evaluate import _region_row, region_report

    amap = np.zeros((100, 100), np.float32)
    amap[10:20, 10:20] = 1.0  # on the first ground-truth region
    amap[70:80, 70:80] = 1.0  # a false region
    mask = np.zeros((100, 100), bool)
    mask[12:18, 12:18] = True
    mask[40:50, 40:50] = True  # missed
    bad = _region_row(amap, 0.5, 10, 2, mask)
    assert bad == {"n_regions": 2, "gt_regions": 2, "gt_hit": 1, "false_regions": 1}
    good = _region_row(np.zeros((100, 100), np.float32), 0.5, 10, 0, np.zeros((100, 100), bool))
    report = region_report([good, bad, good], ["good", "crack", "good"], True)
    assert report["gt_regions_overlapped"] == 0.5 and report["false_regions_per_good_image"] == 0.0
    assert report["false_regions_per_defective_image"] == 1.0
