"""Nearest-neighbour search over a memory bank, with faiss.

Distances returned are Euclidean (square roots of faiss's squared L2), said once here so
no caller averages squared distances by mistake. ``index="flat"`` is exact; ``"hnsw"``
is approximate and much faster on large banks.

One exception to "faiss does the search": a flat search for the single nearest neighbour
of a few hundred queries, which is what scoring one image asks (256 patches against a
2,048-patch bank), is one torch matrix product instead: faiss has a fixed cost in its BLAS
path that dominates such a small search, and numpy's own BLAS, though fast alone, wakes
threads that then compete with torch's for the cores and slow the next backbone forward.
From about 1,000 queries on, faiss is as fast or faster, so batches still go to faiss.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import torch

from anomaly.errors import InvalidParameterError, NotFittedError

INDEX_TYPES = ("flat", "hnsw")
#: Flat searches for one neighbour of at most this many queries use torch (see above).
SMALL_QUERY_BATCH = 512
#: Candidates searched beyond those asked for, re-ranked by their exact distance (see ``search``).
RERANK = 3


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
        self._bank_t: torch.Tensor | None = None  # (d, m) bank, for the small-batch flat search
        self._bank_sq: torch.Tensor | None = None  # (m,) squared norms of the bank vectors
        self._bank: np.ndarray | None = None  # (m, d) flat bank, for the exact distances of the neighbours found

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

        The search ranks by ``|q|^2 - 2 q.b + |b|^2``, which loses small distances to
        cancellation in float32: a good patch at distance 0 from its twin in the bank comes
        out anywhere up to about 0.03 on 150-dimensional features, and a neighbour that far
        can rank first. So :data:`RERANK` more candidates than asked are searched, their
        distances computed again as ``|q - b|`` (exact to float rounding), and the nearest of
        those kept: any two correct implementations of the search (faiss here, an exported
        graph on onnxruntime, :mod:`anomaly.export.graphs`) then give the same neighbours
        and the same map.
        """
        if self._index is None:
            raise NotFittedError("nearest-neighbour index is empty: fit it on a memory bank first")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = int(k)
        wanted = min(k + RERANK, self.size)
        if self._bank_t is not None and k == 1 and len(queries) <= SMALL_QUERY_BATCH:
            idx = self._candidates_by_matrix_product(queries, wanted)
        else:
            _, idx = self._index.search(queries, wanted)
        found = self._bank[idx] if self._bank is not None else self.reconstruct(idx.reshape(-1)).reshape(
            idx.shape + (queries.shape[1],))
        diff = found - queries[:, None, :]
        exact = np.sqrt(np.einsum("nkd,nkd->nk", diff, diff)).astype(np.float32, copy=False)
        if idx.shape[1] == 1:
            return exact, idx
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(idx, order, axis=1)

    def _candidates_by_matrix_product(self, queries: np.ndarray, wanted: int) -> np.ndarray:
        """The ``wanted`` nearest bank vectors of each query by ``|b|^2 - 2 q.b`` (the rank
        faiss's ``|q|^2 - 2 q.b + |b|^2`` gives), one torch matrix product.

        Args:
            queries: ``(n, d)`` float32, ``n <= SMALL_QUERY_BATCH``.
            wanted: Candidates per query.

        Returns:
            ``(n, wanted)`` int64 indices, nearest first.
        """
        q = torch.from_numpy(queries)
        with torch.inference_mode():
            # |b|^2 - 2 q.b in one GEMM call (the bias broadcast along the rows): no extra
            # passes over the (n, m) product.
            partial = torch.addmm(self._bank_sq, q, self._bank_t, alpha=-2.0)  # (n, m)
            return torch.topk(partial, wanted, dim=1, largest=False).indices.numpy().astype(np.int64)

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
        self._bank_t = self._bank_sq = self._bank = None
        if self.index == "flat" and index.ntotal:
            bank = index.reconstruct_n(0, index.ntotal)
            self._bank = bank
            self._bank_t = torch.from_numpy(np.ascontiguousarray(bank.T))
            self._bank_sq = torch.from_numpy(np.einsum("ij,ij->i", bank, bank))
