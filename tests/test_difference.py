"""Difference (variation) model: defects pasted at known places, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest

from alignment.difference import DifferenceModel
from anomaly.bundle import load_bundle, save_bundle
from anomaly.calibration import Calibration
from anomaly.demo.assembly import render_good
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError

SIZE = 128


def boards(n: int, seed: int) -> list[np.ndarray]:
    """Good gray boards, each shifted and turned a little (so registration is needed)."""
    out = []
    for i in range(n):
        rgb = render_good(SIZE, np.random.default_rng([seed, i]), noise=1.0)
        out.append((rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def goods() -> list[np.ndarray]:
    return boards(14, seed=1)


@pytest.fixture(scope="module")
def model(goods) -> DifferenceModel:
    return DifferenceModel().fit(goods)


@pytest.fixture(scope="module")
def fresh() -> list[np.ndarray]:
    return boards(4, seed=2)


def paste(image: np.ndarray, value: int, box=(70, 40, 8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Paste a flat square (x, y, w, h); return the image and its mask."""
    x, y, w, h = box
    out = image.copy()
    out[y : y + h, x : x + w] = value
    mask = np.zeros(image.shape[:2], bool)
    mask[y : y + h, x : x + w] = True
    return out, mask


def test_good_boards_stay_within_tolerance(model, fresh):
    result = model.score(fresh)
    assert result.scores.max() < 1.0, result.scores
    assert all(m.shape == (SIZE, SIZE) and m.dtype == np.float32 for m in result.maps)


@pytest.mark.parametrize("value,sign", [(255, 1), (0, -1)])
def test_pasted_defect_is_found_where_it_is_with_its_polarity(model, fresh, value, sign):
    image, mask = paste(fresh[0], value)
    result = model.score([image])
    amap, signed = result.maps[0], result.extras["signed"][0]
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert mask[y, x]
    assert np.sign(signed[y, x]) == sign
    assert result.scores[0] > 3 * model.score(fresh[:1]).scores[0]


def test_bright_and_dark_have_their_own_tolerances(goods, fresh):
    # A bright tolerance too wide to see the bright paste; dark tolerance as usual.
    model = DifferenceModel(abs_tol=[0.9, 0.04], rel_tol=[3.0, 3.0]).fit(goods)
    bright, _ = paste(fresh[0], 255)
    dark, _ = paste(fresh[0], 0)
    scores = model.score([bright, dark]).scores
    assert scores[0] < 1.0 < scores[1]


def test_robust_statistic_ignores_a_blemished_good(goods, fresh):
    blemished = [paste(g, 255, (70, 40, 8, 8))[0] if i < 2 else g for i, g in enumerate(goods)]
    image, _ = paste(fresh[0], 255)
    plain = DifferenceModel(statistic="mean").fit(blemished).score([image]).scores[0]
    robust = DifferenceModel(statistic="robust").fit(blemished).score([image]).scores[0]
    assert robust > 2 * plain


def test_ignore_region_and_roi_hide_what_they_should(goods, fresh):
    image, _ = paste(fresh[0], 255, (70, 40, 8, 8))
    ignoring = DifferenceModel(ignore_regions=[[60, 30, 30, 30]]).fit(goods)
    assert ignoring.score([image]).scores[0] < 1.0
    elsewhere = DifferenceModel(roi=[0, 70, 128, 58]).fit(goods)
    assert elsewhere.score([image]).scores[0] < 1.0


def test_gain_offset_correction_absorbs_a_change_of_light(goods, fresh):
    brighter = np.clip(fresh[0].astype(np.float32) * 1.2 + 10, 0, 255).astype(np.uint8)
    plain = DifferenceModel().fit(goods).score([brighter]).scores[0]
    corrected = DifferenceModel(illumination="gain_offset").fit(goods).score([brighter]).scores[0]
    assert plain > 1.0 > corrected


