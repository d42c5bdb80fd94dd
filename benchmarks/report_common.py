"""Formatting, loading and the section type shared by the parts of ``benchmarks/REPORT.md``'s writer (standard library only)."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable


BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RESULTS = BENCHMARKS / "results"
REPORT = BENCHMARKS / "REPORT.md"

GAN_MODELS = ("ganomaly", "skip-ganomaly")
GAN_PEER = "anomalib-ganomaly"
CLASSICAL_MODELS = ("difference", "gmm")
MODEL_ORDER = ("patchcore", "padim", *GAN_MODELS, GAN_PEER, *CLASSICAL_MODELS)


# ---------------------------------------------------------------------------------- formatting

DASH = "–"


def _num(value: Any, digits: int) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    if value != value:  # NaN
        return DASH
    return f"{value:.{digits}f}"


def _a(value: Any) -> str:
    """AUROC-like figures: 3 decimals."""
    return _num(value, 3)


def _ms(value: Any) -> str:
    """Milliseconds and seconds: 1 decimal."""
    return _num(value, 1)


def _mb(value: Any) -> str:
    return _num(value, 0)


def _x(value: Any) -> str:
    """A ratio: 2 decimals and a times sign."""
    text = _num(value, 2)
    return text if text == DASH else f"{text}×"


def _pct(value: Any, digits: int = 1) -> str:
    return DASH if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{100 * value:.{digits}f}"


def _pm(mean: Any, sd: Any, fmt: Callable[[Any], str] = _a) -> str:
    """``mean ± sd`` (``mean`` alone where there is no spread)."""
    text = fmt(mean)
    return text if text == DASH or sd is None else f"{text} ± {fmt(sd)}"


def _interval(low: Any, high: Any, fmt: Callable[[Any], str] = _a) -> str:
    return DASH if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"


def _signed(value: Any) -> str:
    return DASH if not isinstance(value, (int, float)) else f"{value:+.3f}"


def _rate(rate: dict | None) -> str:
    """A rate with its 95 % interval, in percent: ``0.9 [0.1, 3.1] (2/234)``."""
    if not rate:
        return DASH
    low, high = (rate.get("ci95") or [None, None])[:2]
    return f"{_pct(rate.get('rate'))} {_interval(low, high, _pct)} ({rate.get('k')}/{rate.get('n')})"


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


_NUMERIC = re.compile(r"^([-+]?[\d.]|\[|–$)")


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    """A Markdown table padded to aligned columns; figures right-aligned; columns with no figure at all left out."""
    body = [[str(cell).replace("|", "\\|").replace("\n", " ").strip() for cell in row] for row in rows]
    if not body:
        return []
    keep = [i for i in range(len(header)) if any(row[i] != DASH for row in body)]
    header, body = [header[i] for i in keep], [[row[i] for i in keep] for row in body]
    cells = [list(header), *body]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = [all(_NUMERIC.match(row[i]) for row in body) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|"
    return [line(cells[0]), rule, *(line(row) for row in body)]


def _show(path: Path | str) -> str:
    """A path as the repository's commands write it: relative to the repository root where it is under it."""
    path = Path(path)
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


def _data_path(recorded: str) -> str:
    """A recorded data path, relative to the repository root when it was recorded absolute."""
    return os.path.relpath(recorded, REPO) if os.path.isabs(recorded) else recorded


def _set_label(report: dict) -> str:
    return f"{Path(report.get('dataset') or '').parent.name}/{report.get('category')}"


def _model_key(name: str) -> tuple[int, str]:
    return (MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER), name)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` for fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _range(values: list[float]) -> str:
    values = sorted(v for v in values if isinstance(v, (int, float)))
    if not values:
        return DASH
    if len(values) == 1:
        return _x(values[0])
    return f"{_x(values[0])} – {_x(values[-1])} (median {_x(statistics.median(values))})"


class _Section:
    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


# ---------------------------------------------------------------------------------- eval reports


def _eval_reports(folder: Path) -> list[tuple[Path, dict]]:
    """``anomaly eval`` JSON reports in ``folder`` (others are left out)."""
    out = []
    for path in sorted(folder.glob("*.json")):
        doc = _load_json(path)
        if isinstance(doc, dict) and "detector" in doc and "image_auroc" in doc:
            out.append((path, doc))
    return out


def _params_line(reports: list[dict], model: str) -> str:
    """The parameters every report of ``model`` records alike."""
    params = [r.get("params") or {} for r in reports if r.get("detector") == model]
    if not params:
        return DASH
    common = {k: v for k, v in params[0].items() if all(p.get(k) == v for p in params[1:])}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in common.items())


def _weights_line(reports: list[dict]) -> str:
    seen = []
    for r in reports:
        b = r.get("backbone") or {}
        item = (b.get("name"), b.get("weights_source"), (b.get("weights_sha256") or "")[:12])
        if b and item not in seen:
            seen.append(item)
    return "; ".join(f"{n} weights from {s} (sha256 {h}…)" for n, s, h in seen) or DASH


def _by_set_and_model(reports: list[dict]) -> list[dict]:
    return sorted(reports, key=lambda r: (_set_label(r), _model_key(r.get("detector") or "")))


def _eval_provenance(reports: list[dict]) -> str:
    """When, where and with which packages ``benchmarks/foundation.py`` ran the reports (what they record)."""
    recorded = [r["provenance"] for r in reports if isinstance(r.get("provenance"), dict)]
    if not recorded:
        return "the reports record no machine, package versions or date."
    started = sorted(p.get("started") or "" for p in recorded)
    commits = sorted({(p.get("commit") or {}).get("sha") or "" for p in recorded} - {""})
    line = (f"run {started[0]} to {started[-1]} ({len(recorded)} of {len(reports)} reports record it); "
            f"machine: {_machine(recorded[-1].get('machine') or {})}; packages: {_versions(recorded[-1].get('packages'))}")
    return line + (f"; code {', '.join(c[:12] for c in commits)}" if commits else "") + "."


def _pair_step(report: dict) -> str:
    """How far one misordered (good, defective) pair moves image AUROC: the resolution of the test split."""
    n_defective = report.get("n_test_defective") or 0
    n_good = (report.get("n_test") or 0) - n_defective
    if not n_good or not n_defective:
        return DASH
    step = 1.0 / (n_good * n_defective)
    return f"{step:.3f}" if step >= 0.0005 else f"{step:.0e}"


def _machine(machine: dict) -> str:
    cpu = machine.get("cpu_id") or {}
    ident = (f" (family {cpu.get('family')} model {cpu.get('model')} stepping {cpu.get('stepping')}; "
             f"{' '.join(cpu.get('simd') or [])})") if cpu else ""
    return (f"{machine.get('cpu_count')} cores ({machine.get('usable_cores')} usable), {machine.get('cpu_model')}"
            f"{ident}, {machine.get('memory_gb')} GB, {machine.get('platform')}, Python {machine.get('python')}; "
            f"load average {machine.get('load_average')} at the start"
            + (f", {machine['load_average_end']} at the end" if machine.get("load_average_end") else ""))


def _versions(versions: dict | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (versions or {}).items()) or DASH
