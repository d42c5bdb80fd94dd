"""Synthetic defects: the mask is exactly where the image changed, at the size and contrast asked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.cli.main import main
from anomaly.datasets import MVTecCategory
from anomaly.errors import DatasetError, InvalidImageError, InvalidParameterError
from anomaly.imageio import read_image, write_png
from anomaly.synthesis import KINDS, DefectSpec, make_defect, synthesize_dataset


def textured(size: int = 128, seed: int = 0) -> np.ndarray:
    """A part-like RGB uint8 image: shaded background, mid-scale texture and sharp features."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.3, 0.6, size, dtype=np.float32)
    base = ramp[None, :] + 0.5 * (ramp[:, None] - 0.45)
    texture = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.5)
    gray = base + 0.04 * texture / texture.std()
    features = np.zeros((size, size), dtype=np.float32)
    for cy in range(size // 8, size, size // 4):
        for cx in range(size // 8, size, size // 4):
            cv2.circle(features, (cx, cy), size // 20, 1.0, -1, cv2.LINE_AA)
    gray = gray - 0.25 * features
    rgb = np.stack([gray * 1.02, gray, gray * 0.95], axis=2)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def layouts() -> dict[str, np.ndarray]:
    rgb8 = textured()
    gray8 = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY)
    return {
        "rgb8": rgb8,
        "gray8": gray8,
        "rgb16": rgb8.astype(np.uint16) * 257,
        "gray16": gray8.astype(np.uint16) * 257 + 100,  # not a multiple of 257: real 16-bit values
    }


LAYOUTS = layouts()


def change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Largest absolute change over channels, in 8-bit grey levels, shape (H, W)."""
    delta = np.abs(after.astype(np.float64) - before.astype(np.float64))
    if delta.ndim == 3:
        delta = delta.max(axis=2)
    return delta / (257.0 if before.dtype == np.uint16 else 1.0)


def extent(mask: np.ndarray) -> float:
    """Longest distance between two mask pixels (Feret diameter), px."""
    points = cv2.convexHull(np.argwhere(mask)[:, ::-1].astype(np.int32)).reshape(-1, 2).astype(np.float64)
    if len(points) < 2:
        return 1.0
    return float(np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)).max()) + 1.0


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_mask_is_exactly_where_the_image_changed(kind: str, layout: str) -> None:
    image = LAYOUTS[layout]
    before = image.copy()
    out, mask = make_defect(image, DefectSpec(kind, 20, 0.25), random_state=7)
    assert np.array_equal(image, before), "the input must not be modified"
    assert out.shape == image.shape and out.dtype == image.dtype
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    assert mask.sum() >= 20
    delta = change(image, out)
    assert delta[~mask].max(initial=0) == 0, "a pixel outside the mask changed"
    assert (delta[mask] >= 1).mean() >= 0.75, "most of the mask must change by a grey level or more"
    assert delta[mask].mean() >= 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [10.0, 30.0])
def test_size_is_roughly_as_asked(kind: str, size: float) -> None:
    _, mask = make_defect(LAYOUTS["rgb8"], DefectSpec(kind, size, 0.3), random_state=3)
    assert 0.5 * size <= extent(mask) <= 1.15 * size + 2


@pytest.mark.parametrize("kind", ["spot", "scratch"])
@pytest.mark.parametrize("contrast", [0.05, 0.2, 0.5])
def test_peak_change_is_the_contrast(kind: str, contrast: float) -> None:
    flat = np.full((96, 96), 128, dtype=np.uint8)
    out, mask = make_defect(flat, DefectSpec(kind, 24, contrast), random_state=1)
    peak = change(flat, out).max()
    assert abs(peak - contrast * 255) <= 0.1 * contrast * 255 + 1


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_and_deterministic(kind: str) -> None:
    image = LAYOUTS["rgb8"]
    spec = DefectSpec(kind, 16, 0.3)
    out_a, mask_a = make_defect(image, spec, random_state=11)
    out_b, mask_b = make_defect(image, spec, random_state=np.random.default_rng(11))
    out_c, mask_c = make_defect(image, spec, random_state=12)
    assert np.array_equal(out_a, out_b) and np.array_equal(mask_a, mask_b)
    assert not np.array_equal(mask_a, mask_c)


@pytest.mark.parametrize("kind", ["scratch", "spot", "stain", "missing"])
def test_same_defect_at_either_bit_depth(kind: str) -> None:
    _, mask8 = make_defect(LAYOUTS["rgb8"], DefectSpec(kind, 20, 0.3), random_state=5)
    _, mask16 = make_defect(LAYOUTS["rgb16"], DefectSpec(kind, 20, 0.3), random_state=5)
    assert (mask8 & mask16).sum() / (mask8 | mask16).sum() > 0.85


@pytest.mark.parametrize("kind", ["cutpaste", "poisson"])
def test_patch_from_another_image_of_other_layout(kind: str) -> None:
    donor = cv2.cvtColor(textured(80, seed=4), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    image = LAYOUTS["rgb8"]
    out, mask = make_defect(image, DefectSpec(kind, 20, 0.3), random_state=2, source=donor)
    assert out.dtype == np.uint8 and mask.any()
    assert change(image, out)[~mask].max() == 0


def test_stain_on_colour_is_tinted() -> None:
    image = np.full((96, 96, 3), 200, dtype=np.uint8)
    out, mask = make_defect(image, DefectSpec("stain", 30, 0.4), random_state=0)
    drop = 200 - out[mask].astype(np.float64).mean(axis=0)
    assert drop[2] > drop[0] > 0, "darkening stains absorb blue most"


def test_flat_image_has_nothing_to_remove() -> None:
    flat = np.full((64, 64, 3), 90, dtype=np.uint8)
    with pytest.raises(InvalidImageError, match="structure"):
        make_defect(flat, DefectSpec("missing", 16, 0.5), random_state=0)


def test_a_defect_takes_milliseconds() -> None:
    image = np.concatenate([LAYOUTS["rgb8"]] * 2, axis=0)
    image = np.concatenate([image] * 2, axis=1)  # 256 x 256
    for kind in KINDS:  # warm up OpenCV's first calls
        make_defect(image, DefectSpec(kind, 32, 0.3), random_state=0)
    start = time.perf_counter()
    for seed in range(3):
        for kind in KINDS:
            make_defect(image, DefectSpec(kind, 32, 0.3), random_state=seed)
    per_defect = (time.perf_counter() - start) / (3 * len(KINDS))
    assert per_defect < 0.05  # typically 1-5 ms; generous for a shared machine


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidParameterError) as info:
        make_defect(LAYOUTS["rgb8"], DefectSpec("crack", 10, 0.2), random_state=0)
    for kind in KINDS:
        assert kind in str(info.value)


@pytest.mark.parametrize("size", [2.0, 65.0, float("nan"), "big"])
def test_bad_size(size: object) -> None:
    with pytest.raises(InvalidParameterError, match="size"):
        make_defect(LAYOUTS["rgb8"], DefectSpec("spot", size, 0.2), random_state=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("contrast", [0.0, 0.005, 1.5, float("inf")])
def test_bad_contrast(contrast: float) -> None:
    with pytest.raises(InvalidParameterError, match="contrast"):
        make_defect(LAYOUTS["rgb8"], DefectSpec("spot", 10, contrast), random_state=0)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.float32),
        np.zeros((20, 64), dtype=np.uint8),
        np.zeros((64,), dtype=np.uint8),
    ],
    ids=["rgba", "float", "too-small", "1d"],
)
def test_bad_image(image: np.ndarray) -> None:
    with pytest.raises(InvalidImageError, match="expected|at least"):
        make_defect(image, DefectSpec("spot", 8, 0.2), random_state=0)


def test_source_smaller_than_the_window() -> None:
    with pytest.raises(InvalidImageError, match="source"):
        make_defect(LAYOUTS["rgb8"], DefectSpec("cutpaste", 40, 0.2), random_state=0,
                    source=np.zeros((32, 32), dtype=np.uint8))


# --------------------------------------------------------------------------- data sets


@pytest.fixture()
def good_dir(tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(6):
        write_png(folder / f"part_{i}.png", textured(64, seed=i))
    return folder


def test_cli_writes_a_set_mvtec_reads(good_dir, tmp_path) -> None:
    out = tmp_path / "synth"
    argv = ["synth", str(good_dir), str(out), "--kinds", "scratch,spot", "missing", "--sizes", "8", "14",
            "--contrast", "0.2", "--n-per", "2", "--seed", "3", "--quiet"]
    assert main(argv) == 0

    category = MVTecCategory(out)
    assert len(category.train_good()) == 4  # 6 goods, a quarter (rounded) held out
    samples = category.test_samples()
    assert category.defect_types() == ["missing", "scratch", "spot"]
    goods = [s for s in samples if s.label == 0]
    defects = [s for s in samples if s.label == 1]
    assert len(goods) == 2 and len(defects) == 3 * 2 * 2
    for sample in defects:
        assert sample.mask_path is not None
        mask = read_image(sample.mask_path)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}

    record = json.loads((out / "synthesis.json").read_text())
    assert len(record["defects"]) == len(defects)
    sources = {entry["file"]: entry["source"] for entry in record["test_good"]}
    for entry in record["test_good"]:
        assert (out / entry["file"]).read_bytes() == Path(entry["source"]).read_bytes()
    for entry in record["defects"][:4]:
        # Every image can be made again from what the record says.
        base = read_image(sources[entry["base"]])
        donor = None if entry["donor"] == entry["base"] else read_image(sources[entry["donor"]])
        again, mask = make_defect(base, DefectSpec(entry["kind"], entry["size"], entry["contrast"]),
                                  random_state=entry["seed"], source=donor)
        assert np.array_equal(again, read_image(out / entry["file"]))
        assert np.array_equal(mask, read_image(out / entry["mask"]) > 0)
        assert change(base, again)[~mask].max() == 0

    again = tmp_path / "again"
    assert main(argv[:2] + [str(again)] + argv[3:]) == 0
    for path in sorted(out.rglob("*.png")):
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes()


def test_cli_reports_an_unknown_kind(good_dir, tmp_path, capsys) -> None:
    assert main(["synth", str(good_dir), str(tmp_path / "x"), "--kinds", "crack", "--quiet"]) == 2
    assert "invalid_parameter" in capsys.readouterr().err


def test_too_large_a_size_fails_before_writing(good_dir, tmp_path) -> None:
    out = tmp_path / "synth"
    with pytest.raises(InvalidParameterError, match="half the shorter side"):
        synthesize_dataset(sorted(good_dir.iterdir()), out, kinds=["spot"], sizes=[40], contrasts=[0.2])
    assert not out.exists()


def test_needs_two_good_images(good_dir, tmp_path) -> None:
    with pytest.raises(DatasetError):
        synthesize_dataset(sorted(good_dir.iterdir())[:1], tmp_path / "s", kinds=["spot"])


def test_cli_kinds_help_matches_the_library() -> None:
    from anomaly.cli import synth

    assert synth._KINDS_HELP.split() == list(KINDS)
