"""The ``anomaly bench`` and GAN sections of ``benchmarks/REPORT.md`` (standard library only)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Callable

from report_common import (
    _machine,
    _versions,
    _a,
    CLASSICAL_MODELS,
    DASH,
    _data_path,
    GAN_MODELS,
    GAN_PEER,
    _get,
    _interval,
    _load_json,
    _load_jsonl,
    _mb,
    _model_key,
    _ms,
    _num,
    _pm,
    _range,
    _Section,
    _show,
    _signed,
    _spread,
    _table,
    _x,
)


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

