"""Contract tests run over every registered detector (ARCHITECTURE.md, 'One detector interface')."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anomaly.bundle import load_bundle, save_bundle
from anomaly.detectors import deep
from anomaly.detectors.registry import available_detectors, check_params, create_detector, get_detector_class
from anomaly.errors import InvalidImageError, InvalidParameterError, NotFittedError, UnknownDetectorError
from anomaly.imageio import encode_png

#: Small, fast settings per detector; a detector missing here runs with its defaults.
FAST_PARAMS = {
    "patchcore": {"image_size": 128, "batch_size": 8},
    "padim": {"image_size": 128, "batch_size": 8},
    "discriminator": {"image_size": 128, "batch_size": 8, "bank_size": 512, "epochs": 10},
    "ganomaly": {"image_size": 32, "max_epochs": 2, "batch_size": 8},
    "skip-ganomaly": {"image_size": 32, "max_epochs": 2, "batch_size": 8},
}

DETECTORS = available_detectors()
#: Configurations that change how a detector sees an image, run through the same contract:
#: PatchCore tiled (2 x 2 overlapping 64 px tiles over a 96 px part).
VARIANTS = {"patchcore-tiled": ("patchcore", {"image_size": 64, "resize": "tile", "tile_overlap": 16,
                                              "batch_size": 3})}


def make(name: str):
    """A detector by registry name or :data:`VARIANTS` name, with its fast settings."""
    if name in VARIANTS:
        registered, params = VARIANTS[name]
        return create_detector(registered, params)
    return create_detector(name, FAST_PARAMS.get(name, {}))


def registered(name: str) -> str:
    return VARIANTS[name][0] if name in VARIANTS else name


@pytest.fixture(scope="module", params=DETECTORS + list(VARIANTS))
def fitted(request, good_parts):
    return request.param, make(request.param).fit(good_parts)


def test_registry_lists_the_core_detectors():
    assert {"patchcore", "padim"} <= set(DETECTORS)


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownDetectorError) as info:
        get_detector_class("nope")
    assert "patchcore" in str(info.value)


@pytest.mark.parametrize("name", DETECTORS)
def test_constructor_stores_params_unchanged(name):
    det = make(name)
    params = det.get_params()
    for key, value in FAST_PARAMS.get(name, {}).items():
        assert params[key] == value
    assert create_detector(name, params).get_params() == params
    assert not any(k.endswith("_") for k in vars(det) if not k.startswith("_"))


@pytest.mark.parametrize("name", DETECTORS)
def test_params_are_declared_once_and_checked_without_weights(name, monkeypatch):
    def no_backbone(*args, **kwargs):
        raise AssertionError("checking parameters built a backbone")

    monkeypatch.setattr(deep, "FeatureExtractor", no_backbone)
    cls = get_detector_class(name)
    assert dataclasses.is_dataclass(cls)  # declared with @hyperparameters
    assert cls.param_names() == [f.name for f in dataclasses.fields(cls)]
    params = check_params(name, FAST_PARAMS.get(name, {}))
    assert params == make(name).get_params() and list(params) == cls.param_names()
    with pytest.raises(InvalidParameterError, match="no_such_option.*it takes: "):
        check_params(name, {"no_such_option": 1})
    with pytest.raises(InvalidParameterError, match="image_size"):
        check_params(name, {"image_size": "large"})


@pytest.mark.parametrize("name, params, message", [
    ("patchcore", {"coreset_ratio": 2}, "coreset_ratio"),
    ("patchcore", {"grid_stride": "coarse"}, "grid_stride"),
    ("padim", {"grid_stride": 7}, "grid_stride"),
    ("difference", {"motion": "wobble"}, "motion"),
    ("ganomaly", {"image_score": "loudest"}, "image_score"),
])
def test_check_params_refuses_bad_values(name, params, message):
    if name not in DETECTORS:
        pytest.skip(f"{name} is not installed here")
    with pytest.raises(InvalidParameterError, match=message):
        check_params(name, params)


@pytest.mark.parametrize("name", DETECTORS)
def test_score_before_fit_raises(name, good_parts):
    with pytest.raises(NotFittedError):
        make(name).score(good_parts[:1])


def test_shapes_and_types(fitted, test_parts):
    name, det = fitted
    images, _ = test_parts
    result = det.score(images)
    assert result.scores.shape == (len(images),)
    assert np.all(np.isfinite(result.scores))
    assert len(result.maps) == len(images)
    for image, amap in zip(images, result.maps):
        assert amap.shape == image.shape[:2]
        assert amap.dtype == np.float32


def test_pasted_defect_scores_higher(fitted, test_parts):
    name, det = fitted
    images, _ = test_parts
    scores = det.score(images).scores
    assert scores[3:].min() > scores[:3].max(), f"{name}: {scores}"


def test_score_does_not_depend_on_the_batch(fitted, test_parts):
    name, det = fitted
    images, _ = test_parts
    together = det.score(images)
    for i in (0, 4):
        alone = det.score([images[i]])
        np.testing.assert_allclose(alone.scores[0], together.scores[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.maps[0], together.maps[i], rtol=1e-4, atol=1e-5)


def test_paths_bytes_and_arrays_agree(fitted, test_parts, tmp_path):
    name, det = fitted
    image = test_parts[0][4]
    data = encode_png(image)
    path = tmp_path / "part.png"
    path.write_bytes(data)
    a, b, c = det.score([image]).scores[0], det.score([data]).scores[0], det.score([str(path)]).scores[0]
    assert a == pytest.approx(b, rel=1e-6) and a == pytest.approx(c, rel=1e-6)


def test_fit_is_deterministic(fitted, good_parts, test_parts):
    name, det = fitted
    again = make(name).fit(good_parts)
    np.testing.assert_allclose(again.score(test_parts[0]).scores, det.score(test_parts[0]).scores, rtol=1e-5)


def test_save_load_keeps_the_params(fitted, tmp_path):
    # The manifest records every parameter, and loading constructs the detector from them
    # without changing one.
    name, det = fitted
    before = det.get_params()
    manifest = save_bundle(det, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert manifest["params"] == before == det.get_params()
    assert loaded.detector.get_params() == loaded.manifest["params"] == before


def test_save_load_round_trip_gives_identical_scores(fitted, test_parts, tmp_path):
    name, det = fitted
    save_bundle(det, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.manifest["detector"] == registered(name)
    before, after = det.score(test_parts[0]), loaded.detector.score(test_parts[0])
    np.testing.assert_array_equal(before.scores, after.scores)
    for m0, m1 in zip(before.maps, after.maps):
        np.testing.assert_array_equal(m0, m1)


def test_bad_images_raise_typed_errors(fitted):
    name, det = fitted
    with pytest.raises(InvalidImageError):
        det.score([b"not an image at all"])
    with pytest.raises(InvalidImageError):
        det.score([b""])
    with pytest.raises(InvalidImageError):
        det.score([np.zeros((96, 96, 2), np.uint8)])
    with pytest.raises(InvalidImageError):
        det.score([np.zeros((96,), np.uint8)])


@pytest.mark.parametrize("name", DETECTORS)
def test_fit_rejects_empty_input(name):
    with pytest.raises(InvalidImageError):
        make(name).fit([])


def test_map_maximum_lies_inside_the_pasted_defect(fitted, test_parts):
    name, det = fitted
    images, mask = test_parts
    for amap in det.score(images[3:]).maps:
        y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
        assert mask[y, x], f"{name}: maximum at {(y, x)}, defect at rows 30-41, cols 60-71"
