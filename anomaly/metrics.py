"""Evaluation metrics (numpy/OpenCV/scikit-learn; no torch).

* image AUROC and the F1-optimal threshold: scikit-learn;
* pixel AUROC and AUPRO over maps at each image's own resolution: the maps of a whole
  test set can be hundreds of millions of pixels, so both are computed from histograms of
  the map values over a fixed set of thresholds (``n_bins`` quantiles of the scores),
  accumulated image by image. With 4,000 bins the pixel AUROC differs from the exact value
  by well under 1e-3 (see tests).

AUPRO (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021): for each
threshold, the per-region overlap (PRO) is the mean over ground-truth connected components
of the fraction of the component's pixels above the threshold, and the false-positive
rate is over all defect-free pixels; PRO is integrated over FPR from 0 to ``max_fpr``
(0.3) and divided by ``max_fpr``.

Written here because scikit-learn has no PRO and its exact ROC would hold every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score


def rank_refused_above(scores: Sequence[float | None], *also: float) -> list[float]:
    """Scores where each refused part (``None``: not aligned, ``ALIGNMENT_FAILED``) ranks first.

    A refused part is rejected on the line, so it takes a value above every scored part
    and above ``also`` (e.g. the thresholds it must count as passing); refused parts tie.

    Args:
        scores: Image scores, ``None`` for each part refused.
        also: Values the refused parts must also lie above.

    Returns:
        The scores, each ``None`` replaced by the largest of the scored values and
        ``also``, plus one (``1.0`` when there is none).
    """
    known = [float(s) for s in scores if s is not None] + [float(v) for v in also]
    top = (max(known) if known else 0.0) + 1.0
    return [top if s is None else float(s) for s in scores]


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Image-level AUROC; ``None`` when only one class is present."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


@dataclass(frozen=True)
class PairedAurocDifference:
    """Image AUROC of system A minus system B on the same test images, with a bootstrap interval.

    Attributes:
        delta: Mean over the blocks (seeds) of AUROC(A) - AUROC(B).
        low: Lower end of the interval (``level``, percentile bootstrap).
        high: Upper end.
        level: Coverage of the interval, e.g. 0.95.
        resamples: Bootstrap resamples drawn.
    """

    delta: float
    low: float
    high: float
    level: float
    resamples: int


def paired_auroc_difference(
    blocks: Sequence[tuple[Sequence[int], Sequence[float], Sequence[float]]],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedAurocDifference | None:
    """How far apart two systems' image AUROCs are, given the test images drawn.

    Each block is one replicate (a seed's test sub-sample) scored by both systems: the
    same ``labels`` ``(n,)``, scores ``a`` and ``b`` ``(n,)``. One resample redraws, in
    every block, its good and its defective images with replacement (stratified, so each
    keeps both classes), the same draw for both systems (paired), and averages
    AUROC(A) - AUROC(B) over the blocks. The interval covers the test-image sampling; what
    the training draw adds shows in the spread of the blocks.

    Written here rather than with ``scipy.stats.bootstrap``, which cannot stratify by
    class: with the pairwise comparison matrix ``C[i, j] = [s_bad_j > s_good_i]`` (ties
    one half), a resample's AUROC is ``w_good @ C @ w_bad / (n_good * n_bad)`` for the
    draw's multiplicities ``w``, exact and vectorised over resamples.

    Args:
        blocks: ``(labels, scores_a, scores_b)`` per replicate.
        resamples: Bootstrap resamples.
        level: Interval coverage.
        seed: Seed of the resampling.

    Returns:
        The difference and its interval; ``None`` when no block has both classes.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    point, used = 0.0, 0
    for labels, a, b in blocks:
        y = np.asarray(labels).astype(bool)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if y.all() or not y.any():
            continue
        diff = _pair_wins(a[~y], a[y]) - _pair_wins(b[~y], b[y])  # (n_good, n_bad)
        n_good, n_bad = diff.shape
        point += float(diff.mean())
        w_good = rng.multinomial(n_good, np.full(n_good, 1.0 / n_good), size=resamples).astype(np.float64)
        w_bad = rng.multinomial(n_bad, np.full(n_bad, 1.0 / n_bad), size=resamples).astype(np.float64)
        total += np.einsum("ri,ri->r", w_good @ diff, w_bad) / (n_good * n_bad)
        used += 1
    if not used:
        return None
    total /= used
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(total, [tail, 100.0 - tail])
    return PairedAurocDifference(point / used, float(low), float(high), level, resamples)


def _pair_wins(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``(n_good, n_bad)``: 1 where the defective image scores higher, 1/2 on ties, else 0."""
    return (bad[None, :] > good[:, None]) + 0.5 * (bad[None, :] == good[:, None])


def f1_max(labels: Sequence[int], scores: Sequence[float]) -> tuple[float | None, float | None]:
    """Best F1 over all thresholds and the threshold reaching it (the "oracle")."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return None, None
    precision, recall, thresholds = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[best]), float(thresholds[best]) if len(thresholds) else None


def pro_curve(fpr: np.ndarray, pro: np.ndarray, max_fpr: float = 0.3) -> float:
    """Area under PRO(FPR) from 0 to ``max_fpr``, normalised by ``max_fpr``.

    Args:
        fpr: ``(T,)`` false-positive rates, any order.
        pro: ``(T,)`` PRO values at the same thresholds.
        max_fpr: Integration limit.
    """
    order = np.lexsort((pro, fpr))
    fpr, pro = np.asarray(fpr, dtype=np.float64)[order], np.asarray(pro, dtype=np.float64)[order]
    fpr = np.concatenate([[0.0], fpr])
    pro = np.concatenate([[0.0], pro])
    if fpr[-1] < max_fpr:
        fpr = np.append(fpr, max_fpr)
        pro = np.append(pro, pro[-1])
    inside = fpr <= max_fpr
    x, y = fpr[inside], pro[inside]
    if x[-1] < max_fpr:
        j = int(np.searchsorted(fpr, max_fpr))
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_end = y0 if x1 == x0 else y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x, y = np.append(x, max_fpr), np.append(y, y_end)
    return float(np.trapezoid(y, x) / max_fpr)


@dataclass
class PixelMetrics:
    """Accumulates pixel AUROC and AUPRO over a test set, one image at a time.

    Args:
        thresholds: Increasing ``(T,)`` thresholds; a pixel is "positive" at threshold
            ``t`` when its score is ``>= t``. Use :func:`quantile_thresholds`.
        max_fpr: AUPRO integration limit.
    """

    thresholds: np.ndarray
    max_fpr: float = 0.3
    _neg: np.ndarray = field(init=False)
    _pos: np.ndarray = field(init=False)
    _pro_sum: np.ndarray = field(init=False)
    _regions: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64)
        t = len(self.thresholds)
        self._neg = np.zeros(t + 1, dtype=np.int64)
        self._pos = np.zeros(t + 1, dtype=np.int64)
        self._pro_sum = np.zeros(t, dtype=np.float64)

    def add(self, amap: np.ndarray, mask: np.ndarray) -> None:
        """Add one image.

        Args:
            amap: ``(H, W)`` anomaly map.
            mask: ``(H, W)`` bool ground truth.
        """
        if amap.shape != mask.shape:
            raise ValueError(f"map shape {amap.shape} differs from mask shape {mask.shape}")
        bins = np.searchsorted(self.thresholds, amap.ravel(), side="right")  # pixels >= t_k are in bins > k
        m = mask.ravel()
        t = len(self.thresholds)
        self._neg += np.bincount(bins[~m], minlength=t + 1)
        if m.any():
            self._pos += np.bincount(bins[m], minlength=t + 1)
            n_labels, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            lab = labels.ravel()[m]
            b = bins[m]
            for region in range(1, n_labels):
                rb = b[lab == region]
                hist = np.bincount(rb, minlength=t + 1)
                above = hist[::-1].cumsum()[::-1][1:]  # pixels >= thresholds[k]
                self._pro_sum += above / rb.size
                self._regions += 1

    def _rates(self, counts: np.ndarray) -> np.ndarray:
        total = counts.sum()
        return counts[::-1].cumsum()[::-1][1:] / max(total, 1)

    def auroc(self) -> float | None:
        if self._pos.sum() == 0 or self._neg.sum() == 0:
            return None
        tpr = np.concatenate([[1.0], self._rates(self._pos), [0.0]])
        fpr = np.concatenate([[1.0], self._rates(self._neg), [0.0]])
        return float(-np.trapezoid(tpr, fpr))

    def aupro(self) -> float | None:
        if self._regions == 0 or self._neg.sum() == 0:
            return None
        return pro_curve(self._rates(self._neg), self._pro_sum / self._regions, self.max_fpr)


def quantile_thresholds(samples: Sequence[np.ndarray], n_bins: int = 4000, per_map: int = 20000, seed: int = 0) -> np.ndarray:
    """Thresholds at quantiles of the map values (a seeded subsample of each map).

    Args:
        samples: Anomaly maps.
        n_bins: Number of thresholds.
        per_map: Values drawn from each map.
    """
    rng = np.random.default_rng(seed)
    values = []
    for amap in samples:
        flat = amap.ravel()
        if flat.size > per_map:
            flat = flat[rng.integers(0, flat.size, per_map)]
        values.append(flat)
    pool = np.concatenate(values).astype(np.float64)
    qs = np.unique(np.quantile(pool, np.linspace(0.0, 1.0, n_bins)))
    return qs
