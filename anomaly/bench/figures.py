"""One system's figures for one ``anomaly bench`` case, over its replicates (seeds).

Accuracy is the mean over the seeds with its sample standard deviation; latency
percentiles pool every seed's images; fit seconds are the median over the seeds and peak
memory the largest. Each seed's own figures, raw image scores and per-image latencies are
kept in ``replicates``, so that :mod:`anomaly.bench.compare` can pair them with the other
system's, image by image and seed by seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Accuracy figures, averaged over the replicates.
ACCURACY_KEYS = ("image_auroc", "pixel_auroc", "aupro")


def _percentile(values: list[float | None], q: float) -> float | None:
    """The ``q``-th percentile of the values that are not ``None``, to 3 decimals (``None`` if none)."""
    values = [v for v in values if v is not None]
    return round(float(np.percentile(values, q)), 3) if values else None


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 6) if values else None


def _std(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's figures for a case, over its replicates.

    Args:
        runs: One per seed, in seed order: ``seed``, the worker's ``fit`` and ``finish``
            replies, ``timings`` (one reply per test image, in the order of the case's
            ``test_sets``) and ``hello``.

    Returns:
        The figures documented in :mod:`anomaly.bench` (``ours`` / ``peer`` of a result).
    """
    timings = [t for run in runs for t in run["timings"]]
    fits = [run["fit"] for run in runs]
    finishes = [run["finish"] for run in runs]

    def col(key: str) -> list[float | None]:
        return [t.get(key) for t in timings]

    def most(key: str) -> float | None:
        values = [f.get(key) for f in finishes if f.get(key) is not None]
        return max(values) if values else None

    fig: dict[str, Any] = {key: _mean([f.get(key) for f in finishes]) for key in ACCURACY_KEYS}
    fig.update({f"{key}_std": _std([f.get(key) for f in finishes]) for key in ACCURACY_KEYS})
    fig.update({
        "pixel_metrics_note": finishes[0].get("pixel_metrics_note"),
        "fit_seconds": _percentile([f["fit_seconds"] for f in fits], 50),
        "model_load_seconds": _percentile([f.get("model_load_seconds") for f in fits], 50),
        "latency_ms": {"p50": _percentile(col("e2e_ms"), 50), "p90": _percentile(col("e2e_ms"), 90)},
        "model_ms": {"p50": _percentile(col("model_ms"), 50), "p90": _percentile(col("model_ms"), 90)},
        "decode_ms_p50": _percentile(col("decode_ms"), 50),
        "preprocess_ms_p50": _percentile(col("preprocess_ms"), 50),
        "backbone_ms_p50": _percentile(col("backbone_ms"), 50),
        "latency_over_backbone": None,
        "peak_rss_mb": most("peak_rss_mb"),
        "fit_peak_rss_mb": most("fit_peak_rss_mb"),
        "import_rss_mb": most("import_rss_mb"),
        "peak_anon_mb": most("peak_anon_mb"),
        "fit_peak_anon_mb": most("fit_peak_anon_mb"),
        "import_anon_mb": most("import_anon_mb"),
        "bundle_mb": max((f.get("bundle_mb") for f in fits if f.get("bundle_mb") is not None), default=None),
        "bundle_backbone_mb": fits[0].get("bundle_backbone_mb"),
        "bundle_holds_backbone": fits[0].get("bundle_holds_backbone"),
        "torch_threads": runs[0]["hello"].get("torch_threads"),
        "params": fits[0].get("params"),
        "backbone": fits[0].get("backbone"),
        "training": fits[0].get("training"),
        "replicates": [{
            "seed": run["seed"],
            **{key: run["finish"].get(key) for key in ACCURACY_KEYS},
            "fit_seconds": run["fit"]["fit_seconds"],
            "latency_p50_ms": _percentile([t.get("e2e_ms") for t in run["timings"]], 50),
            "peak_rss_mb": run["finish"].get("peak_rss_mb"),
            # raw image scores in the order of the entry's ``test_sets`` for this seed
            # (``None``: an image the detector refused, see ``n_refused``)
            "scores": [None if t["score"] is None else float(f"{t['score']:.7g}") for t in run["timings"]],
            # per-image timings in the same order: what the paired latency interval resamples
            "e2e_ms": [_ms(t.get("e2e_ms")) for t in run["timings"]],
            "model_ms": [_ms(t.get("model_ms")) for t in run["timings"]],
            "n_refused": run["finish"].get("n_refused", 0),
            "n_refused_good": run["finish"].get("n_refused_good", 0),
        } for run in runs],
        "n_refused": sum(run["finish"].get("n_refused", 0) for run in runs),
        "n_refused_good": sum(run["finish"].get("n_refused_good", 0) for run in runs),
    })
    if fig["latency_ms"]["p50"] and fig["backbone_ms_p50"]:
        fig["latency_over_backbone"] = round(fig["latency_ms"]["p50"] / fig["backbone_ms_p50"], 3)
    return fig
