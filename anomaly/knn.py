"""Nearest-neighbour search over a memory bank, with faiss.

Distances returned are Euclidean (square roots of faiss's squared L2), said once here so
no caller averages squared distances by mistake. ``index="flat"`` is exact; ``"hnsw"``
is approximate and much faster on large banks.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from anomaly.errors import InvalidParameterError, NotFittedError

INDEX_TYPES = ("flat", "hnsw")


class NearestNeighbours:
    """faiss index wrapper.

    Args:
        index: ``"flat"`` (exact) or ``"hnsw"`` (approximate).
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (higher = more exact, slower).
    """

    def __init__(self, *, index: str = "flat", hnsw_m: int = 32, ef_search: int = 64) -> None:
        if index not in INDEX_TYPES:
            raise InvalidParameterError(f"index must be one of {INDEX_TYPES}, got {index!r}")
        self.index = index
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self._index: faiss.Index | None = None

    @property
    def size(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def fit(self, bank: np.ndarray) -> "NearestNeighbours":
        """Index ``(m, d)`` float32 vectors."""
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        dim = bank.shape[1]
        if self.index == "flat":
            index = faiss.IndexFlatL2(dim)
        else:
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m)
            index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
        index.add(bank)
        self._set(index)
        return self

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """k nearest bank vectors of each query.

        Args:
            queries: ``(n, d)`` float32.
            k: Neighbours per query.

        Returns:
            ``(n, k)`` float32 Euclidean distances (ascending) and ``(n, k)`` int64 indices.
        """
        if self._index is None:
            raise NotFittedError("nearest-neighbour index is empty: fit it on a memory bank first")
        sq, idx = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
        return np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq), idx

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Bank vectors ``(len(ids), d)`` by index."""
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    def load(self, path: Path) -> "NearestNeighbours":
        self._set(faiss.read_index(str(path)))
        return self

    def _set(self, index: faiss.Index) -> None:
        if self.index == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = self.ef_search
        self._index = index
