"""Onboarding from good images only: the survey, the candidates offered, the choice, the record, bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from anomaly.demo.assembly import render_good
from anomaly.errors import DatasetError
from anomaly.goods import survey
from anomaly.onboarding import Candidate, Figures, candidates, onboard, rank
from anomaly.store import ModelStore
from anomaly.tiling import Tiling

SMALL = 64  # base input side for the tests (the product's default is 256)


def long_strip(rng: np.random.Generator, height: int = 64) -> np.ndarray:
    """A 10 : 1 part (a little longer or shorter each time, so it is not a fixed-size aligned part)."""
    width = int(640 + rng.integers(-10, 11))
    rows = 110 + 30 * np.cos(np.pi * (np.arange(height) - height / 2) / height)
    return np.clip(rows[:, None] + rng.normal(0, 2, (height, width)), 0, 255).astype(np.uint8)


def test_survey_sees_shape_size_and_alignment():
    rng = np.random.default_rng(0)
    strips = survey([long_strip(rng) for _ in range(6)])
    assert strips.elongation > 9 and not strips.same_size and strips.aligned is None and strips.gray
    boards = survey([render_good(128, np.random.default_rng(i), noise=2.0) for i in range(6)])
    assert boards.same_size and boards.aligned and boards.alignment_quality > 0.9 and not boards.gray


def test_candidates_follow_the_goods():
    rng = np.random.default_rng(0)
    names = [c.name for c in candidates(survey([long_strip(rng) for _ in range(6)]), base_size=SMALL)]
    assert names == ["patchcore-64", "padim-64", "patchcore-letterbox-64x256", "padim-letterbox-64x256",
                     "patchcore-tiled-64"]  # 640 px long: 12 tiles at native resolution
    boards = candidates(survey([render_good(128, np.random.default_rng(i)) for i in range(6)]), base_size=SMALL)
    assert {"difference", "gmm"} <= {c.detector for c in boards}  # aligned goods: classical models offered
    large = survey([np.full((800, 820), 100, np.uint8), np.full((800, 820), 101, np.uint8)])
    offered = {c.name: c for c in candidates(large, base_size=SMALL)}
    assert "patchcore-128" in offered
    # 820 px at native resolution would need 15 x 15 tiles of 64 px: the scale comes down to fit 36.
    tiled = next(c for name, c in offered.items() if name.startswith("patchcore-tiled-64"))
    assert tiled.params["resize"] == "tile" and tiled.params["tile_scale"] < 0.5
    assert len(Tiling((SMALL, SMALL), SMALL // 8, tiled.params["tile_scale"]).layout((800, 820))) <= 36


def test_rank_prefers_detection_then_auroc_then_speed():
    def entry(name, detection, auroc, latency, n=2000):
        return Candidate(name, "padim"), Figures(n, n, detection=detection, auroc=auroc, latency_ms=latency,
                                                 n_synthetic=n)

    ranked = rank([entry("slow", 0.80, 0.90, 30.0), entry("fast", 0.79, 0.895, 5.0), entry("weak", 0.5, 0.99, 1.0),
                   (Candidate("broken", "gmm"), Figures(4, 2, error="AlignmentError"))])
    assert [c.name for c, _ in ranked] == ["fast", "slow", "weak"]  # a tie goes to the faster model
    # With few held-out goods and defects, 0.04 of AUROC is within the noise: a tie, the faster model wins.
    few = rank([entry("sharper", 0.28, 0.81, 75.0, n=24), entry("quicker", 0.28, 0.775, 23.0, n=24)])
    assert [c.name for c, _ in few] == ["quicker", "sharper"]
    many = rank([entry("sharper", 0.28, 0.81, 75.0), entry("quicker", 0.28, 0.775, 23.0)])
    assert [c.name for c, _ in many] == ["sharper", "quicker"]  # with 2,000 each it is not noise


def test_an_elongated_part_gets_an_aspect_preserving_input(tmp_path):
    rng = np.random.default_rng(0)
    done = onboard(ModelStore(tmp_path), "strip", [long_strip(rng) for _ in range(16)], base_size=SMALL)
    # Squeezed 10 x into a square, small defects vanish; kept in shape (letterbox) or at native
    # resolution (tiles) they are found.
    assert done.winner.params.get("resize") in ("letterbox", "tile"), done.record["why"]
    figures = {c["name"]: c["figures"][-1] for c in done.record["candidates"]}
    assert figures[done.winner.name]["detection"] > figures["patchcore-64"]["detection"]
    manifest = ModelStore(tmp_path).manifest("strip", done.version.version)
    assert manifest["params"]["resize"] == done.winner.params["resize"] and manifest["notes"]["onboarding"]["winner"] == done.winner.name
    assert done.record["provisional"]  # 16 goods: wide intervals, and the record says so


def test_an_aligned_assembly_is_offered_the_classical_models(tmp_path):
    goods = [render_good(128, np.random.default_rng(i), noise=2.0) for i in range(8)]
    done = onboard(ModelStore(tmp_path), "board", goods, base_size=SMALL)
    judged = {c["name"]: c["figures"][-1] for c in done.record["candidates"]}
    assert {"difference", "gmm"} <= set(judged) and judged["difference"]["error"] is None
    assert done.version.model.calibration.t_ng is not None and done.record["provisional"]


def large_plate(rng: np.random.Generator, side: int = 320) -> np.ndarray:
    """A large frame of fine woven texture (a few pixels per thread), slightly shifted each time."""
    yy, xx = np.mgrid[0:side, 0:side] + rng.integers(0, 4, 2)[:, None, None]
    weave = 20 * np.sin(xx * 2 * np.pi / 5) * np.sin(yy * 2 * np.pi / 5)
    return np.clip(120 + weave + rng.normal(0, 3, (side, side)), 0, 255).astype(np.uint8)


def test_small_defects_on_a_large_frame_choose_more_pixels_than_the_squeezed_default(tmp_path):
    rng = np.random.default_rng(1)
    done = onboard(ModelStore(tmp_path), "plate", [large_plate(rng) for _ in range(12)], base_size=SMALL)
    offered = [c["name"] for c in done.record["candidates"]]
    assert "patchcore-tiled-64" in offered and "patchcore-128" in offered
    # Squeezed 5 x into 64 px the weave and small defects blur together; tiles at native
    # resolution (or the 2 x input) keep them.
    assert done.winner.name not in ("patchcore-64", "padim-64"), done.record["why"]
    figures = {c["name"]: c["figures"][-1] for c in done.record["candidates"]}
    assert figures[done.winner.name]["detection"] > figures["patchcore-64"]["detection"]


def test_cli_onboard_answers_json_and_names_bad_files(tmp_path, capsys):
    from anomaly.cli.main import main
    from anomaly.imageio import write_png

    folder = tmp_path / "goods"
    folder.mkdir()
    for i in range(8):
        write_png(folder / f"good-{i}.png", render_good(96, np.random.default_rng(i), noise=2.0))
    assert main(["onboard", str(folder), "--name", "cli", "--store", str(tmp_path / "store"), "--quiet",
                 "--budget-min", "5"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == 1 and answer["provisional"] and answer["chosen"] in {c["name"] for c in
                                                                                     answer["candidates"]}
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="broken.png"):
        onboard(ModelStore(tmp_path / "store"), "cli", sorted(folder.iterdir()),
                names=[p.name for p in sorted(folder.iterdir())])
    with pytest.raises(DatasetError, match="at least"):
        onboard(ModelStore(tmp_path / "store"), "cli", [render_good(96, np.random.default_rng(0))])


def test_an_onboarding_job_over_http_ends_on_a_version_page_with_the_evidence(tmp_path):
    import io
    from service import create_app
    from service.testing import finished_job, make_test_config, png_bytes

    app = create_app(make_test_config(tmp_path, tmp_path / "store", ONBOARD_BUDGET_SECONDS=120.0))
    client = app.test_client()
    try:
        goods = [(io.BytesIO(png_bytes(render_good(96, np.random.default_rng(i), noise=2.0))), f"{i}.png")
                 for i in range(8)]
        r = client.post("/api/v1/models/board/versions", content_type="multipart/form-data",
                        data={"images": goods, "detector": "auto", "promote": "true"})
        assert r.status_code == 202, r.get_json()
        job = finished_job(client, r.get_json())
        assert job["status"] == "succeeded", job
        manifest = ModelStore(tmp_path / "store").manifest("board", job["version"])
        record = manifest["notes"]["onboarding"]
        assert manifest["notes"]["trained_by"] == "service" and manifest["notes"]["job_id"] == job["job_id"]
        page = client.get(f"/models/board/{job['version']}").get_data(as_text=True)
        assert "onboarding-candidates" in page and record["winner"] in page and "Provisional" in page
        assert "onboarding-report" in page
        # The report: candidates, the detection grid, heat maps served from the bundle, the rate control.
        report = client.get(f"/models/board/{job['version']}/report").get_data(as_text=True)
        for part in ("report-candidates", "report-histogram", "report-detection-grid", "report-goods",
                     "report-caught", "report-missed", "target-frr-control", "rate-form"):
            assert part in report, part
        pictures = [f for f in record["report"]["files"] if f.endswith(".png")]
        assert any(f.startswith("onboarding/good-") for f in pictures)
        png = client.get(f"/models/board/{job['version']}/report/{pictures[0].split('/')[1]}")
        assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"
        png.close()
        assert client.get(f"/models/board/{job['version']}/report/manifest.json").status_code == 404
        # Moving the target rate there writes a version whose t_ng is the ladder's, and publishes it.
        row = next(r for r in json.loads((ModelStore(tmp_path / "store").path("board", job["version"])
                                          / "onboarding" / "report.json").read_text())["ladder"]
                   if r["target_frr"] == 0.05)
        token = re.search(r'name="csrf_token" value="([^"]+)"', report).group(1)
        r = client.post(f"/models/board/{job['version']}/thresholds",
                        data={"csrf_token": token, "target_frr": "0.05", "review_rate": str(row["review_rate"]), "promote": "on"})
        assert r.status_code == 302
        moved = ModelStore(tmp_path / "store").manifest("board", job["version"] + 1)["calibration"]
        assert moved["t_ng"] == pytest.approx(row["t_ng"]) and moved["target_frr"] == 0.05
        assert ModelStore(tmp_path / "store").production("board") == job["version"] + 1
        few = [(io.BytesIO(png_bytes(render_good(96, np.random.default_rng(i)))), f"{i}.png") for i in range(3)]
        r = app.test_client().post("/api/v1/models/board/versions", content_type="multipart/form-data",
                                   data={"images": few, "detector": "auto"})  # a client without the page's session
        assert r.status_code == 400 and "at least 4" in r.get_json()["message"]
    finally:
        app.extensions["anomaly_jobs"].shutdown(wait=True)
        app.extensions["anomaly_db"].dispose()
