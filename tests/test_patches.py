"""Patch-feature aggregation: channel pooling and the exact grid sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly.detectors.registry import create_detector
from anomaly.errors import InvalidParameterError
from anomaly.features.patches import aggregate, pool_channels, resample


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


def test_patchcore_rejects_a_bad_channel_cap():
    with pytest.raises(InvalidParameterError, match="channels_per_layer"):
        create_detector("patchcore", {"channels_per_layer": 0}).fit([np.zeros((32, 32), np.uint8)] * 2)


def test_patchcore_grid_stride_must_be_a_multiple_of_the_finest_layer():
    with pytest.raises(InvalidParameterError, match="grid_stride"):
        create_detector("patchcore", {"grid_stride": 12, "image_size": 64}).fit([np.zeros((64, 64), np.uint8)] * 2)


def test_patchcore_on_a_coarser_grid_scores_and_maps_at_full_size():
    rng = np.random.default_rng(0)
    goods = [rng.integers(100, 120, (64, 64), dtype=np.uint8) for _ in range(3)]
    det = create_detector("patchcore", {"grid_stride": 16, "image_size": 64}).fit(goods)
    assert det.feature_grid == (4, 4)
    bad = goods[0].copy()
    bad[40:56, 8:24] = 255
    result = det.score([goods[1], bad])
    assert result.maps[1].shape == (64, 64)
    assert result.scores[1] > result.scores[0]
    y, x = np.unravel_index(np.argmax(result.maps[1]), (64, 64))
    assert 32 <= y < 64 and 0 <= x < 32
