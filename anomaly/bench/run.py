"""The benchmark coordinator: every category, model and setting, both systems, one run.

For each (category, model, setting) and seed a fresh worker process per system fits on the
same sub-sampled training images (both processes import at once, untimed; then ours fits,
then the peer, each alone), then the test images are scored
one at a time, **interleaved**: image i goes to both workers back to back (ours first on
even i, the peer first on odd i), so the noise of a shared machine hits both systems
alike. Two untimed warm-up calls per worker come first. Accuracy comes from the same
metric code for both (:mod:`anomaly.metrics`), on raw scores and maps at each image's own
resolution. Outputs are rewritten after every case, so a run cut short still leaves a
consistent ``bench.json`` (``complete: false``).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomaly.bench.compare import COMPARED, LEVEL, RESAMPLES, SEED, differences, ratios
from anomaly.bench.figures import figures
from anomaly.bench.peer_anomalib import peer_python
from anomaly.bench.protocol import BENCH_MODELS, GAN_MODELS, SETTINGS, ModelSetting, model_settings, subsample_test, subsample_train
from anomaly.bench.provenance import git_commit, machine_info
from anomaly.bench.worker import BenchError, WorkerClient, WorkerRequestError
from anomaly.datasets import MVTecCategory, Sample, find_categories
from anomaly.errors import DatasetError, InvalidParameterError, UnknownDetectorError
from anomaly.progress import progress

log = logging.getLogger(__name__)

#: Version 2: paired ``differences`` with their uncertainty replace version 1's pass/fail
#: ``checks`` and ``image_auroc_difference``; replicates keep per-image timings.
SCHEMA = "anomaly-bench/2"
WARMUP_CALLS = 2
#: Replicates of a run: one seed's sub-sample, coreset or channel draw moved image AUROC
#: by 0.02 to 0.15 on the shared sets (one ranking pair is 0.03 on grid), so a single draw
#: decides nothing (see the per-seed table of ``bench.md``).
DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class BenchConfig:
    """What one ``anomaly bench`` run measures.

    Attributes:
        root: A folder with MVTec-layout categories (or one category).
        out: Output folder (``bench.json``, ``bench.md``, ``accuracy.png``, ``latency.png``).
        models: Our registry names to compare.
        settings: ``matched`` and/or ``defaults``.
        peer: ``"anomalib"`` or ``None`` (ours only).
        peer_python: Interpreter with anomalib (default: found, see :func:`peer_python`).
        max_train: At most this many training images per category (seeded, both sides).
        max_test: At most this many test images per category (seeded, stratified).
        seeds: One replicate per seed: the sub-sampling and every random choice of both
            systems (coreset start and projection, PaDiM channels) are seeded with it.
            Accuracy is reported per seed and as the mean over seeds; latencies pool
            every replicate's images; the two systems are compared seed by seed and
            image by image (:mod:`anomaly.bench.compare`).
        image_size: Square model input of both sides.
        matched_coreset_ratio: PatchCore coreset ratio of the matched comparison.
        peer_defaults_max_patches: anomalib's default PatchCore runs where the training
            patches are at most this many (its coreset loop is the budget); ``None`` = always.
        gan_image_size: Square input of both systems' GANs (``--models ganomaly skip-ganomaly``).
        gan_epochs: Training epochs of both systems' GANs.
        categories: Only these categories (folder name, or ``dataset/category``); all when empty.
        ours_python: Interpreter of our workers. Default: the peer's when it runs (both
            systems then load the same torch binaries from the same files, so the shared
            libraries weigh alike in the resident memory), else this one.
        ours_params: Hyper-parameters laid over our side's parameters in every comparison
            (``--param KEY=VALUE``), to measure one of our options side by side; the peer's
            are unchanged. Recorded in the report.
    """

    root: Path
    out: Path
    models: tuple[str, ...] = BENCH_MODELS
    settings: tuple[str, ...] = SETTINGS
    peer: str | None = "anomalib"
    peer_python: str | None = None
    max_train: int | None = 100
    max_test: int | None = 150
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    image_size: int = 256
    matched_coreset_ratio: float = 0.01
    peer_defaults_max_patches: int | None = 40_000
    gan_image_size: int = 128
    gan_epochs: int = 15
    ours_python: str | None = None
    categories: tuple[str, ...] = ()
    ours_params: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Replicate:
    """One seed's images: the same for both systems."""

    seed: int
    train: list[Path]
    test: list[Sample]


