"""Coreset: greedy k-center covers the set, streaming stays close to the one-shot selection."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.coreset import StreamingCoreset, greedy_kcenter
from anomaly.errors import InvalidParameterError


def _coverage(x: np.ndarray, centres: np.ndarray) -> float:
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(d.min(1)).max())


def test_greedy_picks_one_point_per_cluster():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 50, (5, 8)).astype(np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (200, 8)) for c in centres]).astype(np.float32)
    idx = greedy_kcenter(x, 5, random_state=0)
    assert len(set(idx // 200)) == 5


def test_seeded_and_deterministic():
    x = np.random.default_rng(1).normal(size=(500, 16)).astype(np.float32)
    a = greedy_kcenter(x, 20, random_state=3)
    b = greedy_kcenter(x, 20, random_state=3)
    np.testing.assert_array_equal(a, b)


def test_streaming_close_to_one_shot():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6000, 32)).astype(np.float32)
    one_shot = x[greedy_kcenter(x, 100, random_state=0)]
    stream = StreamingCoreset(ratio=100 / 6000, max_size=1000, chunk_size=1000, projection_dim=0, exact_max_mb=0)
    for part in np.array_split(x, 12):
        stream.add(part)
    bank = stream.finalize()
    assert bank.shape == (100, 32)
    assert _coverage(x, bank) <= 1.25 * _coverage(x, one_shot)


def test_bank_cap_and_bad_ratio():
    stream = StreamingCoreset(ratio=0.5, max_size=10)
    stream.add(np.zeros((100, 4), np.float32) + np.arange(100, dtype=np.float32)[:, None])
    assert stream.finalize().shape == (10, 4)
    with pytest.raises(InvalidParameterError):
        StreamingCoreset(ratio=0.0, max_size=10)


def test_merge_and_reduce_bounds_the_pool_and_keeps_coverage():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20_000, 16)).astype(np.float32)
    stream = StreamingCoreset(ratio=0.5, max_size=50, chunk_size=500, oversample=2.0, projection_dim=0, exact_max_mb=0)
    for part in np.array_split(x, 40):
        stream.add(part)
        kept = sum(len(k) for k in stream._kept)
        assert kept <= max(stream.chunk_size, stream.cap) + stream.cap
    pool = stream.pool()
    assert len(pool) <= stream.cap
    bank = stream.select(pool, 50)
    one_shot = x[greedy_kcenter(x, 50, random_state=0)]
    assert _coverage(x, bank) <= 1.5 * _coverage(x, one_shot)


def test_uncapped_stream_keeps_its_ratio():
    x = np.random.default_rng(5).normal(size=(5000, 8)).astype(np.float32)
    stream = StreamingCoreset(ratio=0.02, max_size=10**9, chunk_size=1000, oversample=1.0, projection_dim=0, exact_max_mb=0)
    for part in np.array_split(x, 7):
        stream.add(part)
    assert stream.finalize().shape == (100, 8)


def test_small_ratios_keep_enough_of_each_chunk_to_match_the_one_shot_selection():
    # 1 % of 20,000 clustered patches: each 2,000-patch chunk keeps 20 % (not 2 x 1 %),
    # so the final pass can find nearly the centres the one-shot selection finds.
    rng = np.random.default_rng(6)
    centres = rng.normal(0, 4, (400, 16))
    x = (centres[rng.integers(0, 400, 20_000)] + rng.normal(0, 0.3, (20_000, 16))).astype(np.float32)
    stream = StreamingCoreset(ratio=0.01, max_size=10**9, chunk_size=2000, projection_dim=0, exact_max_mb=0)
    for part in np.array_split(x, 10):
        stream.add(part)
    assert len(stream.pool()) == 10 * 400
    bank = stream.finalize()
    one_shot = x[greedy_kcenter(x, 200, random_state=0)]
    assert bank.shape == (200, 16)
    assert _coverage(x, bank) <= 1.1 * _coverage(x, one_shot)
    with pytest.raises(InvalidParameterError, match="min_keep_fraction"):
        StreamingCoreset(ratio=0.01, max_size=10, min_keep_fraction=1.5)


def test_within_budget_the_selection_is_the_exact_one_over_every_patch():
    # The stream keeps every patch and finalize() is greedy k-center over all of them, with
    # the stream's own projection and seed: the same rows, in the same order.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 48)).astype(np.float32)
    stream = StreamingCoreset(ratio=0.05, max_size=10**9, chunk_size=500, projection_dim=16, random_state=3)
    for part in np.array_split(x, 9):
        stream.add(part)
    assert stream.exact and stream._kept == []
    expected = x[greedy_kcenter(x, 150, random_state=3, projection=stream._projection)]
    np.testing.assert_array_equal(stream.finalize(), expected)


def test_over_either_budget_the_stream_reduces_chunks():
    x = np.random.default_rng(8).normal(size=(4000, 32)).astype(np.float32)
    # 4,000 rows x 32 floats (no projection, so no second copy) = 0.49 MB: a 0.25 MB budget
    # is outgrown half way.
    by_memory = StreamingCoreset(ratio=0.05, max_size=10**9, chunk_size=500, projection_dim=0, exact_max_mb=0.25)
    # 200 steps over 4,000 rows = 800,000 row reads: outgrown too.
    by_compute = StreamingCoreset(ratio=0.05, max_size=10**9, chunk_size=500, projection_dim=0,
                                  exact_max_row_steps=400_000)
    for stream in (by_memory, by_compute):
        for part in np.array_split(x, 8):
            stream.add(part)
        assert not stream.exact and stream._kept
        assert stream.finalize().shape == (200, 32)
    # A cross-fit fold (a fifth of the set) checks the budgets for the whole set.
    fold = StreamingCoreset(ratio=0.05, max_size=10**9, projection_dim=0, exact_max_mb=0.25, share=0.2)
    fold.add(x[:800])
    assert not fold.exact
    with pytest.raises(InvalidParameterError, match="share"):
        StreamingCoreset(ratio=0.05, max_size=10, share=0.0)


def test_memory_estimate_follows_the_selection_mode():
    stream = StreamingCoreset(ratio=0.01, max_size=10**9, projection_dim=128)
    whole, held = stream.memory_estimate_mb(102_400, 152)  # the bench's matched pcb: exact
    assert held == pytest.approx(102_400 * (152 + 128) * 4 / 1e6)
    whole, held = stream.memory_estimate_mb(2_000_000, 152)  # streamed: two chunks and the kept rows
    assert held < whole / 2
