"""Coreset subsampling of patch features by approximate greedy k-center.

PatchCore (Roth et al., CVPR 2022, section 3.2) keeps a subset of the training patch
features that covers the whole set: greedy k-center on a seeded random projection (the
Johnson-Lindenstrauss trick makes each step cheap).

:class:`StreamingCoreset` selects over every patch at once (the paper's exact greedy
selection) while the patches and their projections fit a memory budget (256 MB by default)
and the selection a compute budget. Beyond them it never holds all features: it reduces
each chunk of patches to a chunk coreset (oversampled) and runs the final greedy selection
over the union of the chunk coresets. Greedy k-center coresets compose this way with a
bounded loss in coverage (Indyk, Mahabadi, Mahdian & Mirrokni, "Composable core-sets for
diversity and coverage maximization", PODS 2014), but the loss can show in accuracy, and
within the budgets the exact selection is also the faster one, so it is preferred while it
fits (``benchmarks/coreset_time.py`` times both ways; see docs/methods.md).

Written here rather than taken from a library: scikit-learn and faiss have no k-center,
and the streaming reduction is ours.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from anomaly.errors import InvalidParameterError

log = logging.getLogger(__name__)

#: Exact selection while the patches and their projections take at most this many MB ...
EXACT_MAX_MB = 256.0
#: ... and the selection at most this many row reads (rows x greedy steps), a bound under
#: which the exact selection is faster than the streamed one
#: (``python benchmarks/coreset_time.py`` times both ways).
EXACT_MAX_ROW_STEPS = 2**29


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
    """Greedy k-center over a stream of patch features with bounded memory and time.

    Exact while it fits: the stream keeps every patch until they and their projections
    outgrow ``exact_max_mb`` or the final selection would read more than
    ``exact_max_row_steps`` rows; :meth:`finalize` then runs one greedy selection over all
    of them. Once over either budget, the stream merges and reduces: every
    ``chunk_size`` patches are reduced to a chunk coreset of
    ``min(max(oversample * ratio, min_keep_fraction) * chunk, oversample * max_size)`` rows; whenever the kept
    chunk coresets together outgrow a chunk and the cap ``oversample * max_size``, they
    are reduced again to that cap. The final greedy selection runs over what is kept.
    Greedy k-center coresets compose this way with a bounded loss in coverage (Indyk et
    al., PODS 2014). Small chunks are what make it fast: one greedy step reads the whole
    chunk, and a chunk of 20,000 projected patches (10 MB) stays in the CPU's cache, where
    a step costs a tenth of what it costs on a 60,000-patch chunk.

    Args:
        ratio: Fraction of all patches to keep.
        max_size: Upper bound on the final bank size (caps scoring cost and memory).
        chunk_size: Patches buffered before a chunk is reduced.
        oversample: Chunk coresets keep ``oversample`` times what the bank needs of them.
        min_keep_fraction: ... and at least this share of each chunk. At small ratios
            (anomalib's matched 1 %), keeping only twice the bank's share left two
            candidates per bank slot, too few for the final greedy pass to find the
            patches the exact selection picks, which cost image AUROC; 20 % brought the
            streamed selection level with the exact one. Ratios from 10 % on
            (2 x 10 % = 20 %) are unaffected.
        projection_dim: Dimension of the random projection used for distances.
        random_state: Seed for the projection and the first centres.
        exact_max_mb: Memory budget of the exact selection (patches and projections);
            ``0`` streams from the first chunk.
        exact_max_row_steps: Compute budget of the exact selection, rows x greedy steps.
        share: This stream's share of a whole that is selected from at once (a cross-fit
            fold: ``1 / folds``); the exact budgets are checked for ``seen / share`` rows.
    """

    def __init__(
        self,
        *,
        ratio: float,
        max_size: int,
        chunk_size: int = 20_000,
        oversample: float = 2.0,
        min_keep_fraction: float = 0.2,
        projection_dim: int = 128,
        random_state: int = 0,
        exact_max_mb: float = EXACT_MAX_MB,
        exact_max_row_steps: int = EXACT_MAX_ROW_STEPS,
        share: float = 1.0,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise InvalidParameterError(f"coreset ratio must be in (0, 1], got {ratio}")
        if max_size < 1:
            raise InvalidParameterError(f"max bank size must be >= 1, got {max_size}")
        if chunk_size < 1 or oversample < 1.0:
            raise InvalidParameterError(f"chunk_size must be >= 1 and oversample >= 1, got {chunk_size}, {oversample}")
        if not 0.0 <= min_keep_fraction <= 1.0:
            raise InvalidParameterError(f"min_keep_fraction must be in [0, 1], got {min_keep_fraction}")
        if exact_max_mb < 0 or exact_max_row_steps < 0 or not 0.0 < share <= 1.0:
            raise InvalidParameterError(
                f"exact budgets must be >= 0 and share in (0, 1], got {exact_max_mb}, {exact_max_row_steps}, {share}")
        self.ratio = ratio
        self.max_size = int(max_size)
        self.chunk_size = int(chunk_size)
        self.oversample = float(oversample)
        self.min_keep_fraction = float(min_keep_fraction)
        self.projection_dim = int(projection_dim)
        self.random_state = int(random_state)
        self.exact_max_mb = float(exact_max_mb)
        self.exact_max_row_steps = int(exact_max_row_steps)
        self.share = float(share)
        #: True while every patch is kept for one exact selection.
        self.exact = True
        self.seen = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._kept: list[np.ndarray] = []
        self._projection: np.ndarray | None = None
        self._reductions = 0

    @property
    def cap(self) -> int:
        """Most rows the kept coresets are reduced to: ``oversample * max_size``."""
        return math.ceil(self.max_size * self.oversample)

    def add(self, features: np.ndarray) -> None:
        """Add ``(n, d)`` float32 patch features."""
        if self._projection is None and self.seen == 0:
            self._projection = random_projection(features.shape[1], self.projection_dim, self.random_state)
        self.seen += features.shape[0]
        self._buffer.append(np.ascontiguousarray(features, dtype=np.float32))
        self._buffered += features.shape[0]
        if self.exact and not self.fits_exact(self.seen, features.shape[1]):
            self.exact = False
            log.info("coreset: %d patches outgrow the exact selection's budgets; streaming in chunks of %d",
                     self.seen, self.chunk_size)
        while not self.exact and self._buffered >= self.chunk_size:
            chunk = np.concatenate(self._buffer, axis=0)
            rest = chunk[self.chunk_size :]
            self._buffer = [rest] if len(rest) else []
            self._buffered = len(rest)
            self._kept.append(self._reduce(chunk[: self.chunk_size], self._chunk_keep(self.chunk_size)))
            kept = sum(len(k) for k in self._kept)
            if kept > max(self.chunk_size, self.cap):
                self._kept = [self._reduce(np.concatenate(self._kept, axis=0), self.cap)]

    def target_size(self, seen: int | None = None) -> int:
        """Bank size for ``seen`` patches (default: those added so far)."""
        seen = self.seen if seen is None else seen
        return int(min(self.max_size, max(1, math.ceil(self.ratio * seen))))

    def fits_exact(self, n_patches: int, dim: int) -> bool:
        """Whether ``n_patches`` of ``dim`` features (this stream's share) fit the exact budgets."""
        rows = n_patches / self.share
        mb = rows * self._exact_row_bytes(dim) / 2**20
        return mb <= self.exact_max_mb and rows * self.target_size(math.ceil(rows)) <= self.exact_max_row_steps

    def _exact_row_bytes(self, dim: int) -> int:
        """Bytes the exact selection holds per patch: the features and, if any, their projection."""
        projected = self.projection_dim if 0 < self.projection_dim < dim else 0  # no projection: no copy
        return (dim + projected) * 4

    def pool(self) -> np.ndarray:
        """Everything kept so far, ``(m, d)``: every patch while exact, else at most :attr:`cap` rows.

        Pools of several streams (say, the folds of a cross-fit) can be concatenated and
        selected from with :meth:`select`: coresets compose. An exact stream's pool is every
        patch it was given.
        """
        if self.seen == 0:
            raise InvalidParameterError("no features were added to the coreset")
        if self.exact:
            pool = np.concatenate(self._buffer, axis=0) if len(self._buffer) > 1 else self._buffer[0]
            self._buffer = [pool]  # the parts are freed: one copy of the patches, not two
            return pool
        parts = list(self._kept)
        if self._buffer:
            rest = np.concatenate(self._buffer, axis=0)
            parts.append(self._reduce(rest, self._chunk_keep(len(rest))) if parts else rest)
        pool = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return self._reduce(pool, self.cap) if len(pool) > self.cap else pool

    def select(self, pool: np.ndarray, n_select: int, random_state: int | None = None) -> np.ndarray:
        """The greedy k-center selection of ``n_select`` rows of ``pool``, with this stream's projection."""
        seed = self.random_state if random_state is None else int(random_state)
        idx = greedy_kcenter(pool, n_select, random_state=seed, projection=self._projection)
        return np.ascontiguousarray(pool[idx])

    def finalize(self) -> np.ndarray:
        """The selected bank ``(m, d)`` float32, with ``m = min(max_size, ceil(ratio * seen))``."""
        pool = self.pool()
        self._buffer, self._kept, self._buffered = [], [], 0
        return self.select(pool, self.target_size())

    def memory_estimate_mb(self, n_patches: int, dim: int) -> tuple[float, float]:
        """(MB to hold every patch at once, MB this selection holds at most) for ``n_patches``.

        The exact selection holds every patch and its projection; the streamed one two
        chunks and the kept chunk coresets.
        """
        whole = n_patches * dim * 4 / 1e6
        if self.fits_exact(n_patches, dim):
            return whole, n_patches * self._exact_row_bytes(dim) / 1e6
        kept = min(n_patches, math.ceil(self._keep_share * n_patches), self.cap + self.chunk_size)
        bounded = min(whole, (self.chunk_size * 2 + kept) * dim * 4 / 1e6)
        return whole, bounded

    @property
    def _keep_share(self) -> float:
        """Share of each chunk its coreset keeps (before the cap)."""
        return max(self.ratio * self.oversample, self.min_keep_fraction)

    def _chunk_keep(self, n: int) -> int:
        return max(1, min(math.ceil(self._keep_share * n), self.cap))

    def _reduce(self, x: np.ndarray, keep: int) -> np.ndarray:
        self._reductions += 1
        if keep >= len(x):
            return x
        return self.select(x, keep, self.random_state + self._reductions)
