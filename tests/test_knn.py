"""Nearest-neighbour search: the small-batch numpy path and faiss give the same answers."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from anomaly.errors import NotFittedError
from anomaly.knn import SMALL_QUERY_BATCH, NearestNeighbours


def _brute_force(bank: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(queries[:, None, :].astype(np.float64) - bank[None, :, :], axis=2)
    return d.min(axis=1), d.argmin(axis=1)


@pytest.mark.parametrize("n_queries", [1, 37, SMALL_QUERY_BATCH, SMALL_QUERY_BATCH + 1])
def test_flat_search_is_exact_on_both_paths(n_queries):
    rng = np.random.default_rng(n_queries)
    bank = rng.normal(size=(300, 24)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 24)).astype(np.float32)
    dist, idx = NearestNeighbours().fit(bank).search(queries, 1)
    expected_dist, expected_idx = _brute_force(bank, queries)
    assert dist.shape == idx.shape == (n_queries, 1) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx[:, 0], expected_idx)
    np.testing.assert_allclose(dist[:, 0], expected_dist, rtol=1e-4, atol=1e-4)


def test_small_batch_path_agrees_with_faiss_and_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    bank = rng.random((2048, 152), dtype=np.float32)
    queries = rng.random((256, 152), dtype=np.float32)
    ours = NearestNeighbours().fit(bank)
    ours.save(tmp_path / "bank.faiss")
    sq, faiss_idx = faiss.read_index(str(tmp_path / "bank.faiss")).search(queries, 1)  # faiss alone
    dist, idx = NearestNeighbours().load(tmp_path / "bank.faiss").search(queries, 1)
    np.testing.assert_array_equal(idx, faiss_idx)
    np.testing.assert_allclose(dist, np.sqrt(sq), rtol=1e-5, atol=1e-5)
    # A query equal to a bank vector is at distance zero (clamped, never NaN), up to the
    # rounding of |q|^2 + |b|^2 - 2 q.b at |b|^2 ~ 50 (float32: ~1e-5), which the square
    # root lifts to a few 1e-3.
    d0, i0 = ours.search(bank[[5]], 1)
    assert i0[0, 0] == 5 and d0[0, 0] == pytest.approx(0.0, abs=1e-2)


def test_several_neighbours_and_hnsw_still_come_from_faiss():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(10, 16)).astype(np.float32)
    dist, idx = NearestNeighbours().fit(bank).search(queries, 3)
    assert dist.shape == (10, 3) and np.all(np.diff(dist, axis=1) >= 0)
    _, expected_idx = _brute_force(bank, queries)
    np.testing.assert_array_equal(idx[:, 0], expected_idx)
    _, approx = NearestNeighbours(index="hnsw").fit(bank).search(queries, 1)
    assert (approx[:, 0] == expected_idx).mean() >= 0.9


def test_searching_an_empty_index_is_a_typed_error():
    with pytest.raises(NotFittedError):
        NearestNeighbours().search(np.zeros((1, 4), np.float32))
