"""Coreset subsampling of patch features by approximate greedy k-center.

PatchCore (Roth et al., CVPR 2022, section 3.2) keeps a subset of the training patch
features that covers the whole set: greedy k-center on a seeded random projection (the
Johnson-Lindenstrauss trick makes each step cheap).

To keep memory bounded on thousands of images, :class:`StreamingCoreset` never holds all
features: it reduces each chunk of patches to a chunk coreset (oversampled) and runs the
final greedy selection over the union of the chunk coresets. Greedy k-center coresets
compose this way with a bounded loss in coverage (Indyk, Mahabadi, Mahdian & Mirrokni,
"Composable core-sets for diversity and coverage maximization", PODS 2014).

Written here rather than taken from a library: scikit-learn and faiss have no k-center,
and the streaming reduction is ours.
"""

from __future__ import annotations

import math

import numpy as np

from anomaly.errors import InvalidParameterError


def random_projection(dim_in: int, dim_out: int, random_state: int) -> np.ndarray | None:
    """Seeded Gaussian projection ``(dim_in, dim_out)``, or ``None`` when no reduction is needed."""
    if dim_out <= 0 or dim_out >= dim_in:
        return None
    rng = np.random.default_rng(random_state)
    return (rng.standard_normal((dim_in, dim_out)) / math.sqrt(dim_out)).astype(np.float32)


def greedy_kcenter(
    features: np.ndarray,
    n_select: int,
    *,
    random_state: int = 0,
    projection: np.ndarray | None = None,
) -> np.ndarray:
    """Select ``n_select`` rows that greedily minimise the largest distance to the selection.

    Args:
        features: ``(n, d)`` float32.
        n_select: How many rows to keep (clipped to ``n``).
        random_state: Seed of the first centre.
        projection: Optional ``(d, d')`` matrix applied before measuring distances.

    Returns:
        ``(n_select,)`` int64 row indices, in the order they were chosen.
    """
    n = features.shape[0]
    n_select = int(min(max(n_select, 1), n))
    x = features if projection is None else features @ projection
    x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    rng = np.random.default_rng(random_state)
    chosen = np.empty(n_select, dtype=np.int64)
    chosen[0] = rng.integers(n)
    c = x[chosen[0]]
    min_d = sq - 2.0 * (x @ c) + sq[chosen[0]]
    for k in range(1, n_select):
        i = int(np.argmax(min_d))
        chosen[k] = i
        d = sq - 2.0 * (x @ x[i]) + sq[i]
        np.minimum(min_d, d, out=min_d)
    return chosen


class StreamingCoreset:
    """Greedy k-center over a stream of patch features with bounded memory.

    Args:
        ratio: Fraction of all patches to keep.
        max_size: Upper bound on the final bank size (caps scoring cost and memory).
        chunk_size: Patches buffered before a chunk is reduced.
        oversample: Chunk coresets keep ``oversample * ratio`` of their chunk.
        projection_dim: Dimension of the random projection used for distances.
        random_state: Seed for the projection and the first centres.
    """

    def __init__(
        self,
        *,
        ratio: float,
        max_size: int,
        chunk_size: int = 60_000,
        oversample: float = 3.0,
        projection_dim: int = 128,
        random_state: int = 0,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise InvalidParameterError(f"coreset ratio must be in (0, 1], got {ratio}")
        if max_size < 1:
            raise InvalidParameterError(f"max bank size must be >= 1, got {max_size}")
        self.ratio = ratio
        self.max_size = int(max_size)
        self.chunk_size = int(chunk_size)
        self.oversample = float(oversample)
        self.projection_dim = int(projection_dim)
        self.random_state = int(random_state)
        self.seen = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._kept: list[np.ndarray] = []
        self._projection: np.ndarray | None = None
        self._chunks = 0

    def add(self, features: np.ndarray) -> None:
        """Add ``(n, d)`` float32 patch features."""
        if self._projection is None and self.seen == 0:
            self._projection = random_projection(features.shape[1], self.projection_dim, self.random_state)
        self.seen += features.shape[0]
        self._buffer.append(np.ascontiguousarray(features, dtype=np.float32))
        self._buffered += features.shape[0]
        if self._buffered >= self.chunk_size:
            self._reduce_buffer()

    def target_size(self) -> int:
        return int(min(self.max_size, max(1, math.ceil(self.ratio * self.seen))))

    def finalize(self) -> np.ndarray:
        """The selected bank ``(m, d)`` float32, with ``m = min(max_size, ceil(ratio * seen))``."""
        if self.seen == 0:
            raise InvalidParameterError("no features were added to the coreset")
        pool_parts = self._kept + self._buffer
        pool = np.concatenate(pool_parts, axis=0) if len(pool_parts) > 1 else pool_parts[0]
        self._buffer, self._kept, self._buffered = [], [], 0
        idx = greedy_kcenter(pool, self.target_size(), random_state=self.random_state, projection=self._projection)
        return np.ascontiguousarray(pool[idx])

    def memory_estimate_mb(self, n_patches: int, dim: int) -> tuple[float, float]:
        """(MB to hold every patch at once, MB this streaming selection holds at most)."""
        whole = n_patches * dim * 4 / 1e6
        kept = min(n_patches, math.ceil(self.ratio * self.oversample * n_patches)) * dim * 4 / 1e6
        bounded = min(whole, self.chunk_size * dim * 4 * 2 / 1e6 + kept)
        return whole, bounded

    def _reduce_buffer(self) -> None:
        chunk = np.concatenate(self._buffer, axis=0)
        self._buffer, self._buffered = [], 0
        keep = max(1, math.ceil(self.ratio * self.oversample * chunk.shape[0]))
        # Never keep more than the final bank could use from one chunk, times the oversampling.
        keep = min(keep, math.ceil(self.max_size * self.oversample))
        idx = greedy_kcenter(
            chunk, keep, random_state=self.random_state + 1 + self._chunks, projection=self._projection
        )
        self._chunks += 1
        self._kept.append(np.ascontiguousarray(chunk[idx]))
