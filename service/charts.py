"""Small server-side SVG charts (no JavaScript, no charting library): the calibration
histogram of a model's good scores with its thresholds, and first-pass yield over time.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

import numpy as np
from markupsafe import Markup

from anomaly.calibration import Calibration

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def calibration_svg(cal: Calibration, *, width: int = 640, height: int = 220, bins: int = 20) -> Markup:
    """Histogram of the cross-fitted good scores with the REVIEW and NG thresholds as vertical lines."""
    scores = np.asarray([s for s in cal.good_scores if s is not None], dtype=np.float64)
    marks = [(k, float(v)) for k, v in (("t_review", cal.t_review), ("t_ng", cal.t_ng)) if v is not None]
    if scores.size == 0 and not marks:
        return Markup('<p class="muted">No calibration scores stored with this version.</p>')
    values = np.concatenate([scores, [v for _, v in marks]])
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-6)
    lo, hi = lo - pad, hi + pad
    if scores.size:
        counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    else:
        counts, edges = np.zeros(bins, dtype=int), np.linspace(lo, hi, bins + 1)
    left, right, top, bottom = 40, width - 10, 24, height - 30
    x = lambda v: left + (v - lo) / (hi - lo) * (right - left)  # noqa: E731
    peak = max(int(counts.max()), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="good-score histogram with thresholds">',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#555"/>']
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        if count:
            h = (bottom - top) * count / peak
            parts.append(f'<rect x="{x(a) + 1:.1f}" y="{bottom - h:.1f}" width="{max(x(b) - x(a) - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="#7aa6c2"><title>{int(count)} good image(s) in '
                         f'{_fmt(a)}..{_fmt(b)}</title></rect>')
    colours = {"t_review": "#e69f00", "t_ng": "#d62728"}
    labels = {"t_review": "REVIEW", "t_ng": "NG"}
    for i, (key, value) in enumerate(marks):
        parts.append(f'<line x1="{x(value):.1f}" y1="{top - 10}" x2="{x(value):.1f}" y2="{bottom}" '
                     f'stroke="{colours[key]}" stroke-width="2" stroke-dasharray="5,3"/>')
        parts.append(f'<text x="{x(value) + 4:.1f}" y="{top - 10 + 12 * (i + 1)}" fill="{colours[key]}" '
                     f'font-size="12">{labels[key]} {_fmt(value)}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="11" fill="#555">{_fmt(lo)}</text>')
    parts.append(f'<text x="{right}" y="{height - 8}" font-size="11" fill="#555" text-anchor="end">{_fmt(hi)}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{height - 8}" font-size="11" fill="#555" '
                 f'text-anchor="middle">anomaly score of good images (n={scores.size})</text>')
    parts.append(f'<text x="4" y="{top + 4}" font-size="11" fill="#555">{peak}</text></svg>')
    return Markup("".join(parts))


def yield_svg(days: Sequence[dict[str, Any]], *, width: int = 720, height: int = 240) -> Markup:
    """First-pass yield (0..100 %) per day, one line per model."""
    if not days:
        return Markup('<p class="muted">No inspections in this period.</p>')
    dates = sorted({d["day"] for d in days})
    models = sorted({d["model"] for d in days})
    left, right, top, bottom = 44, width - 140, 12, height - 34
    step = (right - left) / max(len(dates) - 1, 1)
    x = {day: left + i * step if len(dates) > 1 else (left + right) / 2 for i, day in enumerate(dates)}
    y = lambda v: bottom - v * (bottom - top)  # noqa: E731
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="first-pass yield per day">']
    for level in (0.0, 0.5, 0.9, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(level):.1f}" x2="{right}" y2="{y(level):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 4}" y="{y(level) + 4:.1f}" font-size="11" fill="#555" '
                     f'text-anchor="end">{level:.0%}</text>')
    for i, model in enumerate(models):
        colour = PALETTE[i % len(PALETTE)]
        points = [(x[d["day"]], y(d["first_pass_yield"] or 0.0), d) for d in days if d["model"] == model]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, d in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"><title>{escape(model)} '
                         f'{escape(d["day"])}: {d["first_pass_yield"]:.1%} of {d["total"]} '
                         f'(NG {d["ng"]}, REVIEW {d["review"]})</title></circle>')
        parts.append(f'<rect x="{right + 12}" y="{top + 16 * i}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{right + 26}" y="{top + 9 + 16 * i}" font-size="12">{escape(model[:18])}</text>')
    shown = dates if len(dates) <= 8 else dates[:: max(1, len(dates) // 8)]
    for day in shown:
        parts.append(f'<text x="{x[day]:.1f}" y="{bottom + 16}" font-size="11" fill="#555" '
                     f'text-anchor="middle">{escape(day[5:])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
