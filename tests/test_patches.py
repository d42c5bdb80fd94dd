"""Patch-feature aggregation: channel pooling and the exact grid sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.detectors.registry import create_detector
from anomaly.errors import InvalidParameterError
from anomaly.features.patches import aggregate, aggregate_reference, pool_channels, resample
from anomaly.features.preprocess import normalise_into
from anomaly.imageio import to_float_rgb
from anomaly.maps import model_resolution_map, model_resolution_map_reference


def test_pool_channels_averages_consecutive_channel_groups():
    feat = torch.arange(2 * 6 * 3 * 4, dtype=torch.float32).reshape(2, 6, 3, 4)
    pooled = pool_channels(feat, 3)
    assert pooled.shape == (2, 3, 3, 4)
    # 6 -> 3 channels: each output channel is the mean of two neighbours, at every position.
    expected = feat.reshape(2, 3, 2, 3, 4).mean(dim=2)
    torch.testing.assert_close(pooled, expected)


def test_pool_channels_keeps_layers_that_are_small_enough():
    feat = torch.randn(1, 5, 2, 2)
    assert pool_channels(feat, 5) is feat
    assert pool_channels(feat, 8) is feat


def test_aggregate_caps_every_layer_and_commutes_with_spatial_sampling():
    torch.manual_seed(0)
    fine, coarse = torch.randn(1, 8, 16, 16), torch.randn(1, 24, 8, 8)
    kwargs = dict(strides=[8, 16], offsets=[(-3.5, -3.5), (0.5, 0.5)], patch_size=3, out_stride=8, grid=(16, 16))
    capped = aggregate([fine, coarse], channels_per_layer=8, **kwargs)
    assert capped.shape == (1, 16, 16, 16)
    full = aggregate([fine, coarse], **kwargs)
    assert full.shape == (1, 32, 16, 16)
    # Pooling channels first (as aggregate does) equals pooling the aggregated layer after.
    torch.testing.assert_close(capped[:, 8:], pool_channels(full[:, 8:], 8), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(capped[:, :8], full[:, :8])


def test_resample_puts_cells_at_their_measured_centres():
    # A ramp along x sampled at out_stride * i must read the input cell whose centre is there.
    feat = torch.arange(8, dtype=torch.float32).repeat(1, 1, 8, 1)  # value = column index
    out = resample(feat, in_stride=16, in_offset=(8.0, 8.0), out_stride=8, grid=(4, 8))
    xs = (np.arange(8) * 8 - 8.0) / 16
    np.testing.assert_allclose(out[0, 0, 0].numpy(), np.clip(xs, 0, 7), atol=1e-4)


def test_nearest_sampling_takes_the_coarse_cell_whose_centre_is_nearest():
    # Coarse cell k (stride 16) is centred on 16 k + 8; fine-grid cell i (stride 8, origin 3)
    # on 8 i + 3. Nearest: k = round((8 i + 3 - 8) / 16), clipped; the values are the
    # layer's own, no blend.
    feat = torch.arange(8, dtype=torch.float32).repeat(1, 1, 8, 1)  # value = column index
    out = resample(feat, in_stride=16, in_offset=(8.0, 8.0), out_stride=8, grid=(4, 16), origin=(3.0, 3.0),
                   sampling="nearest")
    expected = np.clip(np.floor((np.arange(16) * 8 + 3 - 8) / 16 + 0.5), 0, 7)
    np.testing.assert_array_equal(out[0, 0, 0].numpy(), expected)
    np.testing.assert_array_equal(expected[:6], [0, 0, 1, 1, 2, 2])
    # Finer layers are still averaged and interpolated: "nearest" is for coarser ones.
    fine = torch.randn(1, 2, 16, 16)
    kwargs = dict(in_stride=4, in_offset=(1.5, 1.5), out_stride=8, grid=(8, 8), origin=(3.0, 3.0))
    torch.testing.assert_close(resample(fine, **kwargs, sampling="nearest"), resample(fine, **kwargs))


def test_patchcore_rejects_a_bad_channel_cap():
    with pytest.raises(InvalidParameterError, match="channels_per_layer"):
        create_detector("patchcore", {"channels_per_layer": 0}).fit([np.zeros((32, 32), np.uint8)] * 2)


@pytest.mark.parametrize("grid_stride", [12, 4, "coarse"])
def test_patchcore_grid_stride_must_be_a_multiple_of_the_finest_layer(grid_stride):
    with pytest.raises(InvalidParameterError, match="grid_stride"):
        create_detector("patchcore", {"grid_stride": grid_stride, "image_size": 64}).fit([np.zeros((64, 64), np.uint8)] * 2)


@pytest.mark.parametrize("model", ["patchcore", "padim"])
@pytest.mark.parametrize("params", [{"coarse_sampling": "cubic"}, {"grid_origin": "centre"}])
def test_unknown_grid_options_are_refused(model, params):
    key = next(iter(params))
    with pytest.raises(InvalidParameterError, match=key):
        create_detector(model, {**params, "image_size": 64}).fit([np.zeros((64, 64), np.uint8)] * 2)


@pytest.mark.parametrize("size, stride", [(256, 16), ((256, 640), 16), (255, 8), ((128, 512), 8)])
def test_auto_grid_is_coarse_only_where_it_keeps_sixteen_cells_on_the_shorter_side(size, stride):
    assert create_detector("patchcore", {"image_size": size}).feature_stride == stride


@pytest.mark.parametrize("grid_stride, grid", [(16, (4, 4)), (None, (8, 8)), ("auto", (8, 8))])
def test_patchcore_grid_scores_and_maps_at_full_size(grid_stride, grid):
    # "auto" keeps the finest grid (8 px) on a 64 px input: 16 px would leave 4 x 4 cells.
    rng = np.random.default_rng(0)
    goods = [rng.integers(100, 120, (64, 64), dtype=np.uint8) for _ in range(3)]
    det = create_detector("patchcore", {"grid_stride": grid_stride, "image_size": 64}).fit(goods)
    assert det.feature_grid == grid
    bad = goods[0].copy()
    bad[40:56, 8:24] = 255
    result = det.score([goods[1], bad])
    assert result.maps[1].shape == (64, 64)
    assert result.scores[1] > result.scores[0]
    y, x = np.unravel_index(np.argmax(result.maps[1]), (64, 64))
    assert 32 <= y < 64 and 0 <= x < 32


@pytest.mark.parametrize("shapes, strides, out_stride, grid, patch_size, origin", [
    ([(32, 32), (16, 16)], [8, 16], 16, (16, 16), 3, (0.0, 0.0)),
    ([(32, 32), (16, 16)], [8, 16], 8, (32, 32), 3, (0.0, 0.0)),
    ([(32, 32), (16, 16)], [8, 16], 8, (32, 32), 3, (-3.6, -3.25)),
    ([(32, 32), (16, 16)], [8, 16], 16, (16, 16), 3, (-3.6, -3.25)),
    ([(13, 37), (7, 19)], [8, 16], 8, (13, 37), 5, (0.0, 0.0)),  # odd sizes: borders on every side
    ([(20, 12)], [4], 16, (5, 3), 1, (1.5, -2.0)),
])
@pytest.mark.parametrize("sampling", ["linear", "nearest"])
def test_aggregate_equals_its_pooling_and_grid_sample_definition(shapes, strides, out_stride, grid, patch_size, origin,
                                                                 sampling):
    torch.manual_seed(0)
    layers = [torch.randn(3, 5 + k, h, w) for k, (h, w) in enumerate(shapes)]
    offsets = [(-3.6, -3.25), (-4.04, -4.97)][: len(shapes)]
    kwargs = dict(strides=strides, offsets=offsets, patch_size=patch_size, out_stride=out_stride, grid=grid,
                  origin=origin, sampling=sampling)
    fast = aggregate(layers, **kwargs)
    assert fast.shape == (3, sum(5 + k for k in range(len(shapes))), *grid)
    torch.testing.assert_close(fast, aggregate_reference(layers, **kwargs), atol=1e-5, rtol=1e-5)
    # The backbone hands its layers over channels-last: the same numbers, another memory order.
    channels_last = [feat.contiguous(memory_format=torch.channels_last) for feat in layers]
    torch.testing.assert_close(aggregate(channels_last, **kwargs), fast, atol=0, rtol=0)


@pytest.mark.parametrize("grid, size, stride, sigma, origin", [
    ((16, 16), (256, 256), 16, 4.0, (0.0, 0.0)), ((32, 80), (256, 640), 8, 4.0, (0.0, 0.0)),
    ((5, 3), (40, 24), 8, 0.0, (0.0, 0.0)), ((4, 4), (64, 64), 16, 2.5, (0.0, 0.0)),
    ((32, 80), (256, 640), 8, 4.0, (-3.6, -3.25)), ((5, 3), (40, 24), 8, 0.0, (2.0, -1.5)),
])
def test_model_resolution_map_equals_the_warp_and_blur_it_stands_for(grid, size, stride, sigma, origin):
    grid_map = np.random.default_rng(0).random(grid).astype(np.float32)
    np.testing.assert_allclose(model_resolution_map(grid_map, size, sigma, stride, origin),
                               model_resolution_map_reference(grid_map, size, sigma, stride, origin), atol=1e-5)


def test_finest_origin_takes_the_finest_layer_cell_for_cell():
    # On the finest layer's own grid, anchored at its cells, that layer is not interpolated.
    torch.manual_seed(0)
    fine, coarse = torch.randn(2, 4, 32, 32), torch.randn(2, 3, 16, 16)
    offsets = [(-3.6, -3.25), (-4.04, -4.97)]
    out = aggregate([fine, coarse], [8, 16], offsets, patch_size=1, out_stride=8, grid=(32, 32), origin=offsets[0])
    torch.testing.assert_close(out[:, :4], fine, atol=1e-5, rtol=1e-5)
    # Anchored at the input's pixel (0, 0) instead, every cell mixes its neighbours.
    shifted = aggregate([fine, coarse], [8, 16], offsets, patch_size=1, out_stride=8, grid=(32, 32))
    assert (shifted[:, :4, 1:-1, 1:-1] - fine[:, :, 1:-1, 1:-1]).abs().mean() > 0.3


def test_map_of_a_one_cell_peak_lands_on_that_cell_centre():
    # Cell (i, j) of a grid anchored at (dy, dx) is centred on pixel (8 i + dy, 8 j + dx).
    grid_map = np.zeros((8, 8), np.float32)
    grid_map[5, 2] = 1.0
    out = model_resolution_map(grid_map, (64, 64), 0.0, 8, (-3.0, 2.0))
    assert np.unravel_index(np.argmax(out), out.shape) == (5 * 8 - 3, 2 * 8 + 2)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8),
    np.random.default_rng(1).integers(0, 256, (24, 40), dtype=np.uint8),
    np.random.default_rng(2).integers(0, 65536, (24, 40), dtype=np.uint16),
    np.random.default_rng(3).integers(0, 65536, (24, 40, 3), dtype=np.uint16),
])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_lookup_normalisation_equals_scaling_and_standardising(image, layout):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    if layout == "channels_first":
        out = np.empty((3, 24, 40), np.float32)
    else:  # what prepare_batch hands over: a channel-first view of interleaved pixels
        out = np.full((24, 40, 3), np.nan, np.float32).transpose(2, 0, 1)
    normalise_into(out, image, mean, std)
    expected = ((to_float_rgb(image) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_prepared_batch_is_channels_last_for_the_backbone():
    from anomaly.geometry import Geometry
    from anomaly.features.preprocess import prepare_batch

    images = [np.random.default_rng(k).integers(0, 256, (48, 80) if k else (48, 80, 3), dtype=np.uint8)
              for k in range(2)]
    batch, _ = prepare_batch(images, Geometry.from_params(32, "stretch", None), np.full(3, 0.5), np.full(3, 0.5))
    assert batch.shape == (2, 3, 32, 32) and np.isfinite(batch).all()
    assert torch.from_numpy(batch).is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(batch[1, 0], batch[1, 2])  # gray: three equal channels
