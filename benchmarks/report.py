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
import re
import statistics
from pathlib import Path
from typing import Any, Callable

from report_common import (
    _a,
    _by_set_and_model,
    DASH,
    _data_path,
    _eval_provenance,
    _eval_reports,
    _get,
    _interval,
    _load_json,
    _mb,
    _model_key,
    _ms,
    _num,
    _pair_step,
    _params_line,
    _pct,
    _rate,
    REPORT,
    RESULTS,
    _Section,
    _set_label,
    _show,
    _table,
    _weights_line,
    _x,
)
from report_bench import (
    _bench_docs,
    _bench_kind,
    _bench_section,
    _gan,
    _machine,
    _versions,
)


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


def _onboard(results: Path) -> list[_Section]:
    folder = results / "onboard"
    summary = folder / "summary.md"
    docs = [d for d in (_load_json(p) for p in sorted(folder.glob("*.json"))) if isinstance(d, dict)]
    if not summary.is_file() or not docs:
        return []
    s = _Section("Onboarding: the chosen model against every candidate on the test split")
    s.add("**What**: `anomaly onboard` on each set's `train/good` (at most 200 goods, seeded) in a process of its own "
          "(wall time, peak memory), choosing from good images alone; then every candidate it offered fitted on the "
          "same goods and measured on `test/` (image AUROC, recall at the good-only `t_ng`, false rejects on "
          "`test/good` at the 1 % target). The best candidate is picked with test labels, which onboarding never "
          "sees; the defaults are PatchCore at 256 stretched.", "",
          "**Command**: `python benchmarks/onboard.py`", "")
    s.add(*_run_provenance(docs[0]))
    s.add(*summary.read_text().strip().splitlines())
    return [s]


def _tiling(results: Path) -> list[_Section]:
    summary = results / "tiling" / "summary.md"
    doc = _load_json(results / "tiling" / "latency.json")
    if not summary.is_file() or not isinstance(doc, dict):
        return []
    s = _Section("Tiled scoring of a large frame beside the 256 px model")
    s.add("**What**: PatchCore tiled at native resolution (256 px tiles, 32 px overlap) and PatchCore at 256 px "
          "stretched, trained on the same goods of a large-frame set; each test image inspected end to end by both "
          "in turn (PNG bytes to verdict and regions). Accuracy of the tiled candidate on the test split: the "
          "Onboarding section.", "", "**Command**: `python benchmarks/tiling.py`", "")
    s.add(*_run_provenance(doc))
    s.add(*summary.read_text().strip().splitlines())
    return [s]


def _summary_section(folder: Path, title: str, what: str, command: str, peer_note: str = "") -> list[_Section]:
    """A section of a benchmark that writes ``summary.md`` and ``summary.json`` (with its provenance)."""
    summary = folder / "summary.md"
    doc = _load_json(folder / "summary.json")
    if not summary.is_file() or not isinstance(doc, dict):
        return []
    s = _Section(title)
    s.add(f"**What**: {what}", "", f"**Command**: `{doc.get('command', command)}`{peer_note}", "")
    s.add(*_run_provenance(doc))
    s.add(*summary.read_text().strip().splitlines())
    return [s]


def _discriminator(results: Path) -> list[_Section]:
    return _summary_section(
        results / "discriminator", "The feature discriminator beside PatchCore, PaDiM and anomalib's SuperSimpleNet",
        "the discriminator (trained on good images and synthetic defects), PatchCore and PaDiM with "
        "their defaults, and anomalib 2.7.0's SuperSimpleNet on the same EfficientNet-Lite0 weights, fitted on the "
        "same seeded subset of each set's goods and measured on the same seeded test subset: image AUROC, AUPRO "
        "where the set has masks, training time, and the scoring latency beside the backbone floor (decode, resize, "
        "normalise, backbone forward) on the same images, timed alternately. Each row of `runs.jsonl` records its "
        "model's parameters, seed, epochs and, for the discriminator, the kinds and seed of its training defects.",
        "python benchmarks/discriminator.py", " (the peer under `.venv-peer/bin/python` with `--peer`)")


