"""``benchmarks/REPORT.md``: one Markdown report rendered from the JSON results under ``benchmarks/results``.

    python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/REPORT.md]

Every benchmark script that writes JSON results calls :func:`write_report` after writing
them, so each run refreshes the report; after ``anomaly bench --out benchmarks/results/...``
run this script yourself. One section per benchmark, from whatever results exist (a
missing folder is skipped): what was measured, the command that produces the figures
(the one the JSON records where it records one, otherwise the script's documented command
with the arguments the JSON records), the machine, packages and date the JSON records,
and the figures. Nothing else goes in: the report holds no prose kept by hand, and the
same results always give the same file.

Standard library only (no numpy, torch or ``anomaly`` import), so it runs anywhere in a
fraction of a second.
"""

from __future__ import annotations

import argparse
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


def _foundation(results: Path) -> list[_Section]:
    folder = results / "foundation"
    reports = _by_set_and_model([doc for _, doc in _eval_reports(folder)])
    if not reports:
        return []
    models = sorted({r["detector"] for r in reports}, key=_model_key)
    datasets = sorted({str(Path(_data_path(r["dataset"])).parent.parent) for r in reports if r.get("dataset")})
    s = _Section("Foundation: every set through anomaly eval")
    s.add(
        "**What**: `anomaly eval` of each model with the parameters listed below on every MVTec-layout set: fitted on "
        "all of `train/good` (thresholds cross-fitted on those goods alone), scored on all of `test/`, one run "
        "per set and model, each in its own process (peak RSS and timings per run). Latency is per image, "
        "batch of one, from the file to score and map (`p50 ms`, `p90 ms`); `p50 / floor` is p50 over the "
        "backbone's own forward; `inspect p50 ms` goes on to the verdict, regions and grading, the whole of what "
        "the service computes for a part (reports from before it was measured show n/a).",
        "",
        "**Command**: `python benchmarks/foundation.py "
        + "".join(f"--datasets {d} " for d in datasets)
        + f"--models {' '.join(models)} --out {_show(folder)}`",
        "",
        "**Provenance** (as the reports record it): " + _weights_line(reports) + "; " + _eval_provenance(reports),
        "",
    )
    for model in models:
        s.add(f"- `{model}` parameters: {_params_line(reports, model)}")
    s.add("")
    s.add(*_table(
        ["set", "model", "train", "test good / defective", "image AUROC", "one pair moves it by", "pixel AUROC",
         "AUPRO", "F1 max", "fit s", "p50 ms", "p90 ms", "decode ms", "backbone ms", "p50 / floor", "inspect p50 ms",
         "peak RSS MB"],
        ([_set_label(r), r["detector"], r.get("n_train"),
          f"{(r.get('n_test') or 0) - (r.get('n_test_defective') or 0)} / {r.get('n_test_defective')}",
          _a(r.get("image_auroc")), _pair_step(r), _a(r.get("pixel_auroc")), _a(r.get("aupro")),
          _a(r.get("f1_max_image")), _ms(r.get("fit_seconds")), _ms(_get(r, "latency_ms", "p50")), _ms(_get(r, "latency_ms", "p90")),
          _ms(r.get("decode_ms_p50")), _ms(r.get("backbone_ms_p50")), _x(r.get("latency_over_floor")),
          _ms(_get(r, "inspect_latency_ms", "p50")), _mb(r.get("peak_rss_mb"))]
         for r in reports)))
    notes = sorted({f"{_set_label(r)}: {r['pixel_metrics_note']}" for r in reports
                    if r.get("pixel_auroc") is None and r.get("pixel_metrics_note")})
    if notes:
        s.add("", *(f"- no pixel figures for {n}" for n in notes))
    return [s]


def _calibration_rows(reports: list[dict]) -> list[list[Any]]:
    rows = []
    for r in reports:
        g, o, reg = r.get("good_only") or {}, r.get("oracle") or {}, r.get("regions") or {}
        th = r.get("thresholds") or {}
        e = th.get("expected") or {}
        low, high = (e.get("frr_interval") or [None, None])[:2]
        rows.append([
            _set_label(r), r.get("detector"), r.get("n_train"),
            f"{(r.get('n_test') or 0) - (r.get('n_test_defective') or 0)} / {r.get('n_test_defective')}",
            _pct(th.get("target_frr")),
            f"{_pct(e.get('frr'))} {_interval(low, high, _pct)}" if e else DASH,
            _rate(g.get("frr_test_good")), _rate(g.get("recall")), _rate(g.get("flagged_recall")),
            _pct(g.get("review_fraction")), _pct(_get(o, "recall", "rate")), _pct(_get(o, "frr_test_good", "rate")),
            _pct(reg.get("gt_regions_overlapped")), _num(reg.get("false_regions_per_good_image"), 2),
        ])
    return rows


_CALIBRATION_HEADER = ["set", "model", "train", "test good / defective", "target FRR %",
                       "expected FRR % [95 %] (cross-fit)", "FRR % on test/good [95 %]", "recall % at t_ng [95 %]",
                       "flagged recall % at t_review [95 %]", "REVIEW %", "oracle recall %", "oracle FRR %",
                       "GT regions overlapped %", "false regions / good image"]