@dataclass
class _Peer:
    python: str | None
    reason: str | None
    hello: dict[str, Any] | None = None
    check: dict[str, Any] | None = None


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its outputs.

    Returns:
        The ``bench.json`` document (see :mod:`anomaly.bench` for its keys).

    Raises:
        DatasetError: no MVTec-layout category under ``config.root``.
        InvalidParameterError: an unknown setting or a non-positive limit.
        UnknownDetectorError: a model name that is not registered.
    """
    _validate(config)
    categories = find_categories(config.root)
    if config.categories:
        wanted = set(config.categories)
        categories = [c for c in categories if c.name in wanted or f"{c.parent.name}/{c.name}" in wanted]
    if not categories:
        raise DatasetError(f"no MVTec-layout category (a folder with train/good) at or below {config.root}"
                           + (f" named {list(config.categories)}" if config.categories else ""))
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    logs, bundles = out / "logs", out / ".bundles"
    code_root = Path(__file__).resolve().parents[2]

    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "complete": False,
        "command": command_line(config),
        "started": _now(),
        "finished": None,
        "wall_seconds": None,
        "machine": machine_info(),
        "commit": git_commit(code_root),
        "packages": {"ours": None, "peer": None},
        "peer": None,
        "protocol": _protocol(config),
        "backbone_check": None,
        "results": [],
        "summary": None,
    }
    plans = []
    for folder in categories:
        category = MVTecCategory(folder)
        train_all, test_all = category.train_good(), category.test_samples()
        replicates = [_Replicate(seed, subsample_train(train_all, config.max_train, seed),
                                 subsample_test(test_all, config.max_test, seed)) for seed in config.seeds]
        plans.append((category, train_all, test_all, replicates))

    peer = _start_peer(config, code_root, plans[0][3][0].train[0], logs)
    doc["peer"] = {"name": config.peer, "python": peer.python, "available": peer.python is not None,
                   "reason": peer.reason, "version": (peer.hello or {}).get("versions", {}).get("anomalib"),
                   "torch_threads": (peer.hello or {}).get("torch_threads")}
    doc["packages"]["peer"] = (peer.hello or {}).get("versions")
    ours_python = config.ours_python or peer.python or sys.executable
    doc["protocol"]["pythons"] = {"ours": ours_python, "peer": peer.python}
    doc["backbone_check"] = peer.check

    shared: dict[tuple[str, str, str], dict[str, Any]] = {}
    try:
        for category, train_all, test_all, replicates in plans:
            for model in config.models:
                offered = {ms.setting for ms in model_settings(model)}
                for setting in [s for s in SETTINGS if s in config.settings and s in offered]:
                    log.info("bench: %s / %s / %s (%d train, %d test, seeds %s)", category.name, model, setting,
                             len(replicates[0].train), len(replicates[0].test), list(config.seeds))
                    entry = _run_case(config, ours_python, category, replicates, model, setting, peer, shared, logs,
                                      bundles, code_root, doc)
                    entry["n_train_total"], entry["n_test_total"] = len(train_all), len(test_all)
                    doc["results"].append(entry)
                    _write(doc, out, start)
        doc["complete"] = True
    finally:
        shutil.rmtree(bundles, ignore_errors=True)
        _write(doc, out, start)
    return doc


def _validate(config: BenchConfig) -> None:
    unknown = sorted(set(config.settings) - set(SETTINGS))
    if unknown or not config.settings:
        raise InvalidParameterError(f"settings must be among {list(SETTINGS)}, got {list(config.settings)}")
    if int(config.gan_image_size) < 16 or int(config.gan_epochs) < 1:
        raise InvalidParameterError(f"gan_image_size must be >= 16 and gan_epochs >= 1, got "
                                    f"{config.gan_image_size} and {config.gan_epochs}")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise InvalidParameterError(f"seeds must be one or more distinct integers, got {list(config.seeds)}")
    for name in ("max_train", "max_test"):
        value = getattr(config, name)
        if value is not None and int(value) < 1:
            raise InvalidParameterError(f"{name} must be >= 1 (or unset), got {value}")
    if config.max_train is not None and int(config.max_train) < 2:
        raise InvalidParameterError(f"max_train must be >= 2, got {config.max_train}")
    if not 0.0 < float(config.matched_coreset_ratio) <= 1.0:
        raise InvalidParameterError(f"matched_coreset_ratio must be in (0, 1], got {config.matched_coreset_ratio}")
    if config.peer not in (None, "anomalib"):
        raise InvalidParameterError(f"peer must be 'anomalib' or none, got {config.peer!r}")
    if not config.models:
        raise InvalidParameterError("no model to benchmark")
    from anomaly.detectors.registry import available_detectors  # names only: imports no detector

    known = available_detectors()
    unknown = [m for m in config.models if m not in known]
    if unknown:
        # Checked here: inside the run, a detector's typed error is recorded per case.
        raise UnknownDetectorError(f"unknown model(s) {unknown}; known: {', '.join(known)}")


def _protocol(config: BenchConfig) -> dict[str, Any]:
    return {
        "models": list(config.models),
        "settings": list(config.settings),
        "categories": list(config.categories) or "all",
        "max_train": config.max_train,
        "max_test": config.max_test,
        "seeds": list(config.seeds),
        "image_size": config.image_size,
        "matched_coreset_ratio": config.matched_coreset_ratio,
        "peer_defaults_max_patches": config.peer_defaults_max_patches,
        "gan_image_size": config.gan_image_size,
        "gan_epochs": config.gan_epochs,
        "ours_params": dict(config.ours_params),
        "warmup_calls": WARMUP_CALLS,
        "replicates": "one replicate per seed, each with its own sub-sample and seeded models on both sides; "
                      "accuracy is the mean over the replicates, with each seed's "
                      "figure kept; latency percentiles pool every replicate's images, fit seconds are the "
                      "median and peak memory the largest over the replicates",
        "differences": {"figures": COMPARED, "level": LEVEL, "resamples": RESAMPLES, "seed": SEED},
        "subsampling": "train: numpy default_rng(seed).choice without replacement, path order kept (as "
                       "`anomaly eval --limit-train`); test: stratified by defect type (good included), "
                       "largest-remainder quotas, at least one per type, same seeded generator; identical for "
                       "both systems",
        "timing": "one fresh worker process per system, case and seed, both started (importing) at once "
                  "before anything is timed; fits run back to back (ours, then the peer), "
                  "timed from a built model with its weights loaded to a model ready to score; "
                  "test images are scored one at a time, interleaved per image (ours first on even images, the "
                  "peer first on odd ones); every timing taken inside the worker around the measured call",
        "scores": "raw scores and maps on both sides: no normalisation, no statistics of test data",
        "peer_coreset_malloc": "anomalib's k-center selection runs with glibc's mmap threshold fixed at 128 KiB "
                               "(mallopt), then 32 MiB for the rest of its process: with the dynamic threshold its "
                               "heap grew ~16 MB per iteration on small sets here (killed for memory at 21 GB on the "
                               "25-image grid set at its default ratio); ours runs with glibc's defaults",
    }


def _start_peer(config: BenchConfig, code_root: Path, probe_image: Path, logs: Path) -> _Peer:
    if config.peer is None:
        return _Peer(None, "not requested (--peer none)")
    python, reason = peer_python(code_root, config.peer_python)
    if python is None:
        log.warning("bench: running ours only: %s", reason)
        return _Peer(None, reason)
    layers = sorted({i for m in config.models for ms in model_settings(m) if ms.peer
                     for i in ms.peer.get("layers", [])})
    try:
        with WorkerClient(python, "anomalib", logs / "anomalib-backbone-check.log", code_root) as worker:
            hello = worker.hello
            if not layers:  # GANs only: no pretrained backbone to compare
                return _Peer(python, None, hello, None)
            check = worker.call({"op": "backbone_check", "backbone": "efficientnet_lite0", "layers": layers,
                                 "path": str(probe_image), "image_size": config.image_size})
    except BenchError as exc:
        log.warning("bench: anomalib does not start: %s", exc)
        return _Peer(None, f"anomalib worker failed: {exc}")
    if not check["identical"]:
        return _Peer(None, f"backbones differ on one image: {check['max_abs_diff']}", hello, check)
    log.info("bench: anomalib %s at %s; backbones identical on %s (max |diff| %s)",
             hello["versions"].get("anomalib"), python, probe_image, check["max_abs_diff"])
    return _Peer(python, None, hello, check)


def _run_case(config: BenchConfig, ours_python: str, category: MVTecCategory, replicates: list[_Replicate],
              model: str, setting: str, peer: _Peer, shared: dict, logs: Path, bundles: Path, code_root: Path,
              doc: dict[str, Any]) -> dict[str, Any]:
    """One category, model and setting: every replicate (seed) on both systems, then the figures."""
    cases = {r.seed: _setting(config, model, setting, r.seed) for r in replicates}
    ms = cases[replicates[0].seed]
    first = replicates[0]
    entry: dict[str, Any] = {
        "category": category.name,
        "dataset": str(category.root),
        "model": model,
        "setting": setting,
        "seeds": [r.seed for r in replicates],
        "n_fit": len(first.train),
        "n_test": len(first.test),
        "n_test_defective": int(sum(s.label for s in first.test)),
        "notes": list(ms.notes),
        "ours": None,
        "peer": None,
        "peer_skipped": None,
        "ratios": None,
        # Each seed's test images (relative to the set) and labels, in the order of the
        # replicates' ``scores``: the per-image record behind every accuracy figure.
        "test_sets": [{"seed": r.seed, "images": [_relative(s.path, category.root) for s in r.test],
                       "labels": [int(s.label) for s in r.test]} for r in replicates],
        # Ours against the peer, paired by image and by seed, each with its uncertainty
        # (see anomaly.bench.compare); nothing is judged.
        "differences": None,
        # Set when our detector refused a seed's training images with a typed error: the
        # case then has no figures, and the run goes on with the next one.
        "failed": None,
    }
    key = (category.name, model, setting)
    run_peer = False
    if ms.peer is None:
        entry["peer_skipped"] = "; ".join(ms.notes) or "no counterpart"
    elif peer.python is None:
        entry["peer_skipped"] = peer.reason
    elif (ms.peer_shared_with or ms.peer_shared_model) and (
            category.name, ms.peer_shared_model or model, ms.peer_shared_with or setting) in shared:
        source_model, source_setting = ms.peer_shared_model or model, ms.peer_shared_with or setting
        label = source_setting if source_model == model else f"{source_model}/{source_setting}"
        entry["peer"] = dict(shared[(category.name, source_model, source_setting)], shared_with=label)
    elif ms.peer_max_patches is not None and len(first.train) * _patches_per_image(ms) > ms.peer_max_patches:
        n_patches = len(first.train) * _patches_per_image(ms)
        entry["peer_skipped"] = (
            f"budget: {len(first.train)} images x {_patches_per_image(ms)} patches = {n_patches} "
            f"training patches > {ms.peer_max_patches}; anomalib's sequential greedy coreset at its default ratio "
            f"{ms.peer.get('coreset_ratio')} would take {int(n_patches * ms.peer.get('coreset_ratio', 0))} "
            "passes over all of them (raise --peer-defaults-max-patches to run it)")
    else:
        run_peer = True

    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "peer": []}
    for replicate in replicates:
        try:
            replies = _run_replicate(ours_python, category, replicate, cases[replicate.seed], peer, run_peer, logs,
                                     bundles, code_root, doc)
        except WorkerRequestError as exc:
            # Our detector refusing this training set (a typed error: images it cannot align,
            # of mixed sizes...) is a result for this case; anything else stops the run.
            if not (exc.system == "ours" and exc.op == "fit" and exc.typed):
                raise
            log.warning("bench: %s / %s / %s seed %d: fit refused: %s", category.name, model, setting,
                        replicate.seed, exc.error)
            entry["failed"] = {"system": exc.system, "op": exc.op, "seed": replicate.seed, "error": exc.error}
            entry["peer"], entry["peer_skipped"] = None, entry["peer_skipped"] or "our fit was refused"
            return entry
        for name, run in replies.items():
            runs[name].append(run)
    entry["ours"] = figures(runs["ours"])
    if run_peer:
        entry["peer"] = figures(runs["peer"])
        shared[key] = entry["peer"]
    if entry["peer"] is not None:
        entry["ratios"] = ratios(entry["ours"], entry["peer"])
        entry["differences"] = differences(entry)
    return entry


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _setting(config: BenchConfig, model: str, setting: str, seed: int) -> ModelSetting:
    found = [ms for ms in model_settings(model, image_size=config.image_size,
                                         matched_coreset_ratio=config.matched_coreset_ratio,
                                         peer_defaults_max_patches=config.peer_defaults_max_patches, seed=seed,
                                         gan_image_size=config.gan_image_size, gan_epochs=config.gan_epochs)
             if ms.setting == setting]
    if not config.ours_params:
        return found[0]
    return replace(found[0], ours={**found[0].ours, **config.ours_params})


def _run_replicate(ours_python: str, category: MVTecCategory, replicate: _Replicate, ms: ModelSetting, peer: _Peer,
                   run_peer: bool, logs: Path, bundles: Path, code_root: Path,
                   doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fit both systems on one seed's training images and score its test images, interleaved.

    Returns:
        Per system (``ours``, ``peer``): ``seed``, ``fit`` and ``finish`` replies, the
        per-image ``timings`` and the worker's ``hello``.
    """
    stem = f"{category.name}-{ms.model}-{ms.setting}-seed{replicate.seed}"
    train_paths = [str(p) for p in replicate.train]
    test = replicate.test
    clients: list[tuple[str, WorkerClient]] = []
    out: dict[str, dict[str, Any]] = {}
    try:
        # Both workers import at once (untimed; about 8 s for anomalib's, 3 s for ours), then
        # fit one after the other, each alone on the machine.
        ours = WorkerClient(ours_python, "ours", logs / f"{stem}-ours.log", code_root, greet=False)
        clients.append(("ours", ours))
        peer_worker = None
        if run_peer:
            peer_worker = WorkerClient(peer.python, "anomalib", logs / f"{stem}-anomalib.log", code_root, greet=False)
            clients.append(("peer", peer_worker))
        for _, client in clients:
            client.greet()
        doc["packages"]["ours"] = doc["packages"]["ours"] or ours.hello["versions"]
        fits = {"ours": ours.call({"op": "fit", "model": ms.model, "params": ms.ours, "train": train_paths,
                                   "bundle_dir": str(bundles / stem)})}
        if peer_worker is not None:
            backbone = fits["ours"]["backbone"]
            params = {**ms.peer, "seed": replicate.seed}
            if backbone:  # the same pretrained backbone and normalisation on both sides
                params.update(backbone=backbone["name"], mean=backbone["mean"], std=backbone["std"])
            fits["peer"] = peer_worker.call({"op": "fit", "model": ms.model, "params": params, "train": train_paths,
                                             "bundle_dir": str(bundles / stem)})
        log.info("bench: %s fit: %s", stem, ", ".join(f"{n} {f['fit_seconds']:.1f} s" for n, f in fits.items()))
        for _, client in clients:
            for _ in range(WARMUP_CALLS):
                client.call({"op": "warmup", "path": str(test[0].path)})
        timings: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in clients}
        for i, sample in enumerate(progress(test, desc=stem)):
            request = {"op": "score", "path": str(sample.path), "label": sample.label,
                       "defect_type": sample.defect_type, "mask": str(sample.mask_path) if sample.mask_path else None}
            order = clients if i % 2 == 0 else clients[::-1]
            for name, client in order:
                timings[name].append(client.call(request))
        for _, client in clients:  # the metrics (untimed) of both systems at once
            client.send({"op": "finish"})
        for name, client in clients:
            out[name] = {"seed": replicate.seed, "fit": fits[name], "finish": client.receive("finish"),
                         "timings": timings[name], "hello": client.hello}
    finally:
        for _, client in clients:
            client.close()
    return out