def _export(results: Path) -> list[_Section]:
    return _summary_section(
        results / "export", "ONNX exports beside their bundles",
        "PatchCore, PaDiM and the feature discriminator with their defaults, trained through the product's "
        "training flow on a "
        "seeded subset of each set's goods, exported to ONNX (`anomaly export`: the graph checked for parity on 16 "
        "goods and synthetic defects, and the INT8 gate), then every test image judged by the bundle on torch and "
        "by the export on onnxruntime through the same verdict path; end-to-end latency per image from the file's "
        "bytes, the models called in turn; the runtime-only environment's size beside the full install.",
        "python benchmarks/export.py")


def _line_load(results: Path) -> list[_Section]:
    doc = _load_json(results / "line_load" / "line_load.json")
    if not isinstance(doc, dict) or "answers_200" not in doc:
        return []
    st = doc.get("settings") or {}
    s = _Section("The line loop under load and faults")
    s.add(f"**What**: `anomaly serve` with {st.get('web_workers')} gunicorn workers and {st.get('job_workers')} "
          f"`anomaly worker` processes, records in PostgreSQL, jobs on Redis, verdicts to Mosquitto through the "
          f"outbox; {st.get('clients')} clients scoring the demo product's test parts for {st.get('seconds'):.0f} s "
          "while onboarding jobs run" + ("; faults: a job worker killed mid-job, Redis restarted mid-job, Mosquitto "
                                        f"stopped for {st.get('broker_outage_s'):.0f} s under load"
                                        if st.get("faults") else "") + ".",
          "", f"**Command**: `{doc.get('command')}`", "")
    s.add(*_run_provenance(doc))
    errors = doc.get("errors") or {}
    s.add("| figure | value |", "|---|---|",
          f"| requests / successful answers | {doc['requests']} / {doc['answers_200']} |",
          f"| errors | {sum(errors.values())}{' (' + ', '.join(f'{k}: {v}' for k, v in errors.items()) + ')' if errors else ''} |",
          f"| records in the database | {doc['records']} |",
          f"| MQTT verdict messages received (distinct inspections, duplicates) | {doc['mqtt_messages_received']} "
          f"({doc['mqtt_distinct_inspections']}, {doc['mqtt_duplicates']}) |",
          f"| answers without a message | {doc['answers_without_message']} |",
          f"| outbox unsent at the end | {doc['outbox_unsent']} (drained at {doc['outbox_drained_at_s']} s) |",
          f"| throughput | {doc['throughput_per_s']} parts/s |",
          f"| latency p50 / p99 | {doc['p50_ms']} ms / {doc['p99_ms']} ms |",
          f"| drift alarms | {doc['drift_alarms']} |")
    s.add("", "Jobs: " + "; ".join(f"{j['job_id'][:8]}: {j['status']}"
                                   + (f" ({j['error_code']}: {j['message']})" if j.get("error_code") else
                                      f" (version {j['version']})" if j.get("version") else "")
                                   for j in doc.get("jobs") or []) + ".")
    if doc.get("events"):
        s.add("", "Events: " + "; ".join(f"{e['at_s']} s: {e['event']}" for e in doc["events"]) + ".")
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
            ("Onboarding", _onboard(results_dir) + _tiling(results_dir)),
            ("Trained on synthetic defects", _discriminator(results_dir)),
            ("Deployment", _export(results_dir)),
            ("Side by side with anomalib", bench("peer")),
            ("GAN models", bench("gan") + _gan(results_dir)),
            ("Classical models", _classical(results_dir) + bench("classical")),
            ("Options", bench("options") + _options(results_dir)),
            ("Service", _service(results_dir) + _hostile(results_dir) + _inputs(results_dir) + _regions(results_dir)
             + _line_load(results_dir)),
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
