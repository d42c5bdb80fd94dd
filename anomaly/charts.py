"""SVG charts drawn on the server (no JavaScript, no charting library), shared by the service's
pages and the onboarding report file: the calibration histogram of a model's good scores."""

from __future__ import annotations

import numpy as np

from anomaly.calibration import Calibration


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def calibration_svg(cal: Calibration, *, width: int = 640, height: int = 220, bins: int = 20) -> str:
    """Histogram of the cross-fitted good scores with the REVIEW and NG thresholds as vertical lines."""
    scores = np.asarray([s for s in cal.good_scores if s is not None], dtype=np.float64)
    marks = [(k, float(v)) for k, v in (("t_review", cal.t_review), ("t_ng", cal.t_ng)) if v is not None]
    if scores.size == 0 and not marks:
        return '<p class="muted">No calibration scores stored with this version.</p>'
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
    return "".join(parts)