def _calibration(results: Path) -> list[_Section]:
    sections = []
    foundation = _by_set_and_model([doc for _, doc in _eval_reports(results / "foundation") if doc.get("good_only")])
    own = _by_set_and_model([doc for _, doc in _eval_reports(results / "calibration") if doc.get("good_only")])
    if foundation or own:
        s = _Section("Good-only calibration: thresholds from good images alone")
        s.add("**What**: the thresholds `anomaly eval` sets from `train/good` alone (cross-fitted, for the target "
              "false-reject rate) and what they give on `test/`: the false-reject rate on `test/good` and the "
              "recall on the defective images at `t_ng` (NG) and at `t_review` (flagged), with 95 % Clopper-Pearson "
              "intervals, beside the recall at the F1-optimal threshold chosen on the test labels (oracle).", "")
        if foundation:
            s.add(f"**Command**: the foundation run's reports (command above); "
                  f"`python benchmarks/calibration.py --reports {_show(results / 'foundation')}` prints the "
                  "PatchCore rows with the per-defect-type recall.", "")
            s.add(*_table(_CALIBRATION_HEADER, _calibration_rows(foundation)))
        if own:
            args = ["--sets", *sorted({r.get("category") for r in own})]
            args += [f"--limit-train {r.get('category')}={r['limit_train']}" for r in own if r.get("limit_train")]
            target = {_get(r, "thresholds", "target_frr") for r in own} - {None, 0.01}
            args += [f"--target-frr {t}" for t in sorted(target)]
            s.add(*([""] if foundation else []),
                  f"**Command**: `python benchmarks/calibration.py {' '.join(args)} "
                  f"--out {_show(results / 'calibration')}`", "")
            s.add(*_table(_CALIBRATION_HEADER, _calibration_rows(own)))
        sections.append(s)
    timing = _load_json(results / "calibration" / "timing.json")
    if isinstance(timing, dict) and timing.get("fit_seconds"):
        s = _Section("Calibration time")
        fit, train = timing.get("fit_seconds") or [], timing.get("train_seconds") or []
        det, thr = timing.get("detection_seconds") or [], timing.get("thresholds_seconds") or []
        s.add(f"**What**: for a {timing.get('n_images')}-image PatchCore model ({timing.get('set')}), the plain fit "
              "against `train` (cross-fitting, calibration and the final model) and the detection estimate, "
              "alternating the runs; medians over the repeats.", "",
              f"**Command**: `python benchmarks/calibration.py --timing-only --timing-images {timing.get('n_images')} "
              f"--repeats {timing.get('repeats')} --out {_show(results / 'calibration')}`", "",
              "**Provenance**: `timing.json` records no machine, package versions or date.", "")

        def each(values: list[float], fmt: Callable[[Any], str] = _ms) -> str:
            return " ".join(fmt(v) for v in values)

        s.add(*_table(["step", "seconds per repeat", "median s", "× plain fit"], [
            ["plain fit", each(fit), _ms(statistics.median(fit)), _x(1.0)],
            ["cross-fit + calibration (final model included)", each(train),
             _ms(statistics.median(train)) if train else DASH,
             _x(statistics.median(train) / statistics.median(fit)) if train else DASH],
            ["of which the thresholds", each(thr, lambda v: _num(v, 3)),
             _num(statistics.median(thr), 3) if thr else DASH, DASH],
            ["detection estimate", each(det), _ms(statistics.median(det)) if det else DASH,
             _x(timing.get("detection_over_fit"))],
        ]))
        s.add("", f"Calibration adds {_ms(timing.get('added_by_calibration_seconds'))} s "
              f"= {_x(timing.get('added_over_fit'))} the plain fit time (medians).")
        sections.append(s)
    return sections


# ---------------------------------------------------------------------------------- anomaly bench


def _bench_docs(results: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(results.rglob("bench.json")):
        doc = _load_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("results"), list) and doc.get("protocol"):
            out.append((path, doc))
    return out


def _bench_kind(doc: dict) -> str:
    models = set(_get(doc, "protocol", "models") or [])
    if models and models <= set(GAN_MODELS):
        return "gan"
    if models and models <= set(CLASSICAL_MODELS):
        return "classical"
    if _get(doc, "protocol", "ours_params"):
        return "options"
    return "peer"


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


