"""The assembly demo product: layout, determinism, exact masks, and `difference` finds its faults."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest

from alignment.difference import DifferenceModel
from anomaly.datasets import MVTecCategory
from anomaly.demo.assembly import DEFECT_TYPES, LAYOUT, apply_fault, generate_assembly, render_defective, render_good
from anomaly.errors import InvalidParameterError
from anomaly.imageio import read_image


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    root = generate_assembly(tmp_path_factory.mktemp("demo"), n_train=14, n_test_good=4, n_test_per_defect=3,
                             size=192, seed=3)
    return MVTecCategory(root)


def test_layout_is_mvtec_with_masks_for_every_defect(category):
    assert len(category.train_good()) == 14
    assert category.defect_types() == sorted(DEFECT_TYPES)
    samples = category.test_samples()
    assert sum(s.label == 0 for s in samples) == 4
    for sample in samples:
        image = read_image(sample.path)
        assert image.shape == (192, 192, 3) and image.dtype == np.uint8
        if sample.label:
            mask = sample.read_mask(image.shape[:2])
            assert mask is not None and 20 < mask.sum() < 0.2 * mask.size


def test_set_is_small_on_disk(category):
    sizes = [p.stat().st_size for p in category.root.rglob("*.png")]
    assert len(sizes) == 14 + 4 + 9 + 9
    assert sum(sizes) / len(sizes) < 30_000  # bytes per file at 192 px, noise-free default


def test_same_seed_same_pixels_and_faults_change_only_the_mask():
    a = render_good(128, np.random.default_rng(5))
    b = render_good(128, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    for kind in DEFECT_TYPES:
        image, mask = render_defective(128, kind, np.random.default_rng(9))
        good = render_good(128, np.random.default_rng(9))
        # Same pose draws: outside the mask the faulty board is the good board.
        changed = np.abs(image.astype(int) - good.astype(int)).max(axis=2) > 1
        assert mask.any() and not (changed & ~mask).any()


def test_faults_are_the_fool_proofing_kinds():
    rng = np.random.default_rng(0)
    missing = apply_fault(LAYOUT, "missing", rng)
    assert sum(not c.present for c in missing) == 1
    swapped = apply_fault(LAYOUT, "swapped", rng)
    changed = [c.name for c, o in zip(swapped, LAYOUT) if c.colors != o.colors]
    assert changed in (["R1", "R2"], ["D1", "D2"])
    turned = apply_fault(LAYOUT, "rotated", rng)
    assert [c.kind for c in turned if c.turned][0] in ("ic", "cap", "connector")
    with pytest.raises(InvalidParameterError):
        apply_fault(LAYOUT, "bent", rng)


def test_difference_finds_every_fault_where_it_is(category):
    model = DifferenceModel().fit(category.train_good())
    samples = category.test_samples()
    result = model.score([s.path for s in samples])
    labels = np.array([s.label for s in samples])
    assert result.scores[labels == 1].min() > result.scores[labels == 0].max(), result.scores
    assert result.scores[labels == 0].max() < 1.0  # goods within tolerance
    for sample, amap in zip(samples, result.maps):
        if sample.label:
            mask = sample.read_mask(amap.shape)
            y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
            assert mask[y, x], f"{sample.defect_type}/{sample.path.name}: peak at {(y, x)} outside the mask"


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(InvalidParameterError):
        generate_assembly(tmp_path, n_train=-1)
    with pytest.raises(InvalidParameterError):
        generate_assembly(tmp_path, size=32)
    with pytest.raises(InvalidParameterError):
        generate_assembly(tmp_path, category="../x")


def test_demo_assembly_through_the_cli_flags_every_fault_with_difference(tmp_path, monkeypatch, capsys):
    """``anomaly demo --product assembly`` generates its set, trains ``difference`` and judges it.

    The set is smaller than the demo's default (128 px, 12 goods) so that the test runs in
    seconds; seed 0, as in the demo. Measured: every fault NG (scores 1.5 and up), the six
    good test boards GOOD (scores 0.81 and below).
    """
    import anomaly.demo.assembly as assembly
    from anomaly.cli.main import main

    small = functools.partial(assembly.generate_assembly, n_train=12, n_test_good=6, n_test_per_defect=4, size=128)
    monkeypatch.setattr(assembly, "generate_assembly", small)
    out = tmp_path / "out"
    assert main(["demo", "--product", "assembly", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert (out / "data" / "assembly" / "train" / "good").is_dir()  # generated under --out, not into data/

    table: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        if re.match(r"^(good|missing|swapped|rotated)/\d+\.png ", line):
            label, _, verdict, score, _ = line.split()
            table.setdefault(label.split("/")[0], []).append((verdict, float(score)))
    assert {k: len(v) for k, v in table.items()} == {"good": 6, "missing": 4, "swapped": 4, "rotated": 4}
    for kind in DEFECT_TYPES:
        assert [verdict for verdict, _ in table[kind]] == ["NG"] * 4, (kind, table[kind])
        assert re.search(rf"^  {kind} +4/4 flagged$", text, re.MULTILINE), text
    good_verdicts = [verdict for verdict, _ in table["good"]]
    assert good_verdicts.count("GOOD") >= 5, good_verdicts
    assert max(s for _, s in table["good"]) < min(s for k in DEFECT_TYPES for _, s in table[k])
    assert "defective parts flagged (NG or REVIEW): 12/12" in text
    assert len(list((out / "overlays").glob("*.png"))) == 6 + 3 * 4
    manifest = json.loads((out / "models" / "demo-assembly" / "1" / "manifest.json").read_text())
    assert manifest["detector"] == "difference"
