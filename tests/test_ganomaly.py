"""GANomaly and Skip-GANomaly: training lowers the loss, a pasted defect scores high, resume is exact."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from anomaly.bundle import load_bundle, save_bundle
from anomaly.detectors.gan_training import CHECKPOINT_FILE, augment
from anomaly.detectors.ganomaly import GANomaly, SkipGANomaly
from anomaly.detectors.ganomaly_nets import GanomalyGenerator, UNetGenerator, num_stages
from anomaly.detectors.registry import create_detector, get_detector_class
from anomaly.errors import InvalidParameterError

VARIANTS = ("ganomaly", "skip-ganomaly")
SMALL = {"image_size": 32, "batch_size": 8, "n_features": 16, "latent_dim": 32}


def texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A plain generated texture: a fine, smooth random pattern around mid-gray, ``(size, size)`` uint8."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.0)
    return np.clip(120 + 12 * noise / noise.std(), 0, 255).astype(np.uint8)


def with_defect(image: np.ndarray) -> np.ndarray:
    """The same image with a bright square pasted at rows/cols 24..36."""
    out = image.copy()
    out[24:36, 24:36] = 235
    return out


@pytest.fixture(scope="module")
def textures() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [texture(rng) for _ in range(24)]


def test_registry_maps_both_names():
    assert get_detector_class("ganomaly") is GANomaly
    assert get_detector_class("skip-ganomaly") is SkipGANomaly


@pytest.mark.parametrize("name", VARIANTS)
def test_training_decreases_the_loss(name, textures):
    det = create_detector(name, {**SMALL, "max_epochs": 8, "patience": None}).fit(textures)
    history = det.history_
    assert len(history["epoch"]) == 8
    for key in ("contextual", "generator"):
        assert history[key][-1] < history[key][0], f"{name} {key}: {history[key]}"
    assert history["validation"][-1] < history["validation"][0]


@pytest.mark.parametrize("name", VARIANTS)
def test_pasted_defect_scores_higher_than_good_textures(name, textures):
    det = create_detector(name, {**SMALL, "max_epochs": 6}).fit(textures)
    rng = np.random.default_rng(99)
    good = [texture(rng) for _ in range(4)]
    bad = [with_defect(texture(rng)) for _ in range(4)]
    result = det.score(good + bad)
    assert result.scores[4:].min() > result.scores[:4].max(), result.scores
    for amap in result.maps[4:]:
        y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
        assert 24 <= y < 36 and 24 <= x < 36, (y, x)


@pytest.mark.parametrize("name", VARIANTS)
def test_resume_continues_from_the_saved_step(name, textures, tmp_path):
    params = {**SMALL, "max_epochs": 3, "patience": None, "checkpoint_dir": str(tmp_path / "ckpt")}
    # 22 training images (2 held out), batch 8: 3 steps an epoch; step 4 is mid-epoch.
    interrupted = create_detector(name, {**params, "max_steps": 4}).fit(textures)
    assert interrupted.training_meta()["steps"] == 4
    saved = torch.load(tmp_path / "ckpt" / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert saved["step"] == 4 and saved["epoch"] == 1

    resumed = create_detector(name, params).fit(textures)
    meta = resumed.training_meta()
    assert meta["resumed_from_step"] == 4
    assert meta["steps"] == 9 and meta["epochs"] == 3

    straight = create_detector(name, {**params, "checkpoint_dir": None}).fit(textures)
    assert straight.training_meta()["resumed_from_step"] == 0
    np.testing.assert_array_equal(resumed.history_["generator"], straight.history_["generator"])
    np.testing.assert_array_equal(resumed.score(textures[:4]).scores, straight.score(textures[:4]).scores)


def test_checkpoint_of_another_configuration_is_not_resumed(textures, tmp_path):
    params = {**SMALL, "max_epochs": 1, "checkpoint_dir": str(tmp_path)}
    create_detector("ganomaly", params).fit(textures)
    other = create_detector("ganomaly", {**params, "w_con": 10.0}).fit(textures)
    assert other.training_meta()["resumed_from_step"] == 0
    again = create_detector("ganomaly", {**params, "w_con": 10.0, "max_epochs": 2}).fit(textures)
    assert again.training_meta()["resumed_from_step"] == 3


@pytest.mark.parametrize("name", VARIANTS)
def test_bundle_holds_state_dicts_and_loss_curves(name, textures, tmp_path):
    det = create_detector(name, {**SMALL, "max_epochs": 2}).fit(textures)
    manifest = save_bundle(det, tmp_path / "bundle")
    assert {"generator.pt", "loss_curves.png", "state.npz"} <= set(manifest["files"])
    png = (tmp_path / "bundle" / "loss_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
    state = torch.load(tmp_path / "bundle" / "generator.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert manifest["training"]["epochs"] == 2 and manifest["training"]["n_validation"] == 2
    loaded = load_bundle(tmp_path / "bundle").detector
    np.testing.assert_array_equal(loaded.history_["generator"], det.history_["generator"])


def test_best_held_out_epoch_is_kept(textures):
    det = create_detector("ganomaly", {**SMALL, "max_epochs": 5, "patience": None}).fit(textures)
    meta = det.training_meta()
    assert meta["best_epoch"] == int(np.argmin(det.history_["validation"])) + 1


def test_early_stopping_stops_after_patience_epochs_without_improvement(textures, monkeypatch):
    # The held-out loss is made to rise after the first epoch. (A tiny learning rate is not
    # enough: float rounding in the batch-norm recalibration still moves it a little.)
    from anomaly.detectors import gan_training

    losses = iter(np.linspace(1.0, 2.0, 10))
    monkeypatch.setattr(gan_training, "_validation", lambda *args: float(next(losses)))
    det = create_detector("skip-ganomaly", {**SMALL, "max_epochs": 10, "patience": 2}).fit(textures)
    meta = det.training_meta()
    assert meta["stopped_early"] and meta["epochs"] == 3 and meta["best_epoch"] == 1


def test_fit_leaves_the_global_random_state_alone(textures):
    before = torch.get_rng_state()
    create_detector("ganomaly", {**SMALL, "max_epochs": 1}).fit(textures[:8])
    assert torch.equal(before, torch.get_rng_state())


def test_combined_score_uses_saved_good_statistics_only(textures):
    det = create_detector("ganomaly", {**SMALL, "max_epochs": 2, "image_score": "combined"}).fit(textures)
    terms = det.score_terms(textures[:3])
    stats = det.score_stats_
    expected = 0.9 * (terms["reconstruction"] - stats["reconstruction_mean"]) / stats["reconstruction_std"] + 0.1 * (
        terms["latent"] - stats["latent_mean"]
    ) / stats["latent_std"]
    np.testing.assert_allclose(det.score(textures[:3]).scores, expected, rtol=1e-6)
    latent = create_detector("ganomaly", {**SMALL, "max_epochs": 2}).fit(textures)
    np.testing.assert_allclose(latent.score(textures[:3]).scores, latent.score_terms(textures[:3])["latent"])


def test_non_square_input_gives_maps_at_the_image_size():
    rng = np.random.default_rng(5)
    images = [texture(rng, 96)[:48] for _ in range(6)]
    det = create_detector("skip-ganomaly", {**SMALL, "image_size": [32, 64], "max_epochs": 1}).fit(images)
    maps = det.score([images[0], texture(rng, 80)]).maps
    assert maps[0].shape == (48, 96) and maps[1].shape == (80, 80)


@pytest.mark.parametrize("size, stages", [((32, 32), 3), ((96, 96), 4), ((64, 128), 4), ((16, 48), 2)])
def test_networks_reconstruct_at_the_input_size(size, stages):
    assert num_stages(size) == stages
    x = torch.zeros(2, 3, *size)
    x_hat, z, z_hat = GanomalyGenerator(size, 3, 8, 16)(x)
    assert x_hat.shape == x.shape and z.shape == z_hat.shape == (2, 16, 1, 1)
    for skip_from in (1, stages + 1):
        assert UNetGenerator(size, 3, 8, 16, skip_from=skip_from)(x).shape == x.shape


@pytest.mark.parametrize(
    "params",
    [{"image_size": 100}, {"image_size": 8}, {"image_score": "mean"}, {"flip": "diagonal"}, {"max_steps": 0},
     {"reconstruction_weight": 1.5}, {"validation_fraction": 0.9}, {"patience": 0}, {"batch_size": 0}],
)
def test_bad_parameters_are_refused_at_fit(params, textures):
    det = create_detector("ganomaly", {**SMALL, **params})
    with pytest.raises(InvalidParameterError):
        det.fit(textures[:4])


def test_skip_from_beyond_the_depth_is_refused(textures):
    with pytest.raises(InvalidParameterError):
        create_detector("skip-ganomaly", {**SMALL, "skip_from": 5}).fit(textures[:4])


def test_augmentation_is_seeded_and_keeps_the_batch_shape():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    a = augment(x, 3, "both", torch.Generator().manual_seed(1))
    b = augment(x, 3, "both", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment(x, 0, "none", torch.Generator()), x)