def _bench_section(path: Path, doc: dict, results: Path, out: Path) -> _Section:
    proto, peer = doc.get("protocol") or {}, doc.get("peer") or {}
    has_peer = bool(peer.get("available"))
    peer_name = peer.get("name") or "peer"
    folder = path.parent
    models = ", ".join(proto.get("models") or [])
    title = f"{models}: ours against {peer_name}" if has_peer else f"{models}: ours alone"
    options = proto.get("ours_params") or {}
    if options:
        title += ", " + ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items())
    s = _Section(f"{title} ({folder.relative_to(results).as_posix()})")
    kind = _bench_kind(doc)
    if kind == "gan":
        size = f"{proto.get('gan_image_size')} px, {proto.get('gan_epochs')} epochs"
    elif kind == "classical":
        size = f"{options['image_size']} px" if "image_size" in options else "images at their own size"
    else:
        size = f"{options.get('image_size', proto.get('image_size'))} px"
    seeds = proto.get("seeds") or []
    s.add(
        "**What**: `anomaly bench`: "
        + (f"ours and {peer_name} fitted on the same seeded sub-samples of every set" if has_peer
           else "ours fitted on seeded sub-samples of every set")
        + f" (at most {proto.get('max_train') or 'all'} training and {proto.get('max_test') or 'all'} test images "
        f"per set; {size}; seeds {' '.join(str(x) for x in seeds)}), every test image scored alone from its file"
        + (", interleaved between the two systems" if has_peer else "")
        + "; accuracy is the mean over the seeds ± their sample standard deviation; latency percentiles pool the "
        "seeds' images, fit seconds are the median over the seeds"
        + (f"; costs read ours / {peer_name} (ratio)." if has_peer else "."),
        "",
        f"**Command**: `{doc.get('command')}`" + ("" if doc.get("complete") else " (**incomplete run**: the cases "
                                                  "finished so far)"),
        "",
        "**Provenance** (recorded in `bench.json`):",
        "",
        f"- run: {doc.get('started')} to {doc.get('finished')} ({_ms(doc.get('wall_seconds'))} s)",
        f"- machine: {_machine(doc.get('machine') or {})}",
    )
    commit = doc.get("commit") or {}
    if commit.get("sha"):
        s.add(f"- code: commit {commit['sha'][:12]}" + (" with uncommitted changes" if commit.get("dirty") else ""))
    s.add(f"- ours: {_versions(_get(doc, 'packages', 'ours'))}")
    if has_peer:
        s.add(f"- {peer_name}: {_versions(_get(doc, 'packages', 'peer'))}")
    check = doc.get("backbone_check")
    if check:
        rel = max((check.get("max_rel_diff") or {"": 0.0}).values())
        s.add(f"- same backbone: {check.get('backbone')} stages {check.get('layers')} = {peer_name}'s "
              f"{check.get('peer_layers')}, features on one image within {rel:.1g} of the largest "
              f"({'identical' if check.get('identical') else 'NOT identical'} at tolerance {check.get('tolerance')})")
    md = folder / "bench.md"
    if md.is_file():
        s.add(f"- per-seed scores, floor latencies and charts: [{_show(md)}]({os.path.relpath(md, out.parent)})")
    s.add("")

    entries = doc["results"]
    if has_peer:
        acc_header = ["set", "model", "setting", "n fit / test", "image AUROC ours", f"image AUROC {peer_name}",
                      "difference [95 %]", "pixel AUROC ours", f"pixel AUROC {peer_name}", "AUPRO ours",
                      f"AUPRO {peer_name}"]
    else:
        acc_header = ["set", "model", "setting", "n fit / test", "image AUROC", "per seed", "pixel AUROC", "AUPRO",
                      "refused test images"]
    acc_rows = []
    for e in entries:
        o, p = e.get("ours") or {}, e.get("peer") or {}
        head = [e.get("category"), e.get("model"), e.get("setting"), f"{e.get('n_fit')} / {e.get('n_test')}"]
        if has_peer:
            delta, low, high = _image_auroc_difference(e)
            acc_rows.append(head + [
                _pm(o.get("image_auroc"), o.get("image_auroc_std")),
                _pm(p.get("image_auroc"), p.get("image_auroc_std")) if p else DASH,
                f"{_signed(delta)} " + (f"[{_signed(low)}, {_signed(high)}]" if low is not None else "")
                if isinstance(delta, (int, float)) else DASH,
                _pm(o.get("pixel_auroc"), o.get("pixel_auroc_std")),
                _pm(p.get("pixel_auroc"), p.get("pixel_auroc_std")),
                _pm(o.get("aupro"), o.get("aupro_std")), _pm(p.get("aupro"), p.get("aupro_std"))])
        else:
            acc_rows.append(head + [
                _pm(o.get("image_auroc"), o.get("image_auroc_std")),
                " ".join(_a(r.get("image_auroc")) for r in o.get("replicates") or []) or DASH,
                _pm(o.get("pixel_auroc"), o.get("pixel_auroc_std")), _pm(o.get("aupro"), o.get("aupro_std")),
                o.get("n_refused", DASH) if o else DASH])
    s.add("Accuracy" + (f" (difference: ours − {peer_name}, mean over the seeds, with its 95 % paired, "
                        "class-stratified bootstrap interval over the test images)" if has_peer else "") + ":", "")
    s.add(*_table(acc_header, acc_rows))
    s.add(*_bench_differences(entries, peer_name))

    def cost(o: dict, p: dict | None, ratio: Any, fmt: Callable[[Any], str], *key: str) -> str:
        if not has_peer or not p:
            return fmt(_get(o, *key))
        return f"{fmt(_get(o, *key))} / {fmt(_get(p, *key))} ({_x(ratio)})"

    cost_rows = []
    for e in entries:
        o, p, r = e.get("ours"), e.get("peer"), e.get("ratios") or {}
        if not o:
            continue
        cost_rows.append([e.get("category"), e.get("model"), e.get("setting"),
                          cost(o, p, r.get("fit_seconds"), _ms, "fit_seconds"),
                          cost(o, p, r.get("latency_p50"), _ms, "latency_ms", "p50"),
                          cost(o, p, r.get("latency_p90"), _ms, "latency_ms", "p90"),
                          cost(o, p, r.get("model_p50"), _ms, "model_ms", "p50"),
                          cost(o, p, r.get("peak_rss_mb"), _mb, "peak_rss_mb"),
                          _x(o.get("latency_over_backbone"))])
    if cost_rows:
        s.add("", "Cost per case" + (f", ours / {peer_name} (ratio)" if has_peer else "") + ":", "")
        s.add(*_table(["set", "model", "setting", "fit s", "e2e p50 ms", "e2e p90 ms", "model p50 ms",
                       "peak RSS MB", "ours e2e / backbone"], cost_rows))

    if has_peer:
        ratio_rows = []
        for setting in proto.get("settings") or []:
            compared = [e for e in entries if e.get("setting") == setting and e.get("peer") and e.get("ratios")]
            for model in sorted({e["model"] for e in compared}, key=_model_key):
                rs = [e["ratios"] for e in compared if e["model"] == model]
                ratio_rows.append([model, setting, len(rs), *(_range([r.get(k) for r in rs]) for k in
                                                             ("latency_p50", "model_p50", "fit_seconds",
                                                              "peak_rss_mb"))])
        if ratio_rows:
            s.add("", f"Ratios ours / {peer_name} over the sets where both ran (lowest – highest, median):", "")
            s.add(*_table(["model", "setting", "sets", "e2e p50", "model p50", "fit s", "peak RSS"], ratio_rows))

    notes = []
    for e in entries:
        case = f"{e.get('category')}/{e.get('model')}/{e.get('setting')}"
        failed = e.get("failed")
        if failed:
            notes.append(f"{case}: no figures; ours refused the training images of seed {failed.get('seed')} "
                         f"({failed.get('op')}): {failed.get('error')}")
        elif (e.get("ours") or {}).get("n_refused"):
            o = e["ours"]
            notes.append(f"{case}: {o['n_refused']} test images over the seeds could not be aligned "
                         f"({o.get('n_refused_good', 0)} of them good), rejected as ALIGNMENT_FAILED")
        if e.get("peer") and e["peer"].get("shared_with"):
            notes.append(f"{case}: {peer_name}'s figures are those of its {e['peer']['shared_with']} run")
    skipped: dict[str, list[str]] = {}
    for e in entries:
        if has_peer and e.get("peer") is None and e.get("peer_skipped"):
            skipped.setdefault(e["peer_skipped"], []).append(f"{e.get('category')}/{e.get('model')}/{e.get('setting')}")
    for reason, cases in skipped.items():
        notes.append(f"{peer_name} not run for {', '.join(cases)}: {reason}")
    if notes:
        s.add("", *(f"- {n}" for n in notes))
    return s