def test_colour_model_sees_a_colour_swap_of_equal_brightness():
    rgb_goods = [render_good(SIZE, np.random.default_rng([3, i]), noise=1.0) for i in range(10)]
    test = render_good(SIZE, np.random.default_rng([4, 0]), noise=1.0)
    swapped = test.copy()
    # Swap red and blue in a patch of bare board: luminance barely changes, colour does.
    swapped[52:64, 36:48] = swapped[52:64, 36:48][..., [2, 1, 0]]
    colour = DifferenceModel(color=True).fit(rgb_goods).score([test, swapped]).scores
    gray = DifferenceModel().fit(rgb_goods).score([swapped]).scores
    assert colour[1] > 1.0 > colour[0]
    assert gray[0] < 1.0


def test_other_size_is_refused_unless_image_size_is_given(goods, model):
    with pytest.raises(InvalidImageError, match="128 x 128"):
        model.score([np.zeros((100, 128), np.uint8)])
    resized = DifferenceModel(image_size=SIZE).fit(goods)
    big = np.kron(goods[0], np.ones((2, 2), np.uint8))
    result = resized.score([big])
    assert result.maps[0].shape == big.shape


def test_channel_count_mismatch_is_refused(model, fresh):
    colour = np.stack([fresh[0], fresh[0], fresh[0] // 2], axis=2)
    with pytest.raises(InvalidImageError, match="gray"):
        model.score([colour])


def test_gray_stored_as_rgb_is_taken_as_gray(goods, model, fresh):
    """Three equal channels are gray content in an RGB file: the gray model takes it as gray."""
    as_rgb = [np.stack([g] * 3, axis=2) for g in goods]
    mixed = DifferenceModel().fit(goods[:7] + as_rgb[7:])
    assert mixed.input_channels_ == 1
    defect, _ = paste(fresh[0], 255)
    for image in (fresh[0], defect):
        gray = model.score([image])
        rgb = model.score([np.stack([image] * 3, axis=2)])
        assert rgb.scores[0] == gray.scores[0]
        np.testing.assert_array_equal(rgb.maps[0], gray.maps[0])
        assert mixed.score([np.stack([image] * 3, axis=2)]).scores[0] == mixed.score([image]).scores[0]


@pytest.mark.parametrize("value,word", [(0, "blank"), (255, "saturated"), (128, "uniform")])
def test_blank_and_saturated_images_are_refused(model, value, word):
    with pytest.raises(InvalidImageError, match=word):
        model.score([np.full((SIZE, SIZE), value, np.uint8)])


def test_partly_saturated_image_is_refused(model, fresh):
    glare = fresh[0].copy()
    glare[:, : SIZE * 2 // 3] = 255
    with pytest.raises(InvalidImageError, match="saturated"):
        model.score([glare])


def test_part_outside_the_field_of_view_is_an_alignment_error(model, fresh):
    moved = np.roll(fresh[0], SIZE // 2, axis=1)
    moved[:, : SIZE // 2] = 72  # conveyor colour where the part left
    with pytest.raises(AlignmentError):
        model.score([moved])


def test_another_product_is_not_aligned_silently(model):
    rng = np.random.default_rng(0)
    other = (rng.random((SIZE, SIZE)) * 255).astype(np.uint8)
    with pytest.raises(AlignmentError, match="could not align|not found|field of view"):
        model.score([other])


def test_goods_of_mixed_sizes_or_channels_are_refused(goods):
    with pytest.raises(InvalidImageError, match="image_size"):
        DifferenceModel().fit([goods[0], goods[1][:100]])
    with pytest.raises(InvalidImageError, match="channel"):
        DifferenceModel().fit([goods[0], np.stack([goods[1], goods[1], goods[1] // 2], axis=2)])


def test_bad_parameters_raise(goods):
    for params in ({"statistic": "max"}, {"abs_tol": 0, "rel_tol": 0}, {"motion": "warp"},
                   {"roi": [0, 0, 0, 5]}, {"illumination": "auto"}, {"abs_tol": [1, 2, 3]}):
        with pytest.raises(InvalidParameterError):
            DifferenceModel(**params).fit(goods[:3])


def test_untextured_input_without_registration(goods, fresh):
    model = DifferenceModel(motion="none", abs_tol=0.1).fit(goods)
    image, mask = paste(fresh[0], 255)
    amap = model.score([image]).maps[0]
    assert mask[np.unravel_index(np.argmax(amap), amap.shape)]


def test_bundle_keeps_masks_and_tolerances(goods, fresh, tmp_path):
    model = DifferenceModel(abs_tol=[0.05, 0.04], ignore_regions=[[0, 0, 10, 10]], roi=[0, 0, 128, 128]).fit(goods)
    save_bundle(model, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b").detector
    image, _ = paste(fresh[1], 0)
    a, b = model.score([image]), loaded.score([image])
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps[0], b.maps[0])
    assert loaded.reference_index_ == model.reference_index_
    assert load_bundle(tmp_path / "b").manifest["training"]["reference_index"] == model.reference_index_


def test_a_good_refused_out_of_fold_is_counted_not_fatal(goods):
    """A good part pushed 12 px out of frame aligns in the template but not for a fold model
    that did not see it: training records it as an ALIGNMENT_FAILED rate and calibrates
    its thresholds on the goods that align."""
    from anomaly.calibration import calibrate
    from anomaly.folds import assign_folds, score_out_of_fold
    from anomaly.training import TrainingOptions, fit_calibrated

    moved = np.full_like(goods[0], 72)
    moved[:, 12:] = goods[0][:, :-12]
    images = goods[1:] + [moved]
    model = fit_calibrated("difference", images, TrainingOptions())
    refused = model.calibration.alignment_refused
    assert refused["goods"] == [13] and (refused["k"], refused["n"]) == (1, 14)
    assert refused["ci95"][0] < 1 / 14 < refused["ci95"][1]
    assert "did not align (1 of 14 out of fold)" in model.calibration.detection["summary"]

    folds = assign_folds(len(images), 5, 0)
    oof = score_out_of_fold(images, folds, lambda j, inside: DifferenceModel().fit(
        [images[i] for i in np.flatnonzero(folds != j)]), max_map_side=256)
    assert oof.extras["refused"] == [13] and np.isnan(oof.scores[13]) and oof.maps[13] is None
    expected = calibrate(oof.scores[:13], n_folds=5, split_seed=0,
                         good_map_maxima=[float(m.max()) for m in oof.maps[:13]])
    assert model.calibration.t_ng == pytest.approx(expected.t_ng)
    assert model.calibration.n_good == 13


def test_detection_rates_count_a_refused_synthetic_part_as_rejected():
    from anomaly.detection_estimate import detection_rates

    detection = {"kinds": ["spot"], "sizes_px": [8.0],
                 "samples": [["spot", 8.0, None, None], ["spot", 8.0, 0.5, 0.1], ["spot", 8.0, 2.0, 3.0],
                             ["spot", 8.0, 0.2, 0.1]]}
    rates = detection_rates(detection, Calibration(t_ng=1.0, t_review=0.4, pixel_threshold=1.0))["rates"]["spot"]["8"]
    assert rates == {"n": 4, "ng": 0.5, "flagged": 0.75, "located": 0.25}


def test_a_refused_good_is_named_by_its_file(goods, tmp_path):
    from anomaly.imageio import write_png

    paths = []
    for i, image in enumerate([goods[0], goods[1], goods[2][:100]]):
        paths.append(tmp_path / f"good-{i}.png")
        write_png(paths[-1], image)
    with pytest.raises(InvalidImageError, match=r"good image 2 \(.*good-2\.png\) is 128 x 100 pixels"):
        DifferenceModel().fit(paths)


def test_batch_or_each_singles_out_the_refused_parts():
    from anomaly.detectors.base import batch_or_each
    from anomaly.metrics import rank_refused_above

    calls = []

    def call(batch):
        calls.append(list(batch))
        if "bad" in batch:
            raise AlignmentError("part not found")
        return [item.upper() for item in batch]

    assert batch_or_each(call, ["a", "b"]) == ["A", "B"] and calls == [["a", "b"]]
    calls.clear()
    out = batch_or_each(call, ["a", "bad", "b"])
    assert out[0] == "A" and isinstance(out[1], AlignmentError) and out[2] == "B"
    assert calls == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    calls.clear()
    assert isinstance(batch_or_each(call, ["bad"])[0], AlignmentError) and calls == [["bad"]]  # not retried
    assert rank_refused_above([0.5, None, 2.0], 3.0) == [0.5, 4.0, 2.0]
    assert rank_refused_above([None, None]) == [1.0, 1.0]
