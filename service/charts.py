"""Small server-side SVG charts (no JavaScript, no charting library): the calibration
histogram of a model's good scores with its thresholds (drawn by :mod:`anomaly.charts`, which
the onboarding report shares), and first-pass yield over time.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from markupsafe import Markup

from anomaly import charts
from anomaly.calibration import Calibration

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def calibration_svg(cal: Calibration, *, width: int = 640, height: int = 220, bins: int = 20) -> Markup:
    """Histogram of the cross-fitted good scores with the REVIEW and NG thresholds (see :mod:`anomaly.charts`)."""
    return Markup(charts.calibration_svg(cal, width=width, height=height, bins=bins))


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


def drift_svg(paths: dict[str, Sequence[float]], threshold: float, *, alarm: bool, width: int = 720,
              height: int = 220) -> Markup:
    """The drift tests' CUSUM paths over the recent parts, with the alarm threshold (see :mod:`anomaly.drift`)."""
    n = max((len(p) for p in paths.values()), default=0)
    if n == 0:
        return Markup('<p class="muted">No scored parts of this version yet.</p>')
    top_value = max(threshold * 1.15, max(max(p) for p in paths.values() if len(p)))
    left, right, top, bottom = 44, width - 170, 12, height - 30
    x = lambda i: left + (right - left) * (i / max(n - 1, 1))  # noqa: E731
    y = lambda v: bottom - (bottom - top) * (v / top_value)  # noqa: E731
    label = "alarm" if alarm else "no alarm"
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="drift tests over the last {n} parts: {label}">',
             f'<line x1="{left}" y1="{y(threshold):.1f}" x2="{right}" y2="{y(threshold):.1f}" stroke="#d62728" '
             f'stroke-dasharray="6 4"/><text x="{left - 4}" y="{y(threshold) + 4:.1f}" font-size="11" fill="#d62728" '
             f'text-anchor="end">alarm</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>']
    names = {"review": "above t_review", "median": "above the good median"}
    for i, (test, path) in enumerate(paths.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{x(j):.1f},{y(v):.1f}" for j, v in enumerate(path))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                     f'<rect x="{right + 12}" y="{top + 16 * i}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{right + 26}" y="{top + 9 + 16 * i}" font-size="12">{escape(names.get(test, test))}</text>')
    parts.append(f'<text x="{(left + right) / 2:.1f}" y="{bottom + 18}" font-size="11" fill="#555" '
                 f'text-anchor="middle">the last {n} parts, oldest left ({escape(label)})</text></svg>')
    return Markup("".join(parts))