def _image_auroc_difference(entry: dict) -> tuple[Any, Any, Any]:
    """Ours − peer image AUROC and its interval over the images, as recorded: ``differences``
    (schema 2), else ``ratios`` and ``image_auroc_difference`` (schema 1); ``None`` where absent."""
    found = _get(entry, "differences", "image_auroc")
    if found:
        images = found.get("images") or {}
        return found.get("value"), images.get("low"), images.get("high")
    old = entry.get("image_auroc_difference") or {}
    return _get(entry, "ratios", "image_auroc_delta"), old.get("low"), old.get("high")


def _compared(found: dict | None, fmt: Callable[[Any], str], sd_digits: int) -> str:
    """``value [low, high]`` (bootstrap over the images) or ``mean ± sd`` over the seeds, then the seeds' range."""
    if not found:
        return DASH
    images, seeds = found.get("images"), found.get("seeds") or {}
    text = fmt(found.get("value"))
    if images:
        text += " " + _interval(images.get("low"), images.get("high"), fmt)
    elif seeds.get("sd") is not None:
        text += f" ± {_num(seeds['sd'], sd_digits)}"
    if len(seeds.get("values") or []) < 2:
        return text
    return f"{text} (seeds {fmt(seeds.get('min'))} to {fmt(seeds.get('max'))})"


def _bench_differences(entries: list[dict], peer_name: str) -> list[str]:
    """The table of recorded paired ``differences`` (schema 2); nothing for a document without them."""
    rows = [[e.get("category"), e.get("model"), e.get("setting"),
             *(_compared(_get(e, "differences", key), _signed, 3) for key in ("image_auroc", "pixel_auroc", "aupro")),
             *(_compared(_get(e, "differences", key), _x, 2)
               for key in ("latency_p50", "model_p50", "fit_seconds", "peak_rss_mb"))]
            for e in entries if e.get("differences")]
    if not rows:
        return []
    return ["", f"Paired differences, ours − {peer_name} (accuracy) and ours / {peer_name} (costs): `[low, high]` "
            "is the 95 % paired bootstrap interval over each seed's test images, `± sd` and `seeds a to b` the "
            "spread of the per-seed figures (pixel AUROC, AUPRO, fit time and peak RSS have no per-image record). "
            "Figures only: no bar is applied.", "",
            *_table(["set", "model", "setting", "image AUROC", "pixel AUROC", "AUPRO", "e2e p50", "model p50",
                     "fit s", "peak RSS"], rows)]


# ---------------------------------------------------------------------------------- GANs (benchmarks/ganomaly.py)


