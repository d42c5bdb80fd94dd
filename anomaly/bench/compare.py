"""The two systems of an ``anomaly bench`` case side by side: paired differences with their uncertainty.

Both systems fit on the same seeded training images and score the same test images,
interleaved, so every comparison is paired: image by image within a seed, and seed by
seed. Each compared figure (:data:`COMPARED`) gets

* ``value``: ours - peer for accuracy, ours / peer for costs;
* ``images``: a 95 % percentile bootstrap interval over the test images, where the
  figure is a statistic of per-image records (image AUROC from the raw image scores,
  latency from the per-image timings). One resample redraws each seed's test images with
  replacement, keeping the seed's count, the same draw for both systems. It says how far
  the test images drawn alone could move the figure;
* ``seeds``: the figure seed by seed (ours - peer, or ours / peer, on that seed's
  training and test draw), with their mean, sample standard deviation, least and
  largest: what the training draw (sub-sample, coreset start, channel subset) adds.

Pixel AUROC and AUPRO are accumulated over each seed's pixels inside the worker
(:class:`anomaly.metrics.PixelMetrics`) and ``bench.json`` keeps no per-image record of
them; fit time and peak memory are one figure per fit. These get the spread over the
seeds only. The seeds themselves are not resampled: three values make no bootstrap, so
their spread is shown as it is.

Nothing here judges: no tolerance and no bar, only figures and how far they could move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from anomaly.metrics import paired_auroc_difference

#: Bootstrap resamples of every interval, its coverage and the seed of its draws.
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
#: Resamples drawn at once (bounds the index matrix: this many x all the test images).
_CHUNK = 250

#: Ratios ours / peer of the figures: name -> path into the figures.
RATIO_KEYS = {
    "fit_seconds": ("fit_seconds",),
    "latency_p50": ("latency_ms", "p50"),
    "latency_p90": ("latency_ms", "p90"),
    "model_p50": ("model_ms", "p50"),
    "model_p90": ("model_ms", "p90"),
    "backbone_p50": ("backbone_ms_p50",),
    "peak_rss_mb": ("peak_rss_mb",),
    "peak_anon_mb": ("peak_anon_mb",),
    "bundle_mb": ("bundle_mb",),
}
#: Differences ours - peer of the accuracy figures.
DELTA_KEYS = ("image_auroc", "pixel_auroc", "aupro")
#: Per-image timing record of a replicate behind each compared latency.
LATENCY_RECORDS = {"latency_p50": "e2e_ms", "model_p50": "model_ms"}
#: Per-seed figure of a replicate behind each compared cost.
SEED_COSTS = ("fit_seconds", "peak_rss_mb")

#: How each compared figure is compared (``bench.json`` records this in its protocol).
COMPARED = {
    "image_auroc": "ours - peer, mean over the seeds; images: paired bootstrap over each seed's test images, "
                   "stratified by class (anomaly.metrics.paired_auroc_difference); seeds: per-seed differences",
    "pixel_auroc": "ours - peer, mean over the seeds; seeds only (no per-image record): per-seed differences",
    "aupro": "ours - peer, mean over the seeds; seeds only (no per-image record): per-seed differences",
    "latency_p50": "ours / peer of the median end-to-end latency over every seed's images; images: paired "
                   "bootstrap over each seed's test images, stratified by seed; seeds: per-seed ratios of medians",
    "model_p50": "ours / peer of the median model-call latency, as latency_p50",
    "fit_seconds": "ours / peer, mean over the seeds; seeds only (one fit per seed): per-seed ratios",
    "peak_rss_mb": "ours / peer, mean over the seeds; seeds only (one process per seed): per-seed ratios",
}


@dataclass(frozen=True)
class Interval:
    """A statistic of paired per-image records with its percentile bootstrap interval.

    Attributes:
        value: The statistic on the records as measured.
        low: Lower end of the interval.
        high: Upper end.
        level: Coverage, e.g. 0.95.
        resamples: Bootstrap resamples drawn.
    """

    value: float
    low: float
    high: float
    level: float
    resamples: int


def paired_ratio_of_medians(
    blocks: Sequence[tuple[Sequence[float | None], Sequence[float | None]]],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> Interval | None:
    """Median of system A over the median of system B, pooled over blocks, with a paired bootstrap interval.

    Each block is one seed's test images measured by both systems: ``a`` and ``b`` of
    shape ``(n_block,)``, entry ``i`` of both the same image. A pair where either value is
    missing (``None``, not finite) or not positive is left out. One resample redraws every
    block's pairs with replacement, keeping the block's size (stratified: each seed's
    images ran in their own pair of worker processes), takes the same draw for both
    systems (paired: an image slow to decode is slow on both sides, and the pairing
    cancels it), pools the blocks and divides the medians.

    Written here rather than with ``scipy.stats.bootstrap``: its ``paired=True`` resamples
    one pool of records and cannot keep each seed's count fixed.

    Args:
        blocks: ``(a, b)`` per seed, each ``(n_block,)``.
        resamples: Bootstrap resamples.
        level: Interval coverage.
        seed: Seed of the resampling.

    Returns:
        The ratio of the pooled medians and its interval; ``None`` when no pair is left.
    """
    kept = [_positive_pairs(a, b) for a, b in blocks]
    kept = [(a, b) for a, b in kept if len(a)]
    if not kept:
        return None
    a_all = np.concatenate([a for a, _ in kept])
    b_all = np.concatenate([b for _, b in kept])
    sizes = [len(a) for a, _ in kept]
    offsets = np.cumsum([0, *sizes[:-1]])
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        index = np.concatenate([offset + rng.integers(0, n, size=(count, n)) for offset, n in zip(offsets, sizes)],
                               axis=1)  # (count, n_pairs)
        draws[start:start + count] = np.median(a_all[index], axis=1) / np.median(b_all[index], axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return Interval(float(np.median(a_all) / np.median(b_all)), float(low), float(high), level, resamples)


def _positive_pairs(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(n_kept,)`` values of both where both are finite and positive."""
    a = np.array([np.nan if v is None else v for v in a], np.float64)
    b = np.array([np.nan if v is None else v for v in b], np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired records must have one entry per image on both sides, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    keep[keep] = (a[keep] > 0) & (b[keep] > 0)
    return a[keep], b[keep]


def seed_spread(values: Sequence[float | None], digits: int = 4) -> dict[str, Any] | None:
    """One figure per seed with its mean, sample standard deviation, least and largest.

    Args:
        values: ``(n_seeds,)``; ``None`` for a seed without the figure (left out).
        digits: Decimals kept.

    Returns:
        ``values`` (those present), ``mean``, ``sd`` (``None`` for one seed), ``min`` and
        ``max``; ``None`` when no seed has the figure.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {"values": [round(v, digits) for v in present], "mean": round(float(np.mean(present)), digits),
            "sd": round(float(np.std(present, ddof=1)), digits) if len(present) > 1 else None,
            "min": round(min(present), digits), "max": round(max(present), digits)}


def _get(fig: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    for key in path:
        fig = fig.get(key) if isinstance(fig, dict) else None
    return fig


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """Point figures of a case: ratios ours / peer (:data:`RATIO_KEYS`) and differences ``<key>_delta``.

    Args:
        ours: Our figures (:func:`anomaly.bench.figures.figures`).
        peer: The peer's figures.

    Returns:
        Each ratio and difference, ``None`` where either side lacks the figure.
    """
    out: dict[str, Any] = {}
    for name, path in RATIO_KEYS.items():
        a, b = _get(ours, path), _get(peer, path)
        out[name] = round(a / b, 3) if a is not None and b else None
    for name in DELTA_KEYS:
        a, b = ours.get(name), peer.get(name)
        out[f"{name}_delta"] = round(a - b, 4) if a is not None and b is not None else None
    return out


def differences(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Every figure of :data:`COMPARED` for one case, paired by image and by seed.

    Args:
        entry: A ``bench.json`` result: ``ours`` and ``peer`` figures with their
            ``replicates``, and ``test_sets`` (each seed's ``labels``, in the order of the
            replicates' ``scores``, ``e2e_ms`` and ``model_ms``).

    Returns:
        Per name of :data:`COMPARED`: ``None`` where no seed has both systems' figure, else
        ``value`` (ours - peer, or ours / peer), ``images`` (``low``, ``high``, ``level``,
        ``resamples`` of the bootstrap interval over the test images; ``None`` for a
        figure without per-image records or a seed without them) and ``seeds``
        (:func:`seed_spread` of the per-seed values). ``None`` without a peer.
    """
    ours, peer = entry.get("ours"), entry.get("peer")
    if not ours or not peer:
        return None
    by_seed = {r["seed"]: r for r in peer.get("replicates") or []}
    pairs = [(o, by_seed[o["seed"]]) for o in ours.get("replicates") or [] if o["seed"] in by_seed]
    out: dict[str, Any] = {}
    for key in DELTA_KEYS:
        per_seed = [None if o.get(key) is None or p.get(key) is None else o[key] - p[key] for o, p in pairs]
        images = _auroc_interval(entry["test_sets"], pairs) if key == "image_auroc" else None
        out[key] = _compared(images, seed_spread(per_seed), digits=4)
    for name, record in LATENCY_RECORDS.items():
        blocks = [(o.get(record), p.get(record)) for o, p in pairs]
        if not pairs or any(a is None or b is None for a, b in blocks):
            out[name] = None  # no per-image timings (a document of an older schema)
            continue
        per_seed = [_seed_ratio(a, b) for a, b in blocks]
        out[name] = _compared(paired_ratio_of_medians(blocks), seed_spread(per_seed, 3), digits=3)
    for key in SEED_COSTS:
        per_seed = [o[key] / p[key] if o.get(key) is not None and p.get(key) else None for o, p in pairs]
        out[key] = _compared(None, seed_spread(per_seed, 3), digits=3)
    return out


def _seed_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    a, b = _positive_pairs(a, b)
    return float(np.median(a) / np.median(b)) if len(a) else None


def _auroc_interval(test_sets: list[dict[str, Any]], pairs: list[tuple[dict, dict]]) -> Interval | None:
    """The paired image-AUROC difference over every seed's test images (``None`` if a seed lacks full scores)."""
    labels = {t["seed"]: t["labels"] for t in test_sets}
    blocks = []
    for o, p in pairs:
        a, b, y = o.get("scores"), p.get("scores"), labels.get(o["seed"])
        if not a or not b or y is None or not len(a) == len(b) == len(y) or None in a or None in b:
            return None  # refused images have no raw score to resample
        blocks.append((y, a, b))
    found = paired_auroc_difference(blocks, resamples=RESAMPLES, level=LEVEL, seed=SEED)
    return None if found is None else Interval(found.delta, found.low, found.high, found.level, found.resamples)


def _compared(images: Interval | None, seeds: dict[str, Any] | None, digits: int) -> dict[str, Any] | None:
    if images is None and seeds is None:
        return None
    value = images.value if images is not None else seeds["mean"]
    return {"value": round(value, digits),
            "images": None if images is None else {"low": round(images.low, digits),
                                                    "high": round(images.high, digits),
                                                    "level": images.level, "resamples": images.resamples},
            "seeds": seeds}
