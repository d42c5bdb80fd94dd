"""The onboarding report: the rate ladder's built-in answers, and a report file that stands alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from anomaly.calibration import calibrate
from anomaly.demo.assembly import render_good
from anomaly.onboarding import onboard
from anomaly.onboarding_report import TARGET_LADDER, load_report, rate_ladder
from anomaly.store import ModelStore


def test_the_rate_ladder_moves_thresholds_and_costs_the_right_way():
    rng = np.random.default_rng(0)
    cal = calibrate(rng.normal(10, 1, 200), target_frr=0.01)
    synthetic = [["spot", 5.0, float(s), None] for s in np.linspace(8, 16, 50)]
    cal = cal.replace(detection={"kinds": ["spot"], "sizes_px": [5.0], "samples": synthetic})
    ladder = rate_ladder(cal)
    assert [row["target_frr"] for row in ladder] == sorted(set(TARGET_LADDER) | {0.01})
    trained = [row for row in ladder if row["trained"]]
    assert len(trained) == 1 and trained[0]["t_ng"] == cal.t_ng and trained[0]["target_frr"] == 0.01
    t_ng = [row["t_ng"] for row in ladder]
    caught = [row["synthetic_ng"] for row in ladder]
    assert all(a > b for a, b in zip(t_ng, t_ng[1:]))  # a higher target rate: a lower threshold ...
    assert all(a <= b for a, b in zip(caught, caught[1:]))  # ... catching at least as many defects
    for row in ladder:  # the expected rate at each target is the target (the tail model's own)
        assert row["frr"] == pytest.approx(row["target_frr"], rel=0.05)
        assert row["synthetic_ng"] == pytest.approx(np.mean(np.linspace(8, 16, 50) >= row["t_ng"]))
        assert row["review_rate"] == pytest.approx(3 * row["target_frr"])  # the trained ratio kept


def test_the_report_file_stands_alone(tmp_path):
    goods = [render_good(96, np.random.default_rng(i), noise=2.0) for i in range(8)]
    done = onboard(ModelStore(tmp_path), "board", goods, base_size=64)
    report = load_report(done.version.path)
    assert report["record"]["winner"] == done.winner.name
    assert {p["group"] for p in report["pictures"]} >= {"goods"} and len(report["ladder"]) >= len(TARGET_LADDER)
    html = (done.version.path / "onboarding" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing to fetch
    ladder = json.loads(re.search(r"var ladder = (\[.*?\]);", html, re.S).group(1))
    assert ladder == json.loads(json.dumps(report["ladder"]))
    # The files are part of the bundle: listed with their hashes in the manifest.
    listed = ModelStore(tmp_path).manifest("board", done.version.version)["files"]
    assert "onboarding/report.html" in listed and "onboarding/good-0.png" in listed