def _gan_command(path: Path, rows: list[dict]) -> str:
    """The ``benchmarks/ganomaly.py`` command that gives these rows again.

    The rows record the sets, models, seeds, image size, epochs and batch; the sub-sample
    limits are read off the largest ``n_train`` and ``n_test`` (a set is cut only when it is
    larger than the limit, so the largest count recorded gives the same sub-samples).
    """
    models = sorted({r["model"] for r in rows}, key=_model_key)
    peer = GAN_PEER in models
    first = rows[0]
    args = [".venv-peer/bin/python" if peer else "python", "benchmarks/ganomaly.py"]
    if peer:
        args.append("--peer")
    datasets = sorted({str(Path(_data_path(r["dataset"])).parent.parent) for r in rows if r.get("dataset")})
    for d in datasets:
        args += ["--datasets", d]
    args += ["--sets", *sorted({r["set"] for r in rows}), "--models", *models,
             "--seeds", *(str(x) for x in sorted({r["seed"] for r in rows})),
             "--epochs", str(first.get("epochs")), "--image-size", str(first.get("image_size")),
             "--batch-size", str(first.get("batch_size")), "--max-train", str(max(r.get("n_train", 0) for r in rows)),
             "--max-test", str(max(r.get("n_test", 0) for r in rows)), "--out", _show(path)]
    return " ".join(args)


def _gan(results: Path) -> list[_Section]:
    sections = []
    for path in sorted((results / "ganomaly").glob("*.jsonl")):
        rows = [r for r in _load_jsonl(path) if {"set", "model", "seed", "image_auroc"} <= set(r)]
        if not rows:
            continue
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r.get("image_size"), r.get("epochs"), r.get("batch_size")), []).append(r)
        for (size, epochs, batch), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
            s = _Section(f"GANomaly and Skip-GANomaly: {path.name}, {epochs} epochs at {size} px")
            models = sorted({r["model"] for r in group}, key=_model_key)
            s.add("**What**: `benchmarks/ganomaly.py`: each model fitted on the same seeded training subset of "
                  f"every set ({epochs} epochs at {size} px, batch {batch}, Adam 0.0002 / 0.5 / 0.999), once per seed"
                  + (f"; `{GAN_PEER}` is anomalib's GANomaly torch model trained by the steps of its Lightning "
                     "`training_step` and scored with its raw `pred_score`" if GAN_PEER in models else "")
                  + "; every test image scored alone from its file's bytes. Image AUROC: mean ± sample standard "
                  "deviation over the seeds; train s: mean wall seconds; score p50: median over the runs of each "
                  "run's p50.", "",
                  f"**Command**: `{_gan_command(path, group)}`", "")
            threads = sorted({r.get("threads") for r in group if r.get("threads") is not None})
            loads = [x for r in group for x in (r.get("load_average") or [])]
            peer_versions = sorted({r.get("anomalib") for r in group if r.get("anomalib")})
            s.add("**Provenance** (recorded per row): torch threads " + (" or ".join(map(str, threads)) or DASH)
                  + (f", load average {min(loads):.1f} to {max(loads):.1f} over the runs" if loads else "")
                  + (f", anomalib {', '.join(peer_versions)}" if peer_versions else "")
                  + "; the rows record no machine, package versions of ours or date.", "")
            table, means = [], {}
            for name in sorted({r["set"] for r in group}):
                for model in models:
                    sub = sorted((r for r in group if r["set"] == name and r["model"] == model),
                                 key=lambda r: r["seed"])
                    if not sub:
                        continue
                    vals = [r["image_auroc"] for r in sub if r.get("image_auroc") is not None]
                    mean, sd = _spread(vals)
                    means[(name, model)] = mean
                    table.append([name, model, f"{sub[0].get('n_train')} / {sub[0].get('n_test')}",
                                  " ".join(_a(v) for v in vals) or DASH, _pm(mean, sd), len(vals),
                                  _ms(statistics.fmean(r["train_seconds"] for r in sub)) if all(
                                      "train_seconds" in r for r in sub) else DASH,
                                  _ms(statistics.median(r["score_ms_p50"] for r in sub)) if all(
                                      "score_ms_p50" in r for r in sub) else DASH,
                                  " ".join(str(r.get("epochs_run", DASH)) for r in sub)])
            s.add(*_table(["set", "model", "n train / test", "image AUROC per seed", "mean ± sd", "seeds",
                           "train s", "score p50 ms", "epochs run"], table))
            if GAN_PEER in models:
                sets = sorted({k[0] for k in means if k[1] == GAN_PEER})
                wins = [f"{m} on {sum(1 for x in sets if (means.get((x, m)) or 0) > (means.get((x, GAN_PEER)) or 0))}"
                        f" of {len(sets)} sets" for m in models if m != GAN_PEER]
                s.add("", f"Higher mean image AUROC than {GAN_PEER}: " + "; ".join(wins) + ".")
            sections.append(s)
    return sections


# ---------------------------------------------------------------------------------- classical (benchmarks/classical.py)