def _patches_per_image(ms: ModelSetting) -> int:
    """Feature-grid cells per image of the finest layer (timm CNN stages reduce by 2 ** (i + 1))."""
    stride = 2 ** (min(ms.peer["layers"]) + 1)
    return (int(ms.peer["image_size"]) // stride) ** 2


def _summary(doc: dict[str, Any], wall: float) -> dict[str, Any]:
    """Counts of the run: figures only (the comparisons are in each result's ``differences``)."""
    return {
        "wall_seconds": round(wall, 1),
        "cases": len(doc["results"]),
        "cases_compared": sum(1 for e in doc["results"] if e.get("differences")),
        "fits_refused": [f"{e['category']}/{e['model']}/{e['setting']}" for e in doc["results"] if e.get("failed")],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write(doc: dict[str, Any], out: Path, start: float) -> None:
    from anomaly.bench.report import write_charts, write_markdown

    wall = time.perf_counter() - start
    doc["wall_seconds"] = round(wall, 1)
    doc["finished"] = _now()
    doc["machine"]["load_average_end"] = machine_info()["load_average"]
    doc["summary"] = _summary(doc, wall)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(out / "bench.json")
    write_markdown(doc, out / "bench.md")
    write_charts(doc, out / "accuracy.png", out / "latency.png")


def command_line(config: BenchConfig) -> str:
    """The ``anomaly bench`` command that repeats this run, every option spelled out."""

    def limit(value: int | None) -> str:
        return "all" if value is None else str(value)

    args = ["anomaly", "bench", str(config.root), "--models", *config.models, "--settings", *config.settings,
            "--peer", config.peer or "none"]
    if config.categories:
        args += ["--categories", *config.categories]
    if config.peer_python:
        args += ["--peer-python", config.peer_python]
    if config.ours_python:
        args += ["--ours-python", config.ours_python]
    args += ["--out", str(config.out), "--max-train", limit(config.max_train), "--max-test", limit(config.max_test),
             "--seeds", *(str(seed) for seed in config.seeds), "--image-size", str(config.image_size),
             "--matched-coreset-ratio", str(config.matched_coreset_ratio),
             "--peer-defaults-max-patches", limit(config.peer_defaults_max_patches)]
    if any(m in GAN_MODELS for m in config.models):
        args += ["--gan-image-size", str(config.gan_image_size), "--gan-epochs", str(config.gan_epochs)]
    for key, value in config.ours_params.items():
        args += ["--param", f"{key}={json.dumps(value)}"]
    return shlex.join(args)
