"""The feature discriminator: trained on goods and made defects, resumable, kept apart from the detection estimate."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.detectors import discriminator as module
from anomaly.detectors.discriminator import TRAIN_KINDS, TRAIN_SEED_OFFSET, FeatureDiscriminator, coverage
from anomaly.detectors.registry import create_detector
from anomaly.errors import DatasetError, InvalidParameterError
from anomaly.geometry import Geometry

FAST = {"image_size": 128, "batch_size": 8, "bank_size": 512, "epochs": 10}


def test_coverage_marks_the_cells_a_mask_covers():
    mask = np.zeros((128, 128), bool)
    mask[64:96, 32:64] = True  # cells (8..11, 4..7) of a 16 x 16 grid of 8 px cells at 128 px
    cells = coverage(mask, Geometry((128, 128)), (16, 16)).reshape(16, 16)
    assert cells[8:12, 4:8].min() == pytest.approx(1.0) and cells.sum() == pytest.approx(16.0)
    assert cells[:8].max() == 0 and cells[:, 8:].max() == 0


def test_training_stops_early_keeps_its_best_epoch_and_records_its_defects(good_parts):
    model = create_detector("discriminator", {**FAST, "epochs": 40, "patience": 2, "held_out_share": 0.25}
                            ).fit(good_parts)
    meta = model.training_meta()
    losses = [h["val_loss"] for h in meta["history"]]
    assert meta["n_held_out"] == 3 and meta["n_train"] == len(good_parts) - 3
    assert meta["best_epoch"] == int(np.argmin(losses)) + 1
    assert len(losses) == 40 or len(losses) - meta["best_epoch"] == 2  # stopped 2 epochs after its best
    synthetic = meta["synthetic"]
    # The training defects' seed is neither the calibration estimate's (the training seed) nor its + 1000.
    assert synthetic["kinds"] == list(TRAIN_KINDS) and synthetic["seed"] == TRAIN_SEED_OFFSET
    assert synthetic["defect_patches"] > 0
    assert {"missing", "deform"}.isdisjoint(TRAIN_KINDS)


def test_pasted_defect_is_the_top_of_the_map_and_outscores_the_goods(good_parts, test_parts):
    images, mask = test_parts
    result = create_detector("discriminator", FAST).fit(good_parts).score(images)
    assert result.scores[3:].min() > result.scores[:3].max()
    for amap in result.maps[3:]:
        y, x = np.unravel_index(np.argmax(amap), amap.shape)
        assert mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5].any()  # within 4 px of the pasted square


def test_residual_to_the_goods_at_each_cell_finds_the_pasted_defect_and_survives_the_bundle(good_parts, test_parts,
                                                                                             tmp_path):
    from anomaly.bundle import load_bundle, save_bundle

    images, mask = test_parts
    model = create_detector("discriminator", {**FAST, "position": True}).fit(good_parts)
    mean, spread = model.places_
    assert mean.shape == spread.shape == (model.feature_grid[0] * model.feature_grid[1], len(model.feature_mean_))
    assert spread.min() > 0
    result = model.score(images)
    assert result.scores[3:].min() > result.scores[:3].max()
    y, x = np.unravel_index(np.argmax(result.maps[3]), result.maps[3].shape)
    assert mask[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5].any()
    save_bundle(model, tmp_path / "bundle")
    np.testing.assert_array_equal(load_bundle(tmp_path / "bundle").detector.score(images).scores, result.scores)


@pytest.mark.parametrize("inputs", [1, 2])
def test_the_folded_scoring_head_computes_what_the_trained_head_does(inputs):
    import torch

    torch.manual_seed(0)
    head = module._Head(24, 64, inputs)
    with torch.no_grad():  # batch-norm statistics as after training, far from the initial ones
        head.discriminator[1].running_mean.uniform_(-2, 2)
        head.discriminator[1].running_var.uniform_(0.5, 3)
        head.discriminator[1].weight.uniform_(0.5, 2)
        head.discriminator[1].bias.uniform_(-1, 1)
    x = torch.randn(500, 24 * inputs)
    scoring = head.for_scoring()
    assert isinstance(scoring, module._FoldedHead) == (inputs == 1)  # 2 x 24 x 64 > 2 x 24 x 24 + 24 x 64
    with torch.no_grad():
        np.testing.assert_allclose(scoring(x).numpy(), head.eval()(x).numpy(), rtol=1e-5, atol=1e-5)


def test_soft_weights_share_a_tie_and_move_little_with_a_rounding():
    from anomaly.detectors.discriminator import soft_weights

    tie = soft_weights(np.array([[3.0, 3.0, 5.0]], np.float32), temperature=1.0)
    assert tie[0, 0] == pytest.approx(tie[0, 1]) and tie[0, 2] < 1e-6
    nudged = soft_weights(np.array([[3.0, 3.0 + 1e-6, 5.0]], np.float32), temperature=1.0)
    assert np.abs(nudged - tie).max() < 1e-4  # a hard choice would move a whole weight of 1
    clear = soft_weights(np.array([[1.0, 3.0]], np.float32), temperature=0.1)
    assert clear[0, 0] == pytest.approx(1.0)


def test_soft_residual_finds_the_pasted_defect_and_survives_the_bundle(good_parts, test_parts, tmp_path):
    from anomaly.bundle import load_bundle, save_bundle

    images, mask = test_parts
    model = create_detector("discriminator", {**FAST, "residual": True, "residual_softness": 0.05}).fit(good_parts)
    assert model.residual_scale_ > 0
    result = model.score(images)
    assert result.scores[3:].min() > result.scores[:3].max()
    save_bundle(model, tmp_path / "bundle")
    np.testing.assert_array_equal(load_bundle(tmp_path / "bundle").detector.score(images).scores, result.scores)


@pytest.mark.parametrize("extra", [{}, {"ascent_steps": 3}], ids=["fixed-noise", "fresh-noise-with-ascent"])
def test_an_interrupted_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(good_parts, test_parts,
                                                                                        tmp_path, monkeypatch, extra):
    images, _ = test_parts
    params = {**FAST, "epochs": 6, "patience": 6, **extra}
    straight = create_detector("discriminator", params).fit(good_parts).score(images).scores

    save = module._save_checkpoint

    def interrupted(path, run_id, head, optimiser, gen, state):
        save(path, run_id, head, optimiser, gen, state)
        if state["epoch"] == 3:
            raise KeyboardInterrupt  # the process is stopped after epoch 3's checkpoint

    monkeypatch.setattr(module, "_save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_detector("discriminator", {**params, "checkpoint_dir": str(tmp_path)}).fit(good_parts)
    monkeypatch.setattr(module, "_save_checkpoint", save)
    resumed = create_detector("discriminator", {**params, "checkpoint_dir": str(tmp_path)}).fit(good_parts)
    assert resumed.training_meta()["resumed_from_epoch"] == 3
    assert len(resumed.training_meta()["history"]) == 6
    np.testing.assert_allclose(resumed.score(images).scores, straight, rtol=1e-5, atol=1e-6)


def test_gradient_ascent_moves_the_noise_towards_good_within_its_shell(good_parts, test_parts):
    import torch

    images, mask = test_parts
    model = create_detector("discriminator", {**FAST, "residual": False, "ascent_steps": 5}).fit(good_parts)
    result = model.score(images)
    assert result.scores[3:].min() > result.scores[:3].max()  # the pasted squares, over the goods
    x = model._standard(model._patch_features(good_parts[:2]).reshape(-1, len(model.feature_mean_)))
    source = module._NoiseSource(x, np.zeros(len(x), np.int64), None, np.zeros((0, x.shape[1]), np.float32), None)
    outer = model.noise_std * np.sqrt(x.shape[1])
    noisy, logits = {}, {}
    for steps in (0, 5):
        model.ascent_steps = steps
        noisy[steps] = model._noisy(model._head, source, torch.Generator().manual_seed(0)).numpy()
        with torch.no_grad():
            logits[steps] = model._head.eval()(torch.from_numpy(noisy[steps])).numpy()
    length = np.linalg.norm(noisy[5] - x, axis=1)  # brought back into the Gaussian draws' shell after every step
    assert length.min() >= 0.5 * outer * (1 - 1e-4) and length.max() <= outer * (1 + 1e-4)
    # Draws well inside the shell are not projected (5 steps move them by 2.5 % of its outer radius at most):
    # on them the push is the ascent alone, towards what the discriminator sees as good.
    inside = np.abs(np.linalg.norm(noisy[0] - x, axis=1) / outer - 0.75) < 0.2
    assert inside.sum() > 100 and logits[5][inside].mean() < logits[0][inside].mean()


def test_a_checkpoint_of_other_parameters_is_not_resumed(good_parts, tmp_path):
    create_detector("discriminator", {**FAST, "epochs": 2, "checkpoint_dir": str(tmp_path)}).fit(good_parts)
    other = create_detector("discriminator", {**FAST, "epochs": 2, "noise_std": 0.3,
                                              "checkpoint_dir": str(tmp_path)}).fit(good_parts)
    assert other.training_meta()["resumed_from_epoch"] == 0


def test_made_defects_teach_more_than_feature_noise_alone(good_parts, test_parts):
    images, _ = test_parts
    margin = lambda s: (s[3:].min() - s[:3].max()) / np.ptp(s)  # noqa: E731 - defective minus good, relative
    taught = create_detector("discriminator", FAST).fit(good_parts).score(images).scores
    plain = create_detector("discriminator", {**FAST, "synthetic_per_image": 0}).fit(good_parts).score(images).scores
    assert margin(taught) > 0 and margin(taught) >= margin(plain) - 0.05


def test_cross_fitting_trains_each_fold_without_its_goods(good_parts):
    model = FeatureDiscriminator(**FAST)
    result = model.cross_fit_scores(good_parts, n_folds=3)
    assert result.scores.shape == (len(good_parts),) and np.all(np.isfinite(result.scores))
    assert model.fitted_ and model.n_train_ == len(good_parts)  # 10 % of 12 goods is too few to stop early on


def test_bad_settings_and_too_few_goods_are_refused(good_parts):
    with pytest.raises(InvalidParameterError):
        FeatureDiscriminator(resize="tile")._validate_params()
    with pytest.raises(InvalidParameterError):
        FeatureDiscriminator(held_out_share=0.6)._validate_params()
    with pytest.raises(InvalidParameterError, match="needs residual=true"):
        FeatureDiscriminator(residual_softness=0.05)._validate_params()
    with pytest.raises(InvalidParameterError):
        FeatureDiscriminator(ascent_steps=-1)._validate_params()
    with pytest.raises(DatasetError, match="at least 2 good images"):
        create_detector("discriminator", FAST).fit(good_parts[:1])


def test_training_flow_calibrates_on_fold_models_and_marks_the_kinds_it_trained_on(good_parts, test_parts, tmp_path):
    """The product's one training path: cross-fitted thresholds, a bundle, and an honest detection estimate."""
    from anomaly.bundle import load_bundle, save_bundle
    from anomaly.synthesis import KINDS
    from anomaly.training import TrainingOptions, fit_calibrated

    images, _ = test_parts
    model = fit_calibrated("discriminator", good_parts, TrainingOptions(n_folds=3), params=FAST)
    detection = model.calibration.detection
    assert detection["trained_on"]["kinds"] == sorted(set(TRAIN_KINDS) & set(KINDS))
    assert detection["random_state"] != detection["trained_on"]["seed"]
    assert "fair estimate" in detection["summary"]
    assert np.all(model.detector.score(images).scores[3:] > model.calibration.t_ng)
    save_bundle(model.detector, tmp_path / "bundle", calibration=model.calibration)
    loaded = load_bundle(tmp_path / "bundle").detector
    np.testing.assert_allclose(loaded.score(images).scores, model.detector.score(images).scores, rtol=1e-5)