def _classical(results: Path) -> list[_Section]:
    path = results / "classical" / "classical.json"
    doc = _load_json(path)
    if not isinstance(doc, dict):
        return []
    s = _Section("Classical baselines: speed, registration, DeepPCB reference mode, textures")
    skipped = [k for k in ("latency", "fit", "registration", "reference", "textures") if k not in doc]
    s.add("**What**: `benchmarks/classical.py`: align + score latency of one gray image (generated assembly "
          "board) for `difference` and `gmm`; fit time of 200 goods; registration error on DeepPCB goods moved by "
          "known random rigid transforms (rotation ≤ 3°, shift ≤ 20 px); DeepPCB in reference mode (annotated "
          "defect boxes touched by a detected region, false regions per image); image and pixel AUROC of both "
          "models on the texture sets.", "",
          f"**Command**: `python benchmarks/classical.py --json {_show(path)}"
          + (f" --skip {' '.join(skipped)}" if skipped else "") + "`", "")
    lb, la = doc.get("load_before") or [None], doc.get("load_after") or [None]
    s.add(f"**Provenance** (recorded): {doc.get('cpu_count')} CPU cores, OpenCV {doc.get('opencv')} "
          f"({doc.get('opencv_threads')} threads); load average {_num(lb[0], 1)} before, {_num(la[0], 1)} after; "
          "no date, code version or other package recorded.", "")
    lat = doc.get("latency") or {}
    rows = [[k.rsplit("_", 1)[0], f"{k.rsplit('_', 1)[1]} × {k.rsplit('_', 1)[1]}", _ms(v.get("p50_ms")),
             _ms(v.get("p90_ms")), _ms(v.get("cpu_p50_ms")), v.get("n"), _num(v.get("load"), 1)]
            for k, v in lat.items() if isinstance(v, dict)]
    if rows:
        s.add("Align + score, one gray image:", "")
        s.add(*_table(["model", "size px", "p50 ms", "p90 ms", "CPU p50 ms (all threads)", "calls", "load"], rows))
    fit = doc.get("fit") or {}
    rows = [[k.rsplit("_", 1)[0], f"{k.rsplit('_', 1)[1]} × {k.rsplit('_', 1)[1]}", v.get("n_images"),
             _ms(v.get("seconds")), _ms(v.get("cpu_seconds")), _num(v.get("load"), 1)]
            for k, v in fit.items() if isinstance(v, dict)]
    if rows:
        s.add("", "Fit on generated goods:", "")
        s.add(*_table(["model", "size px", "goods", "fit s", "CPU s", "load"], rows))
    reg = doc.get("registration") or {}
    rows = [[k, reg.get("n"), _num(v.get("rms_px"), 3), _num(v.get("median_px"), 3), _num(v.get("p95_px"), 3),
             _num(v.get("max_px"), 2), v.get("over_0_5_px"), v.get("failures"), _ms(v.get("p50_ms"))]
            for k, v in reg.items() if isinstance(v, dict)]
    if rows:
        s.add("", "Registration, DeepPCB goods moved by known transforms (corner error; failures are raised "
              "`AlignmentError`s, not in the RMS):", "")
        s.add(*_table(["protocol, motion", "pairs", "RMS px", "median px", "p95 px", "max px", "> 0.5 px",
                       "failures", "p50 ms"], rows))
    ref = doc.get("reference") or {}
    rows = [[k, v.get("pairs"), f"{v.get('boxes_hit')} / {v.get('boxes')}", _pct(v.get("recall"), 2),
             v.get("false_regions"), _num(v.get("false_per_image"), 3), v.get("errors"), _ms(v.get("p50_ms"))]
            for k, v in ref.items() if isinstance(v, dict)]
    if rows:
        s.add("", "DeepPCB in reference mode (each test image against its template):", "")
        s.add(*_table(["setting", "pairs", "boxes hit", "boxes hit %", "false regions", "false regions / image",
                       "alignment errors", "p50 ms"], rows))
    tex = doc.get("textures") or {}
    rows = [[k.split("_")[0] if not k.startswith("magnetic_tile") else "magnetic_tile", k.rsplit("_", 1)[1],
             v.get("n_test"), _a(v.get("image_auroc")), _a(v.get("pixel_auroc")), _ms(v.get("fit_s"))]
            for k, v in tex.items() if isinstance(v, dict)]
    if rows:
        s.add("", "Texture sets through the Detector API (all of `train/good` and `test/`):", "")
        s.add(*_table(["set", "model", "test images", "image AUROC", "pixel AUROC", "fit s"], rows))
    return [s]


# ---------------------------------------------------------------------------------- single options (anomaly eval)


def _options(results: Path) -> list[_Section]:
    reports = _eval_reports(results / "options")
    if not reports:
        return []
    base = {(Path(d.get("dataset") or "").name, d.get("detector")): d for _, d in _eval_reports(results / "foundation")}
    s = _Section("Single options through anomaly eval")
    s.add("**What**: `anomaly eval` of one model with one or more parameters changed, on all of a set (as the "
          "foundation run). The option column lists the parameters whose values differ from the foundation "
          "report of the same set and model (parameters that report does not record included).", "",
          "**Command**: `anomaly eval DATASET --model MODEL --param KEY=VALUE ... --json "
          f"{_show(results / 'options')}/FILE.json` with the values below.", "",
          "**Provenance**: the `anomaly eval` reports record no machine, package versions or date.", "")
    rows = []
    for path, r in reports:
        ref = base.get((Path(r.get("dataset") or "").name, r.get("detector")))
        params, ref_params = r.get("params") or {}, (ref or {}).get("params") or {}
        changed = {k: v for k, v in params.items() if ref is None or k not in ref_params or ref_params[k] != v}
        rows.append([_set_label(r), r.get("detector"),
                     ", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or DASH,
                     _a(r.get("image_auroc")), _a(r.get("pixel_auroc")), _a(r.get("aupro")),
                     _ms(r.get("fit_seconds")), _ms(_get(r, "latency_ms", "p50")), _x(r.get("latency_over_floor")),
                     path.name])
    s.add(*_table(["set", "model", "option", "image AUROC", "pixel AUROC", "AUPRO", "fit s", "p50 ms",
                   "p50 / floor", "file"], rows))
    return [s]


