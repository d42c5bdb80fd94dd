"""Detection estimate on synthetic defects, and its rates at moved thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.calibration import calibrate
from anomaly.detection_estimate import _smallest, default_sizes, detection_rates, estimate_detection
from anomaly.errors import InvalidParameterError
from tests.test_thresholds import MeanDifference


@pytest.fixture(scope="module")
def setup(good_parts):
    det = MeanDifference().fit(good_parts)
    cross = det.score(good_parts)  # in-sample is fine for this stand-in
    cal = calibrate(cross.scores, target_frr=0.05, good_map_maxima=[m.max() for m in cross.maps])
    return det, cal


def test_rates_per_kind_and_size(setup, good_parts):
    det, cal = setup
    est = estimate_detection(det, good_parts[:4], cal, kinds=["spot", "scratch"], sizes=[4, 24],
                             contrast=0.5, per_cell=3, random_state=0, pixel_size_mm=0.1)
    assert est["sizes_px"] == [4.0, 24.0] and est["sizes_mm"] == pytest.approx([0.4, 2.4])
    assert len(est["samples"]) == 12 and set(est["rates"]) == {"spot", "scratch", "all"}
    big = est["rates"]["spot"]["24"]
    assert big["n"] == 3 and big["ng"] == 1.0 and big["flagged"] == 1.0 and big["located"] == 1.0
    assert est["rates"]["all"]["24"]["n"] == 6
    assert est["min_size_90"]["spot"] in (4.0, 24.0)
    assert "good parts are rejected" in est["summary"] and "mm" in est["summary"]
    again = estimate_detection(det, good_parts[:4], cal, kinds=["spot", "scratch"], sizes=[4, 24],
                               contrast=0.5, per_cell=3, random_state=0, pixel_size_mm=0.1)
    assert again["samples"] == est["samples"]


def test_rates_follow_moved_thresholds_without_rescoring(setup, good_parts):
    det, cal = setup
    est = estimate_detection(det, good_parts[:2], cal, kinds=["spot"], sizes=[16], per_cell=2, contrast=0.5)
    never = detection_rates(est, cal.replace(t_ng=np.inf, t_review=np.inf, pixel_threshold=np.inf))
    always = detection_rates(est, cal.replace(t_ng=-np.inf, t_review=-np.inf, pixel_threshold=-np.inf))
    assert never["rates"]["spot"]["16"]["ng"] == 0.0 and never["min_size_90"]["spot"] is None
    assert always["rates"]["spot"]["16"] == {"n": 2, "ng": 1.0, "flagged": 1.0, "located": 1.0}


def test_smallest_size_detected_needs_every_larger_size_too():
    cells = {"3": {"ng": 0.95}, "6": {"ng": 0.5}, "12": {"ng": 0.92}, "24": {"ng": 1.0}}
    assert _smallest(cells) == 12.0
    assert _smallest({"3": {"ng": 0.1}}) is None


def test_default_sizes_and_bad_kinds(setup, good_parts):
    assert default_sizes(96) == [3.0, 4.0, 8.0, 16.0]
    assert default_sizes(1024) == [21.0, 43.0, 85.0, 171.0]
    det, cal = setup
    with pytest.raises(InvalidParameterError, match="unknown defect kind"):
        estimate_detection(det, good_parts[:1], cal, kinds=["dent"])


def test_kinds_a_model_trained_on_are_marked_and_the_untrained_named_the_fair_estimate(setup, good_parts):
    det, cal = setup
    est = estimate_detection(det, good_parts[:2], cal, kinds=["spot", "scratch"], sizes=[16], per_cell=2,
                             contrast=0.5, trained_on={"kinds": ["scratch", "stain"], "seed": 7919})
    assert est["trained_on"] == {"kinds": ["scratch"], "seed": 7919}  # only the kinds this estimate made
    assert "of scratch* at" in est["summary"] and "of spot at" in est["summary"]
    assert "the kinds it never saw, spot, are the fair estimate" in est["summary"]
    plain = estimate_detection(det, good_parts[:2], cal, kinds=["spot"], sizes=[16], per_cell=2, contrast=0.5)
    assert plain["trained_on"] is None and "*" not in plain["summary"]
