"""Grading rules: the verdict follows the quality department's rules, with reasons."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.errors import InvalidParameterError
from anomaly.grading import check_rules, grade, min_area_px
from anomaly.regions import find_regions


def regions_of(*boxes, pixel_size_mm=None, image=None):
    """Regions of a map with one block per ``(y0, y1, x0, x1, value)``."""
    amap = np.zeros((200, 200), np.float32)
    for y0, y1, x0, x1, value in boxes:
        amap[y0:y1, x0:x1] = value
    return find_regions(amap, 0.5, min_area=1, pixel_size_mm=pixel_size_mm, image=image)


LONG = (10, 13, 10, 110, 2.0)  # 100 x 3 px
SMALL = (150, 154, 150, 154, 0.8)  # 4 x 4 px, faint


def test_without_rules_the_score_decides():
    regions = regions_of(LONG)
    for verdict in ("GOOD", "REVIEW", "NG"):
        assert grade(verdict, regions, None).verdict == verdict
    assert grade("GOOD", [], None).reasons == []


def test_ng_if_any_region_is_longer_than_a_limit_in_mm():
    rules = {"ng_if_any": {"length_mm": 2.0}}
    g = grade("GOOD", regions_of(LONG, pixel_size_mm=0.05), rules)  # 5 mm
    assert g.verdict == "NG" and any("length_mm" in r for r in g.reasons)
    assert grade("GOOD", regions_of(LONG, pixel_size_mm=0.01), rules).verdict == "GOOD"  # 1 mm


def test_review_if_only_small_faint_regions():
    rules = {"ng_if_any": {"area_px": 200}, "score_ng_without_ng_region": "REVIEW"}
    small = grade("NG", regions_of(SMALL), rules)
    assert small.verdict == "REVIEW" and any("no region meets an NG rule" in r for r in small.reasons)
    assert grade("NG", regions_of(LONG, SMALL), rules).verdict == "NG"


def test_review_rule_and_worst_of_score_and_rules():
    rules = {"review_if_any": {"max_score": 1.5}}
    assert grade("GOOD", regions_of(LONG), rules).verdict == "REVIEW"
    assert grade("GOOD", regions_of(SMALL), rules).verdict == "GOOD"
    assert grade("NG", regions_of(SMALL), rules).verdict == "NG"


def test_min_area_filter_and_region_count():
    rules = {"min_area_px": 20, "max_regions": 0}
    g = grade("GOOD", regions_of(SMALL), rules)  # 16 px: dropped as noise
    assert g.verdict == "GOOD" and g.regions == []
    assert grade("GOOD", regions_of(LONG), rules).verdict == "NG"
    assert min_area_px({"min_area_px": 5, "min_area_mm2": 0.01}, pixel_size_mm=0.01) == pytest.approx(100)


def test_a_rule_on_a_measure_the_regions_lack_says_so():
    g = grade("GOOD", regions_of(LONG), {"ng_if_any": {"length_mm": 1.0, "contrast_abs": 5}})
    assert g.verdict == "GOOD"
    assert any("length_mm not applied" in r for r in g.reasons)
    image = np.full((200, 200), 50, np.uint8)
    image[10:13, 10:110] = 90
    assert grade("GOOD", regions_of(LONG, image=image), {"ng_if_any": {"contrast_abs": 30}}).verdict == "NG"


@pytest.mark.parametrize("rules", [
    {"ng_if": {"length_px": 3}},
    {"ng_if_any": {"lenght_px": 3}},
    {"ng_if_any": {"length_px": "long"}},
    {"min_area_px": -1},
    {"score_ng_without_ng_region": "GOOD"},
    [1, 2],
])
def test_bad_rules_are_refused(rules):
    with pytest.raises(InvalidParameterError):
        check_rules(rules)


def test_unknown_score_verdict_refused():
    with pytest.raises(InvalidParameterError):
        grade("OK", [], None)
