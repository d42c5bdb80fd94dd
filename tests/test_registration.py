"""Registration: transforms built in, then recovered (alignment.registration)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from alignment.coarse import log_polar_correlation, match_features, phase_correlation
from alignment.local import refine_local
from alignment.registration import Alignment, Registration, RegistrationOptions, estimate_transform, register
from alignment.transforms import corner_rms_error, template_overlap
from alignment.warp import warp_to_image, warp_to_template
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
DEEPPCB = DATASETS / "deeppcb" / "pcb"


def scene(size: int = 256, seed: int = 0) -> np.ndarray:
    """A textured part: smooth random texture plus a few hard-edged shapes, uint8 gray."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 4) * 400.0 - 120.0
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(size // 6, 5 * size // 6, 2))
        cv2.circle(img, (x, y), int(rng.integers(size // 24, size // 10)), float(rng.integers(20, 235)), -1)
    cv2.rectangle(img, (size // 5, size // 3), (size // 2, size // 2), 230, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def similarity(size: int, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    m = np.vstack([cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle_deg, scale), [0, 0, 1]])
    m[:2, 2] += shift
    return m


def move(template: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The image in which the template's content sits at ``truth`` (template -> image)."""
    h, w = template.shape[:2]
    if np.allclose(truth[2], [0, 0, 1]):
        return cv2.warpAffine(template, truth[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return cv2.warpPerspective(template, truth, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


TRUTHS = {
    "translation": similarity(256, 0.0, 1.0, (7.3, -4.6)),
    "rigid": similarity(256, 2.5, 1.0, (-6.2, 3.1)),
    "similarity": similarity(256, -2.0, 1.03, (4.0, 5.5)),
    "affine": np.array([[1.02, 0.015, -3.0], [-0.01, 0.985, 6.0], [0, 0, 1.0]]),
    "homography": np.array([[1.0, 0.01, 2.0], [-0.008, 1.01, -3.0], [2e-5, -1.5e-5, 1.0]]),
}


@pytest.mark.parametrize("motion", list(TRUTHS))
def test_known_transform_is_recovered(motion):
    template = scene()
    truth = TRUTHS[motion]
    result = register(move(template, truth), template, options=RegistrationOptions(motion=motion))
    assert isinstance(result, Registration)
    assert result.matrix.shape == (3, 3)
    assert corner_rms_error(result.matrix, truth, template.shape) < 0.3
    assert result.quality > 0.98


def test_estimate_transform_is_register_without_the_warp():
    template = scene()
    image = move(template, TRUTHS["rigid"])
    options = RegistrationOptions(motion="rigid")
    found = estimate_transform(image, template, options=options)
    registered = register(image, template, options=options)
    assert type(found) is Alignment and isinstance(registered, Alignment)
    np.testing.assert_array_equal(found.matrix, registered.matrix)
    assert (found.quality, found.overlap, found.motion) == (registered.quality, registered.overlap, registered.motion)
    np.testing.assert_array_equal(registered.warped, warp_to_template(image, found.matrix, template.shape))


def test_zero_motion_gives_identity():
    template = scene()
    result = register(template, template, options=RegistrationOptions(motion="affine"))
    assert corner_rms_error(result.matrix, np.eye(3), template.shape) < 0.02
    assert result.quality > 0.999
    assert result.overlap == pytest.approx(1.0)


def test_warped_image_matches_template_inside_and_is_nan_outside():
    template = scene()
    truth = similarity(256, 0.0, 1.0, (12.0, 0.0))
    result = register(move(template, truth), template, options=RegistrationOptions(motion="translation"))
    assert result.warped.dtype == np.float32 and result.warped.shape == template.shape
    # Template columns beyond 256 - 12 map outside the image.
    assert np.isnan(result.warped[:, -5:]).all()
    inside = result.warped[10:-10, 10:-20]
    expected = template[10:-10, 10:-20] / 255.0
    assert np.abs(inside - expected).mean() < 0.01
    assert result.overlap == pytest.approx(1 - 12 / 256, abs=0.01)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtypes_agree(dtype):
    template = scene()
    truth = TRUTHS["rigid"]
    image = move(template, truth)
    converted = {np.uint8: image, np.uint16: image.astype(np.uint16) * 257, np.float32: image / np.float32(255)}[dtype]
    result = register(converted, template, options=RegistrationOptions(motion="rigid"))
    assert corner_rms_error(result.matrix, truth, template.shape) < 0.3


def test_colour_image_is_registered_on_its_luminance_and_warped_in_colour():
    template = scene()
    truth = TRUTHS["translation"]
    rgb = np.stack([move(template, truth)] * 3, axis=2)
    result = register(rgb, template, options=RegistrationOptions(motion="translation"))
    assert result.warped.shape == template.shape + (3,)
    assert corner_rms_error(result.matrix, truth, template.shape) < 0.3


def test_phase_correlation_returns_the_shift_of_the_image():
    template = scene().astype(np.float32)
    shifted = move(template, similarity(256, 0, 1, (9.0, -5.0)))
    matrix, response = phase_correlation(template, shifted)
    assert matrix[:2, 2] == pytest.approx([9.0, -5.0], abs=0.3)
    assert response > 0.2


def test_log_polar_finds_a_large_rotation_and_scale():
    template = scene(256, seed=3).astype(np.float32) / 255
    truth = similarity(256, 25.0, 1.1, (6.0, -4.0))
    matrix, _ = log_polar_correlation(template, move(template, truth))
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    assert abs(abs(angle) - 25.0) < 1.5
    assert math.hypot(matrix[0, 0], matrix[1, 0]) == pytest.approx(1.1, abs=0.03)
    # Then ECC finishes the job from there.
    options = RegistrationOptions(motion="similarity", coarse="log_polar")
    result = register(move(template, truth), template, options=options)
    assert corner_rms_error(result.matrix, truth, template.shape) < 0.5


@pytest.mark.parametrize("method", ["orb", "akaze"])
def test_feature_matching_handles_a_large_motion(method):
    if method == "akaze" and not hasattr(cv2, "AKAZE_create"):
        with pytest.raises(InvalidParameterError, match="akaze"):
            match_features(scene(), scene(), method="akaze")
        return
    template = scene(256, seed=5)
    truth = similarity(256, 20.0, 1.0, (25.0, -18.0))
    image = move(template, truth)
    matrix, inliers = match_features(template, image, motion="similarity", method=method)
    assert inliers >= 8
    assert corner_rms_error(matrix, truth, template.shape) < 3.0
    result = register(image, template, options=RegistrationOptions(motion="rigid", coarse=method))
    assert corner_rms_error(result.matrix, truth, template.shape) < 0.5


def test_feature_matching_is_seeded():
    template = scene(256, seed=5)
    image = move(template, TRUTHS["affine"])
    a, _ = match_features(template, image, motion="affine", random_state=3)
    b, _ = match_features(template, image, motion="affine", random_state=3)
    np.testing.assert_array_equal(a, b)


def test_template_pyramid_is_reusable_and_left_unchanged():
    # OpenCV 5.0's phaseCorrelate windows its inputs in place; a cached pyramid must survive.
    template = scene()
    pyramid = RegistrationOptions().prepare(template)
    before = [level.copy() for level in pyramid.levels]
    image = move(template, TRUTHS["rigid"])
    results = [register(image, pyramid, options=RegistrationOptions(motion="rigid")).matrix for _ in range(4)]
    for level, copy in zip(pyramid.levels, before):
        np.testing.assert_array_equal(level, copy)
    for matrix in results[1:]:
        np.testing.assert_array_equal(matrix, results[0])


def test_maps_go_back_to_image_coordinates():
    template = scene()
    truth = TRUTHS["translation"]
    marker = np.zeros(template.shape, np.float32)
    marker[100:110, 50:60] = 1.0
    back = warp_to_image(marker, truth, template.shape)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert 100 + truth[1, 2] - 1 <= y <= 110 + truth[1, 2] and 50 + truth[0, 2] - 1 <= x <= 60 + truth[0, 2] + 1


def test_overlap_of_a_part_half_out_of_view():
    assert template_overlap(similarity(200, 0, 1, (100.0, 0.0)), (200, 200), (200, 200)) == pytest.approx(0.5)
    assert template_overlap(similarity(200, 0, 1, (300.0, 0.0)), (200, 200), (200, 200)) == 0.0


def test_local_refinement_follows_a_smooth_distortion():
    template = scene(256, seed=7)
    # Columns right of the middle are displaced by 1.5 px more than those on the left.
    ys, xs = np.mgrid[0:256, 0:256].astype(np.float32)
    dx = np.where(xs > 128, 1.5, 0.0).astype(np.float32)
    dx = cv2.GaussianBlur(dx, (0, 0), 20)
    image = cv2.remap(template, xs - dx, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    plain = warp_to_template(image, np.eye(3), template.shape)
    refined, field = refine_local(image, template.astype(np.float32) / 255, np.eye(3), grid=4)
    reference = template / 255.0
    core = (slice(20, -20), slice(20, -20))
    assert np.abs(refined - reference)[core].mean() < 0.6 * np.abs(plain - reference)[core].mean()
    assert field.shape == (256, 256, 2)


def test_bad_options_and_images_raise_typed_errors():
    template = scene()
    with pytest.raises(InvalidParameterError, match="motion"):
        RegistrationOptions(motion="perspective")
    with pytest.raises(InvalidParameterError, match="coarse"):
        RegistrationOptions(coarse="sift")
    with pytest.raises(InvalidParameterError, match="gauss_size"):
        RegistrationOptions(gauss_size=4)
    with pytest.raises(InvalidParameterError, match="levels"):
        register(template, template, options=RegistrationOptions(levels=0))
    with pytest.raises(InvalidImageError, match="shape"):
        register(np.zeros((10, 10, 2), np.uint8), template)


def test_featureless_image_is_an_alignment_error_not_a_result():
    template = scene()
    with pytest.raises(AlignmentError):
        register(np.full((256, 256), 128, np.uint8), template, options=RegistrationOptions(motion="affine"))
    with pytest.raises(AlignmentError, match="part not found"):
        match_features(template, np.full((256, 256), 128, np.uint8))


def test_stripes_alone_cannot_be_aligned_and_say_so():
    # Parallel stripes fix the shift across them, not along them (the aperture problem).
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::16] = 255
    stripes = cv2.GaussianBlur(stripes, (0, 0), 2)
    with pytest.raises(AlignmentError, match="one direction"):
        register(np.roll(stripes, 3, axis=1), stripes, options=RegistrationOptions(motion="translation"))


@pytest.mark.skipif(not DEEPPCB.is_dir(), reason="needs ../shared/datasets/deeppcb")
def test_deeppcb_goods_warped_by_known_transforms_are_recovered():
    rng = np.random.default_rng(0)
    paths = sorted((DEEPPCB / "train" / "good").glob("*.jpg"))[::90][:8]
    errors = []
    for path in paths:
        template = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        truth = similarity(template.shape[0], rng.uniform(-3, 3), 1.0, tuple(rng.uniform(-20, 20, 2)))
        result = register(move(template, truth), template, options=RegistrationOptions(motion="rigid"))
        errors.append(corner_rms_error(result.matrix, truth, template.shape))
    assert float(np.sqrt(np.mean(np.square(errors)))) <= 0.5, errors
