"""``bench.md`` (Markdown tables) and the PNG charts of a ``bench.json`` document."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

OURS_LABEL = "ours"


def _peer_label(doc: dict[str, Any]) -> str:
    peer = doc.get("peer") or {}
    return peer.get("name") or "peer"


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _num(value: float | None) -> str:
    """Costs: 3 significant figures without a forest of decimals."""
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _pair(ours: Any, peer: Any, fmt=_f, has_peer: bool | None = None) -> str:
    """``ours / peer``; ``ours`` alone where no peer ran (``has_peer`` false, or ``peer`` None)."""
    if has_peer is None:
        has_peer = peer is not None
    return f"{fmt(ours)} / {fmt(peer)}" if has_peer else fmt(ours)


def _cost(ours: float | None, peer: float | None, ratio: float | None) -> str:
    if peer is None:
        return _num(ours)
    return f"{_num(ours)} / {_num(peer)} ({_f(ratio, 2)}×)"


def _get(fig: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        fig = fig.get(key) if isinstance(fig, dict) else None
    return fig


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of a ``bench.json`` document."""
    peer_name = _peer_label(doc)
    machine, commit, peer = doc["machine"], doc.get("commit") or {}, doc.get("peer") or {}
    proto, summary = doc["protocol"], doc.get("summary") or {}
    lines = [f"# Benchmark: {OURS_LABEL} vs {peer_name}", ""]
    if not doc.get("complete"):
        lines += ["**Incomplete run**: the figures below are the cases finished so far.", ""]
    lines += [
        f"- command: `{doc['command']}`",
        f"- machine: {machine.get('cpu_count')} cores ({machine.get('usable_cores')} usable), "
        f"{machine.get('cpu_model')}{_cpu_id(machine.get('cpu_id'))}, {machine.get('memory_gb')} GB, "
        f"{machine.get('platform')}, Python "
        f"{machine.get('python')}; load average at start {machine.get('load_average')}, at end "
        f"{machine.get('load_average_end')}",
        f"- commit: `{commit.get('sha')}`" + (" (uncommitted changes)" if commit.get("dirty") else ""),
        f"- {OURS_LABEL}: " + _versions(_get(doc, "packages", "ours")),
        f"- {peer_name}: " + (_versions(_get(doc, "packages", "peer")) if peer.get("available")
                              else f"not run ({peer.get('reason')})"),
        f"- protocol: at most {proto['max_train'] or 'all'} training and {proto['max_test'] or 'all'} test images "
        f"per set, identical for both; seeds {proto['seeds']}: {proto['replicates']}; {proto['image_size']} px "
        f"input, matched PatchCore coreset ratio {proto['matched_coreset_ratio']}; {proto['timing']}; "
        f"{proto['scores']}",
    ]
    check = doc.get("backbone_check")
    if check:
        lines.append(f"- same backbone: {check['backbone']} stages {check['layers']} = {peer_name}'s "
                     f"{check['peer_layers']}, the same features on one image (max |diff| "
                     f"{max(check['max_abs_diff'].values()):.2g}, "
                     f"{max((check.get('max_rel_diff') or {'': 0.0}).values()):.1g} of the largest; weights sha256 {check['weights_sha256'][:12]}…)")
    lines.append(f"- wall time: {summary.get('wall_seconds')} s")
    lines.append("")
    lines.append(f"Cells read `{OURS_LABEL} / {peer_name}`; accuracy is the mean over the seeds (each seed's "
                 f"image AUROC is in the table after these); costs add the ratio ours / {peer_name}. "
                 "Latencies are per image, batch of one, end to end from the file (decode, resize, model, map) "
                 "and the model call alone. Peak RSS counts the shared libraries' pages too (page-cache "
                 "dependent); peak anon is the memory each program allocated itself.")
    for setting in doc["protocol"]["settings"]:
        rows = [e for e in doc["results"] if e["setting"] == setting]
        if not rows:
            continue
        lines += ["", f"## {setting} settings", "",
                  "| set | model | n fit / test | image AUROC | pixel AUROC | AUPRO | fit s | e2e p50 ms | "
                  "e2e p90 ms | model p50 ms | peak RSS MB | peak anon MB | bundle MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in rows:
            o, p, r = e["ours"] or {}, e["peer"], e.get("ratios") or {}
            pg = (lambda *k: _get(p, *k)) if p else (lambda *k: None)
            lines.append("| " + " | ".join([
                e["category"], e["model"], f"{e['n_fit']} / {e['n_test']}",
                _pair(o.get("image_auroc"), pg("image_auroc"), has_peer=p is not None),
                _pair(o.get("pixel_auroc"), pg("pixel_auroc"), has_peer=p is not None),
                _pair(o.get("aupro"), pg("aupro"), has_peer=p is not None),
                _cost(o.get("fit_seconds"), pg("fit_seconds"), r.get("fit_seconds")),
                _cost(_get(o, "latency_ms", "p50"), pg("latency_ms", "p50"), r.get("latency_p50")),
                _cost(_get(o, "latency_ms", "p90"), pg("latency_ms", "p90"), r.get("latency_p90")),
                _cost(_get(o, "model_ms", "p50"), pg("model_ms", "p50"), r.get("model_p50")),
                _cost(o.get("peak_rss_mb"), pg("peak_rss_mb"), r.get("peak_rss_mb")),
                _cost(o.get("peak_anon_mb"), pg("peak_anon_mb"), r.get("peak_anon_mb")),
                _cost(o.get("bundle_mb"), pg("bundle_mb"), r.get("bundle_mb")),
            ]) + " |")
        for e in rows:
            failed = e.get("failed")
            if failed:
                lines.append(f"\n{e['category']}/{e['model']}: no figures; {OURS_LABEL} refused the training images "
                             f"of seed {failed['seed']} ({failed['op']}): {failed['error']}")
            elif (e["ours"] or {}).get("n_refused"):
                o = e["ours"]
                lines.append(f"\n{e['category']}/{e['model']}: {OURS_LABEL} could not align {o['n_refused']} of the "
                             f"test images over the seeds ({o.get('n_refused_good', 0)} of them good): rejected, as the "
                             "service rejects them (ALIGNMENT_FAILED), so they rank above every scored image; "
                             "no map for them.")
        skipped = [e for e in rows if e["peer"] is None and e.get("peer_skipped") and not e.get("failed")]
        for e in skipped:
            lines.append(f"\n{peer_name} not run for {e['category']}/{e['model']}: {e['peer_skipped']}")
        for e in rows:
            if e["peer"] and e["peer"].get("shared_with"):
                lines.append(f"\n{e['category']}/{e['model']}: {peer_name}'s figures are those of its "
                             f"{e['peer']['shared_with']} run (same configuration).")
    lines += _differences_table(doc, peer_name)
    lines += _seed_table(doc, peer_name)
    lines += ["", "## Latency against the backbone's own forward (the floor)", "",
              "| set | model | setting | system | decode p50 ms | backbone p50 ms | e2e p50 ms | e2e / backbone |",
              "|---|---|---|---|---|---|---|---|"]
    for e in doc["results"]:
        for label, fig in ((OURS_LABEL, e["ours"]), (peer_name, e["peer"])):
            if not fig or (fig.get("shared_with") and label != OURS_LABEL):
                continue
            lines.append(f"| {e['category']} | {e['model']} | {e['setting']} | {label} | "
                         f"{_num(fig.get('decode_ms_p50'))} | {_num(fig.get('backbone_ms_p50'))} | "
                         f"{_num(_get(fig, 'latency_ms', 'p50'))} | {_f(fig.get('latency_over_backbone'), 2)} |")
    return "\n".join(lines) + "\n"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _times(value: float) -> str:
    return f"{value:.2f}×"


def _compared_cell(found: dict[str, Any] | None, fmt: Callable[[float], str], sd_digits: int) -> str:
    """One compared figure: ``value [low, high]; seeds min to max`` where there is an interval
    over the images, else ``mean ± sd (min to max)`` over the seeds; ``–`` without a figure."""
    if not found:
        return "–"
    images, seeds = found.get("images"), found.get("seeds") or {}
    several = len(seeds.get("values") or []) > 1
    if images:
        text = f"{fmt(found['value'])} [{fmt(images['low'])}, {fmt(images['high'])}]"
        return text + (f"; seeds {fmt(seeds['min'])} to {fmt(seeds['max'])}" if several else "")
    sd = seeds.get("sd")
    return (fmt(found["value"]) + ("" if sd is None else f" ± {sd:.{sd_digits}f}")
            + (f" ({fmt(seeds['min'])} to {fmt(seeds['max'])})" if several else ""))


def _differences_table(doc: dict[str, Any], peer_name: str) -> list[str]:
    """Every compared case: ours − peer (accuracy) and ours / peer (costs), with their uncertainty."""
    compared = [e for e in doc["results"] if e.get("differences")]
    if not compared:
        return []
    lines = ["", f"## Paired differences, {OURS_LABEL} against {peer_name}", "",
             f"Accuracy as {OURS_LABEL} − {peer_name}, costs as {OURS_LABEL} / {peer_name}, both systems on the same "
             "images. `[low, high]`: 95 % paired bootstrap interval over each seed's test images (the same draw for "
             "both systems), how far the test images drawn alone could move the figure; `seeds a to b`: the figure "
             "seed by seed (training draw and test draw together). Pixel AUROC, AUPRO, fit time and peak RSS have "
             "no per-image record: mean ± sd (least to largest) over the seeds. Figures only: no bar is applied.", "",
             "| set | model | setting | image AUROC | pixel AUROC | AUPRO | e2e p50 | model p50 | fit s | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in compared:
        d = e["differences"]
        cells = [_compared_cell(d.get(key), _signed, 3) for key in ("image_auroc", "pixel_auroc", "aupro")]
        cells += [_compared_cell(d.get(key), _times, 2)
                  for key in ("latency_p50", "model_p50", "fit_seconds", "peak_rss_mb")]
        lines.append(f"| {e['category']} | {e['model']} | {e['setting']} | " + " | ".join(cells) + " |")
    return lines


def _seed_table(doc: dict[str, Any], peer_name: str) -> list[str]:
    """Each seed's image AUROC, the means and spreads, and what one ranking pair weighs."""
    compared = any(e.get("differences") for e in doc["results"])
    lines = ["", "## Image AUROC per seed", "",
             f"Seeds {doc['protocol']['seeds']}. One pair = the AUROC step of one (good, defective) test pair "
             "ranked the other way." + (" The paired differences and their intervals are in the table above."
                                        if compared else ""), "",
             f"| set | model | setting | one pair | {OURS_LABEL} per seed | {OURS_LABEL} mean ± sd | "
             f"{peer_name} per seed | {peer_name} mean ± sd |",
             "|---|---|---|---|---|---|---|---|"]

    def per_seed(fig: dict[str, Any] | None) -> str:
        if not fig:
            return "–"
        return " ".join(_f(r.get("image_auroc")) for r in fig.get("replicates") or [])

    def mean_sd(fig: dict[str, Any] | None) -> str:
        if not fig:
            return "–"
        sd = fig.get("image_auroc_std")
        return _f(fig.get("image_auroc")) + ("" if sd is None else f" ± {sd:.3f}")

    for e in doc["results"]:
        n_bad = e.get("n_test_defective") or 0
        n_good = (e.get("n_test") or 0) - n_bad
        pair = _f(1.0 / (n_good * n_bad), 4) if n_good and n_bad else "–"
        lines.append(f"| {e['category']} | {e['model']} | {e['setting']} | {pair} | {per_seed(e['ours'])} | "
                     f"{mean_sd(e['ours'])} | {per_seed(e['peer'])} | {mean_sd(e['peer'])} |")
    return lines


def _versions(versions: dict[str, str] | None) -> str:
    if not versions:
        return "–"
    return ", ".join(f"{k} {v}" for k, v in versions.items())


def write_markdown(doc: dict[str, Any], path: Path) -> None:
    """Write :func:`markdown` of ``doc`` to ``path``."""
    path.write_text(markdown(doc))


def _cases(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["results"] if e.get("ours")]


def write_charts(doc: dict[str, Any], accuracy_png: Path, latency_png: Path) -> None:
    """Accuracy (image AUROC, pixel AUROC, AUPRO) and cost (latency, fit time) charts, ours beside the peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cases = _cases(doc)
    peer_name = _peer_label(doc)
    labels = [f"{e['category']}\n{e['model']}\n{e['setting']}" for e in cases]
    x = np.arange(len(cases))
    width = 0.38
    colours = {OURS_LABEL: "#1f77b4", peer_name: "#ff7f0e"}

    def bars(ax, key_path: tuple[str, ...], title: str, log: bool = False) -> None:
        ours = [_get(e["ours"], *key_path) for e in cases]
        peer = [_get(e["peer"], *key_path) for e in cases]
        ax.bar(x - width / 2, [np.nan if v is None else v for v in ours], width, label=OURS_LABEL,
               color=colours[OURS_LABEL])
        ax.bar(x + width / 2, [np.nan if v is None else v for v in peer], width, label=peer_name,
               color=colours[peer_name])
        ax.set_title(title)
        ax.set_xticks(x, labels, fontsize=7)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    n = max(len(cases), 1)
    fig, axes = plt.subplots(1, 3, figsize=(max(12, 1.1 * n * 3), 4.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"),
                                          ("aupro", "AUPRO (FPR ≤ 0.3)"))):
        bars(ax, (key,), title)
        ax.set_ylim(0.0, 1.02)
    axes[0][0].legend(loc="lower left")
    fig.suptitle(f"Accuracy: {OURS_LABEL} vs {peer_name} (raw scores, same backbone and input)")
    fig.tight_layout()
    fig.savefig(accuracy_png, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(max(12, 1.1 * n * 3), 4.8), squeeze=False)
    bars(axes[0][0], ("latency_ms", "p50"), "end-to-end latency p50 (ms, log)", log=True)
    backbone = [_get(e["ours"], "backbone_ms_p50") for e in cases]
    axes[0][0].scatter(x - width / 2, [np.nan if v is None else v for v in backbone], marker="_", s=300,
                       color="black", label=f"{OURS_LABEL} backbone forward", zorder=3)
    axes[0][0].legend(loc="upper left", fontsize=7)
    bars(axes[0][1], ("model_ms", "p50"), "model call p50 (ms, log)", log=True)
    bars(axes[0][2], ("fit_seconds",), "fit time (s, log)", log=True)
    fig.suptitle(f"Cost on this CPU: {OURS_LABEL} vs {peer_name} (interleaved per image)")
    fig.tight_layout()
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)


def _cpu_id(cpu: dict | None) -> str:
    """`` (family 25 model 1 stepping 1; avx2 fma)`` from the machine's ``cpu_id``, if recorded."""
    if not cpu:
        return ""
    simd = " ".join(cpu.get("simd") or []) or "no SIMD flags listed"
    return f" (family {cpu.get('family')} model {cpu.get('model')} stepping {cpu.get('stepping')}; {simd})"
