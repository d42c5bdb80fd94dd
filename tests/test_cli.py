"""The command line end to end on a tiny generated product: train, score, models, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly.cli.main import build_parser, main
from anomaly.imageio import write_png
from tests.conftest import make_part


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("product") / "part"
    rng = np.random.default_rng(0)
    for i in range(10):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        write_png(root / "train" / "good" / f"{i:03d}.png", make_part(rng))
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "spot").mkdir(parents=True)
    (root / "ground_truth" / "spot").mkdir(parents=True)
    for i in range(3):
        write_png(root / "test" / "good" / f"{i:03d}.png", make_part(rng))
        bad = make_part(rng)
        bad[30:42, 60:72] = 250
        write_png(root / "test" / "spot" / f"{i:03d}.png", bad)
        mask = np.zeros((96, 96), np.uint8)
        mask[30:42, 60:72] = 255
        write_png(root / "ground_truth" / "spot" / f"{i:03d}_mask.png", mask)
    return root


def test_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for verb in ("train", "score", "eval", "models", "demo"):
        assert verb in out


def test_train_score_models(product, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["train", str(product), "--name", "part", "--image-size", "64", "--store", str(store), "--quiet"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["version"] == 1 and trained["production"] and trained["t_ng"] >= trained["t_review"]

    overlays = tmp_path / "overlays"
    rc = main(["score", str(product / "test" / "good"), str(product / "test" / "spot"), "--name", "part",
               "--store", str(store), "--overlays", str(overlays)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and len(lines) == 6
    assert all(r["verdict"] in ("GOOD", "REVIEW", "NG") for r in lines)
    assert [r["verdict"] for r in lines[3:]] == ["NG"] * 3
    assert len(list(overlays.glob("*.png"))) == 6

    assert main(["train", str(product), "--name", "part", "--image-size", "64", "--store", str(store), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--store", str(store)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["production"]) for m in listed] == [(1, True), (2, False)]
    assert main(["models", "promote", "part", "2", "--store", str(store)]) == 0
    assert main(["models", "rollback", "part", "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["models", "show", "part", "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["manifest"]["detector"] == "patchcore"


def test_score_reports_bad_files_and_keeps_going(product, tmp_path, capsys):
    store = tmp_path / "store"
    main(["train", str(product), "--name", "p", "--image-size", "64", "--store", str(store), "--quiet"])
    capsys.readouterr()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = next((product / "test" / "good").iterdir())
    rc = main(["score", str(bad), str(good), "--name", "p", "--store", str(store)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1
    assert lines[0]["error"] == "invalid_image" and "verdict" in lines[1]


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    rc = main(["score", str(tmp_path), "--name", "nothing", "--store", str(tmp_path)])
    assert rc == 2
    assert json.loads(capsys.readouterr().err)["error"] == "model_not_found"


def test_eval_writes_the_documented_keys(product, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(product), "--model", "patchcore", "--image-size", "64", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max_image", "n_train", "n_test", "fit_seconds",
                "latency_ms", "decode_ms_p50", "backbone_ms_p50", "peak_rss_mb", "params", "backbone"):
        assert key in report, key
    assert report["image_auroc"] == 1.0 and report["n_test"] == 6
    assert set(report["latency_ms"]) == {"p50", "p90"}


def test_eval_rejects_the_parts_it_cannot_align(product, tmp_path):
    """A classical model's ALIGNMENT_FAILED parts are rejected, not a crash of the evaluation.

    The product's test set plus a good part turned a quarter and an image of noise: both
    refused, so they rank above every scored part (the noise ties with the turned part).
    """
    import shutil

    root = tmp_path / "part"
    shutil.copytree(product, root)
    rng = np.random.default_rng(5)
    write_png(root / "test" / "good" / "003.png", np.rot90(make_part(rng)).copy())
    (root / "test" / "scramble").mkdir()
    write_png(root / "test" / "scramble" / "000.png", rng.integers(0, 256, (96, 96, 3)).astype(np.uint8))
    out = tmp_path / "eval.json"
    assert main(["eval", str(root), "--model", "difference", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["n_test"] == 8 and report["n_refused"] == 2
    assert sorted(r["image"].split("/test/")[1] for r in report["refused"]) == ["good/003.png", "scramble/000.png"]
    assert all(r["error"] for r in report["refused"])
    # 3 plain goods below the 4 defective (12 pairs), the turned good above the 3 spots
    # (3 pairs lost) and tied with the noise (half a pair): 12.5 of 16.
    assert report["image_auroc"] == pytest.approx(12.5 / 16)
    assert report["good_only"]["frr_test_good"]["k"] >= 1  # the turned good part is rejected
    assert report["per_defect_type"]["scramble"]["recall"] == 1.0