# ---------------------------------------------------------------------------------- service load


def _service(results: Path) -> list[_Section]:
    docs = [(p, _load_json(p)) for p in sorted((results / "service_load").glob("*.json"))]
    docs = [(p, d) for p, d in docs if isinstance(d, dict) and "throughput_rps" in d]
    if not docs:
        return []
    s = _Section("Service load: anomaly serve on loopback")
    s.add("**What**: `benchmarks/service_load.py`: one client alternating with an in-process scorer (the HTTP + "
          "storage overhead at p50), then several clients for a fixed time (throughput, latency, errors), then "
          "the records stored against the requests answered.", "",
          "")
    rows = []
    for p, d in docs:
        s.add(*_run_provenance(d))
        if d.get("load_by_verdict"):
            s.add(f"- `{p.name}` under load, by verdict: " + "; ".join(
                f"{v} n={f.get('n')}, p50 {_ms(f.get('p50_ms'))} ms, p99 {_ms(f.get('p99_ms'))} ms"
                for v, f in d["load_by_verdict"].items()))
        retries = d.get("idempotent_retries")
        if retries:
            s.add(f"- `{p.name}`: {retries.get('sent')} parts sent again with the same Idempotency-Key; "
                  f"{retries.get('replayed_same_record')} replayed the first answer, {retries.get('other')} did not")
        rows.append([p.name, d.get("model"), f"{d.get('workers')} × {d.get('threads_per_worker')}", d.get("clients"),
                     _ms(d.get("in_process_p50_ms")), _ms(d.get("sequential_http_p50_ms")),
                     _pct((d.get("overhead_pct_p50") or 0) / 100) if d.get("overhead_pct_p50") is not None else DASH,
                     _num(d.get("throughput_rps"), 2), _ms(d.get("load_p50_ms")), _ms(d.get("load_p99_ms")),
                     d.get("errors"), f"{d.get('records_stored')} / {d.get('requests_answered')}"])
        s.add(f"- `{p.name}`: `python benchmarks/service_load.py --model {d.get('model')} --workers "
              f"{d.get('workers')} --clients {d.get('clients')} --seconds {_num(d.get('seconds'), 0)} "
              f"--out {_show(p)}`")
    s.add("")
    s.add(*_table(["file", "model", "workers × torch threads", "clients", "in-process p50 ms", "HTTP p50 ms",
                   "overhead % at p50", "req/s", "load p50 ms", "load p99 ms", "errors", "records / answered"], rows))
    return [s]


def _run_provenance(doc: dict) -> list[str]:
    """The provenance line of a benchmark JSON that records ``provenance`` (none where it records none)."""
    provenance = doc.get("provenance") or {}
    if not provenance:
        return []
    return [f"**Provenance**: run {provenance.get('started')}; machine: {_machine(provenance.get('machine') or {})}; "
            f"packages: {_versions(provenance.get('packages'))}.", ""]


def _hostile(results: Path) -> list[_Section]:
    doc = _load_json(results / "service_hostile" / "hostile.json")
    if not isinstance(doc, dict) or "ng_frame" not in doc:
        return []
    side = doc.get("side")
    s = _Section("Service under large frames and slow clients")
    s.add(f"**What**: `anomaly serve` (2 workers) with a PatchCore model trained on the demo part scaled to {side} x "
          f"{side} px: the scratched part at that size end to end over HTTP; a good part alone and while another "
          "client sends that NG frame back to back; `/healthz` while 2 clients send one header line every 5 s.", "",
          f"**Command**: `{doc.get('command', 'python benchmarks/service_hostile.py').strip()}`", "")
    s.add(*_run_provenance(doc))
    rows = [["NG frame, end to end", doc["ng_frame"], ", ".join(doc["ng_frame"].get("verdicts") or [])],
            ["good part alone", doc["good_alone"], ""],
            ["good part while the NG frame is sent back to back", doc["good_meanwhile"],
             f"{_x(doc.get('good_meanwhile_over_alone'))} the time alone; statuses "
             f"{doc['good_meanwhile'].get('statuses')}"],
            ["/healthz under 2 slow clients", doc["healthz_under_2_slow_clients"],
             f"{_num(doc['healthz_under_2_slow_clients'].get('seconds'), 0)} s"]]
    s.add(*_table(["request", "n", "p50 ms", "max ms", "note"],
                  ([name, r.get("n"), _ms(r.get("p50_ms")), _ms(r.get("max_ms")), note] for name, r, note in rows)))
    return [s]


def _inputs(results: Path) -> list[_Section]:
    doc = _load_json(results / "service_hostile" / "inputs.json")
    if not isinstance(doc, dict) or "statuses" not in doc:
        return []
    s = _Section("Hostile input with the records in PostgreSQL")
    s.add(f"**What**: {doc.get('uploads')} broken or hostile scoring uploads (a fifth of them good parts) and "
          f"{doc.get('fields')} URL and field cases against `anomaly serve` (2 workers), records in "
          f"{doc.get('database')}; answers by status, server errors, connection failures, records against the "
          "scoring requests answered 2xx, and stored records carrying a control character or an image the model "
          "does not accept (junk).", "",
          f"**Command**: `{doc.get('command', 'python benchmarks/service_inputs.py')}`", "", *_run_provenance(doc))
    rows = [[kind, ", ".join(f"{status}: {n}" for status, n in counts.items())]
            for kind, counts in doc["statuses"].items()]
    s.add(*_table(["requests", "answers by status"], rows), "",
          *_table(["server errors (5xx)", "connection failures", "scoring answered 2xx", "records", "junk records"],
                  [[doc.get("server_errors"), sum((doc.get("connection_failures") or {}).values()),
                    doc.get("scoring_2xx"), doc.get("records"), doc.get("junk_records")]]))
    return [s]


def _regions(results: Path) -> list[_Section]:
    doc = _load_json(results / "regions" / "regions.json")
    if not isinstance(doc, dict) or not doc.get("timing"):
        return []
    s = _Section("Region measures on large frames")
    s.add("**What**: `find_regions` with contrast on a synthetic NG map of each side (a broken area of a quarter "
          "of the frame and 20 small spots), best of 3, against the disk dilation the contrast ring used before "
          "(one run, only up to the side given); then, on each set's test images with a PatchCore model trained "
          "on its goods, whether every region field but the contrast is identical under both ring definitions, "
          "and how far the contrast moved.", "",
          f"**Command**: `{doc.get('command', 'python benchmarks/regions_cost.py').strip()}`", "")
    s.add(*_run_provenance(doc))
    s.add(*_table(["side px", "regions", "linear-time contrast s", "dilation s", "dilation / linear"],
                  ([r.get("side"), r.get("regions"), _num(r.get("linear_s"), 3), _num(r.get("dilation_s"), 3),
                    _x(r["dilation_s"] / r["linear_s"]) if r.get("dilation_s") and r.get("linear_s") else DASH]
                   for r in doc["timing"])))
    if doc.get("agreement"):
        s.add("", *_table(["set", "test images", "regions", "other fields identical", "contrast identical share",
                           "contrast difference median (abs)", "max (abs)"],
                          ([_data_path(a.get("set", "")), a.get("test_images"), a.get("regions"),
                            "yes" if a.get("other_fields_identical") else "NO", _num(a.get("contrast_identical_share"), 3),
                            _num(a.get("contrast_abs_difference_median"), 3),
                            _num(a.get("contrast_abs_difference_max"), 3)] for a in doc["agreement"])))
    return [s]


# ---------------------------------------------------------------------------------- the report


def _slug(title: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


def render(results_dir: Path = RESULTS, out: Path = REPORT) -> str:
    """The Markdown report of every result under ``results_dir`` (``out``: where it will be written, for links)."""
    results_dir, out = Path(results_dir), Path(out)
    benches = _bench_docs(results_dir) if results_dir.is_dir() else []

    def bench(kind: str) -> list[_Section]:
        return [_bench_section(p, d, results_dir, out) for p, d in benches if _bench_kind(d) == kind]

    groups: list[tuple[str, list[_Section]]] = []
    if results_dir.is_dir():
        groups = [
            ("PatchCore and PaDiM", _foundation(results_dir) + _calibration(results_dir)),
            ("Side by side with anomalib", bench("peer")),
            ("GAN models", bench("gan") + _gan(results_dir)),
            ("Classical models", _classical(results_dir) + bench("classical")),
            ("Options", bench("options") + _options(results_dir)),
            ("Service", _service(results_dir) + _hostile(results_dir) + _inputs(results_dir) + _regions(results_dir)),
        ]
    groups = [(name, sections) for name, sections in groups if sections]
    lines = [
        "# Benchmark report",
        "",
        f"Generated by `python benchmarks/report.py` from the JSON results under `{_show(results_dir)}`: "
        "do not edit this file by hand. Every benchmark script that writes JSON results rewrites it when it "
        "finishes; after `anomaly bench --out benchmarks/results/...`, run `python benchmarks/report.py`.",
        "",
        "AUROC-like figures have 3 decimals, times 1; `a ± b` is a mean and its sample standard deviation over "
        "seeds, `[a, b]` a 95 % interval. The date, machine, packages and code version of each run are those its "
        "JSON records (nothing where it records nothing).",
        "",
    ]
    if not groups:
        lines.append(f"No results under `{_show(results_dir)}`.")
        return "\n".join(lines) + "\n"
    for name, sections in groups:
        lines.append(f"- {name}: " + "; ".join(f"[{s.title}](#{_slug(s.title)})" for s in sections))
    for name, sections in groups:
        lines += ["", f"## {name}"]
        for s in sections:
            lines += ["", f"### {s.title}", "", *s.lines]
    return "\n".join(lines).rstrip() + "\n"


def save_result(doc: dict, path: Path) -> None:
    """Write a benchmark's JSON result to ``path`` and rewrite the report from all results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    write_report()


def write_report(results_dir: Path = RESULTS, out: Path = REPORT) -> Path:
    """Render the report of ``results_dir`` and write it to ``out`` (only when it changed). Returns ``out``."""
    out = Path(out)
    text = render(results_dir, out)
    try:
        if out.read_text() == text:
            return out
    except OSError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument("--out", type=Path, default=REPORT, help="report to write (default benchmarks/REPORT.md)")
    args = p.parse_args(argv)
    print(write_report(args.results, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
