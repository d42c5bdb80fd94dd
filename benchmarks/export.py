"""ONNX exports beside their bundles on the real sets: parity, latency, INT8, and the runtime's install size.

For every MVTec-layout set under the datasets folder and for PatchCore, PaDiM and the feature
discriminator with their defaults (the GANs are left out: 15 epochs of training per set cost
more than this run's budget on a CPU; ``tests/test_export.py`` checks their parity), and the
discriminator's former defaults as ``discriminator-lite0-residual`` (:data:`VARIANTS`):

1. a version trained through the product's one training flow (``train_into``, calibration
   included, no detection estimate) on a seeded subset of at most ``--max-train`` goods;
2. ``export_version`` to ONNX, its own parity check on 16 of those goods and synthetic
   defects made from them, and the INT8 gate (``int8=True``);
3. **parity**: every test image of the set (or a seeded ``--max-test`` subset) judged by the
   bundle and by the export through ``anomaly.inspect.inspect`` (the one verdict path):
   the largest relative score difference, the largest map difference as a share of the
   bundle map's range, verdict and region-count mismatches;
4. **latency**: end to end per image from the file's bytes (decode, geometry, model, map,
   verdict, regions), the bundle on torch and the export on onnxruntime (and the INT8
   export where the gate kept it) called in turn on the same images in one process, with
   the same threads (torch's and onnxruntime's default: every core).

``--env-size`` builds the runtime-only environment from ``requirements/runtime.lock`` in a
fresh virtual environment (the package itself as a wheel, without dependencies), measures it beside
the full one (``.venv``), and scores one exported model there with ``anomaly score
--runtime onnx``, torch absent.

Rows are appended to ``runs.jsonl`` (a rerun skips what is done); ``summary.md`` and
``summary.json`` are written beside it and ``benchmarks/REPORT.md`` refreshed.

Usage::

    .venv/bin/python benchmarks/export.py
    .venv/bin/python benchmarks/export.py --env-size
    .venv/bin/python benchmarks/export.py --summary
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from ganomaly import load_average, read_rows, test_subset, training_subset  # noqa: E402
from report import write_report  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "export"
MODELS = ("patchcore", "padim", "discriminator")
#: A row's model -> (registry name, parameters besides the defaults): the defaults, and the
#: discriminator's defaults until 2026-12-04 (Lite0 at 256 px with the residual to the nearest
#: good patch, 256 wide), whose rows were measured as "discriminator" then.
VARIANTS = {**{m: (m, {}) for m in MODELS},
            "discriminator-lite0-residual": ("discriminator", {"backbone": "efficientnet_lite0", "image_size": 256,
                                                               "residual": True, "hidden_dim": 256})}


def folder_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root, name)
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 1e6


def run_one(category: MVTecCategory, model: str, args, work: Path) -> dict[str, Any]:
    from anomaly.export.onnx_export import export_version
    from anomaly.export.parity import compare
    from anomaly.imageio import read_image
    from anomaly.inspect import inspect
    from anomaly.runtime.deployed import load_deployed
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into

    goods = training_subset(category, args.max_train)
    samples = test_subset(category, args.max_test)
    store = ModelStore(work / "store")
    name = f"{category.root.name}-{model}".replace("_", "-")
    start = time.perf_counter()
    detector, params = VARIANTS[model]
    trained = train_into(store, name, detector, goods, TrainingOptions(detection=False), params=params,
                         source=str(category.root))
    train_s = time.perf_counter() - start
    bundle = store.load(name, trained.version)
    chosen = sorted(np.random.default_rng(0).choice(len(goods), size=min(16, len(goods)), replace=False).tolist())
    start = time.perf_counter()
    deploy = export_version(bundle, work / name, name=name, version=trained.version,
                            goods=[goods[i] for i in chosen], int8=True)
    export_s = time.perf_counter() - start
    exported = load_deployed(work / name)
    int8 = load_deployed(work / name / "int8") if deploy["int8"]["kept"] else None

    # Parity over the test images, in chunks (the maps are full size).
    images = [read_image(s.path) for s in samples]
    parity = compare(bundle, exported, images)

    # Latency from the file's bytes, the models called in turn on each image.
    timed = [s.path.read_bytes() for s in samples[: args.latency_images]]
    contenders = {"bundle": bundle, "onnx": exported, **({"int8": int8} if int8 is not None else {})}
    for model_ in contenders.values():
        inspect(model_, [timed[0]])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for data in timed:
        for key, model_ in contenders.items():
            t0 = time.perf_counter()
            inspect(model_, [data])
            times[key].append((time.perf_counter() - t0) * 1000)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    graph_p50 = int8_graph_speed(bundle, work / name, [read_image(p) for p in goods[:8]], images[: args.latency_images])
    return {
        "set": category.root.name, "dataset": str(category.root), "model": model, "n_train": len(goods),
        "n_test": len(samples), "train_seconds": round(train_s, 1), "export_seconds": round(export_s, 1),
        "graph_mb": round((work / name / "model.onnx").stat().st_size / 1e6, 2),
        "export_parity": deploy["parity"], "parity": parity.to_dict(),
        "latency_images": len(timed), "p50_ms": {k: round(v, 2) for k, v in p50.items()},
        "p90_ms": {k: round(float(np.percentile(v, 90)), 2) for k, v in times.items()},
        "onnx_over_bundle": round(p50["onnx"] / p50["bundle"], 3),
        "int8_over_onnx": round(p50["int8"] / p50["onnx"], 3) if "int8" in p50 else None,
        "int8_gate": deploy["int8"], "graph_p50_ms": graph_p50, "load_average": load_average(),
    }


def int8_graph_speed(bundle, folder: Path, calibration: list[np.ndarray], images: list[np.ndarray]) -> dict:
    """The graph alone, float32 against INT8 (quantised as the gate does, kept or not): p50 ms per
    model input on onnxruntime, the two sessions called in turn on the same inputs."""
    import onnxruntime

    from anomaly.runtime.deployed import model_inputs
    from anomaly.export.quantize import quantize_graph

    quantize_graph(folder / "model.onnx", folder / "probe.int8.onnx",
                   [x[None] for image in calibration for x in model_inputs(bundle.detector, image)])
    sessions = {k: onnxruntime.InferenceSession(str(folder / f), providers=["CPUExecutionProvider"])
                for k, f in (("float32", "model.onnx"), ("int8", "probe.int8.onnx"))}
    inputs = [model_inputs(bundle.detector, image)[0][None] for image in images]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for k, session in sessions.items():
        session.run(None, {"pixels": inputs[0]})
    for x in inputs:
        for k, session in sessions.items():
            t0 = time.perf_counter()
            session.run(None, {"pixels": x})
            times[k].append((time.perf_counter() - t0) * 1000)
    p50 = {k: round(float(np.median(v)), 2) for k, v in times.items()}
    return {**p50, "int8_over_float32": round(p50["int8"] / p50["float32"], 3)}


def env_size(args) -> dict[str, Any]:
    """The runtime-only environment, built from its lock, beside the full one; one export scored there."""
    from anomaly.export.onnx_export import export_version
    from anomaly.store import ModelStore
    from anomaly.training import TrainingOptions, train_into

    work = Path(tempfile.mkdtemp(prefix="runtime-env-"))
    try:
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-qq"]
        subprocess.run(pip + ["pip==26.3"], check=True)
        subprocess.run(pip + ["--require-hashes", "-r", str(REPO / "requirements" / "runtime.lock")], check=True)
        # The package as a line PC gets it: a wheel built here (the runtime lock has no build tools).
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-qq", "--no-deps", "--no-build-isolation", "-w",
                        str(work / "wheel"), str(REPO)], check=True)
        subprocess.run(pip + ["--no-deps", str(next((work / "wheel").glob("*.whl")))], check=True)
        category = MVTecCategory(next(r for r in find_categories(args.datasets) if r.name == args.env_set))
        goods = training_subset(category, 30)
        store = ModelStore(work / "store")
        train_into(store, "env", "patchcore", goods, TrainingOptions(detection=False))
        export_version(store.load("env"), work / "export", name="env", version=1, goods=goods[:4])
        part = test_subset(category, 1)[0].path
        done = subprocess.run([str(venv / "bin" / "anomaly"), "score", str(part), "--bundle", str(work / "export"),
                               "--runtime", "onnx"], capture_output=True, text=True)
        torch_there = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
        full = REPO / ".venv"
        return {
            "runtime_env_mb": round(folder_mb(venv), 1),
            "runtime_packages": sorted(line.split("==")[0] for line in
                                       (REPO / "requirements" / "runtime.lock").read_text().splitlines()
                                       if "==" in line and not line.startswith("#")),
            "full_env_mb": round(folder_mb(full), 1) if full.is_dir() else None,
            "full_env": ".venv (requirements/test.lock: the full product with its test tools)",
            "scored_in_runtime_env": done.returncode == 0,
            "runtime_answer": json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else done.stderr[-500:],
            "torch_importable_in_runtime_env": torch_there.returncode == 0,
            "set": category.root.name,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(rows: list[dict], env: dict | None) -> str:
    lines = ["**Parity**: every listed test image judged by the bundle (torch) and by its ONNX export "
             "(onnxruntime) through the same verdict path; tolerances: score 1e-4 relative, map 1e-3 of the range of "
             "the bundle maps' values over the images compared, no verdict mismatch; an image one model refuses must "
             "be refused by the other.", "",
             "| set | model | test images | refused by both | max score diff (relative) | max map diff (of range) "
             "| verdict mismatches | region-count mismatches |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parity"]
        lines.append(f"| {r['set']} | {r['model']} | {p['n_images']} | {p.get('refused', 0)} | "
                     f"{p['max_score_rel_diff']:.1e} | "
                     f"{p['max_map_diff']:.1e} | {p['verdict_mismatches']} | {p['region_count_mismatches']} |")
    lines += ["", "**Latency**, end to end per image from the file's bytes (decode, geometry, model, map, verdict, "
              "regions), the models called in turn on the same images in one process:", "",
              "| set | model | images | bundle (torch) p50 ms | export (onnxruntime) p50 ms | onnx / bundle | "
              "INT8 | graph MB | export s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gate = r["int8_gate"]
        speed = r.get("graph_p50_ms")
        graph = f" (its graph {speed['int8_over_float32']:.2f} x the float graph's p50)" if speed else ""
        if gate["kept"]:
            int8 = f"kept: p50 {r['p50_ms']['int8']:.1f} ms, {r['int8_over_onnx']:.2f} x onnx{graph}"
        else:
            int8 = (f"refused: good scores moved {gate['good_score_shift']['share_of_std']:.2f} of their spread "
                    f"(at most {gate['tolerances']['max_good_shift_share_of_std']}); false rejects "
                    f"{gate['int8']['false_reject_rate']:.2f} vs {gate['float']['false_reject_rate']:.2f}, detections "
                    f"{gate['int8']['detection_rate']:.2f} vs {gate['float']['detection_rate']:.2f}{graph}")
        lines.append(f"| {r['set']} | {r['model']} | {r['latency_images']} | {r['p50_ms']['bundle']:.1f} | "
                     f"{r['p50_ms']['onnx']:.1f} | {r['onnx_over_bundle']:.2f} | {int8} | {r['graph_mb']:.1f} | "
                     f"{r['export_seconds']:.0f} |")
    mismatches = sum(r["parity"]["verdict_mismatches"] for r in rows)
    images = sum(r["parity"]["n_images"] for r in rows)
    ratios = [r["onnx_over_bundle"] for r in rows]
    if rows:
        lines += ["", f"- {images} judgements compared, {mismatches} verdict mismatches; worst score difference "
                  f"{max(r['parity']['max_score_rel_diff'] for r in rows):.1e} relative, worst map difference "
                  f"{max(r['parity']['max_map_diff'] for r in rows):.1e} of the maps' range.",
                  *[f"- Outside the tolerance: {r['set']} / {r['model']} (score {r['parity']['max_score_rel_diff']:.1e}, "
                    f"map {r['parity']['max_map_diff']:.1e} of the range, verdict mismatches "
                    f"{r['parity']['verdict_mismatches']})." for r in rows if not r['parity']['ok']],
                  f"- onnxruntime over torch, p50: {min(ratios):.2f} to {max(ratios):.2f} x; INT8 kept on "
                  f"{sum(r['int8_gate']['kept'] for r in rows)} of {len(rows)} models."]
    if env:
        lines += ["", f"**Install size**: the runtime-only environment (`requirements/runtime.lock` and the package, "
                  f"no torch; the virtual environment's own pip and setuptools included) "
                  f"{env['runtime_env_mb']:.0f} MB, against {env['full_env_mb']:.0f} MB for "
                  f"{env['full_env']}. An export of a PatchCore on {env['set']} scored there with `anomaly score "
                  f"--runtime onnx`: {'yes' if env['scored_in_runtime_env'] else 'NO'} (torch importable there: "
                  f"{'yes' if env['torch_importable_in_runtime_env'] else 'no'}). Packages: "
                  f"{', '.join(env['runtime_packages'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--sets", nargs="*", help="category names to run (default: all found)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=sorted(VARIANTS))
    p.add_argument("--max-train", type=int, default=100)
    p.add_argument("--max-test", type=int, default=None, help="test images per set (default: all)")
    p.add_argument("--latency-images", type=int, default=40)
    p.add_argument("--out", type=Path, default=OUT / "runs.jsonl")
    p.add_argument("--env-size", action="store_true", help="measure the runtime-only environment (and nothing else)")
    p.add_argument("--env-set", default="grid", help="the set whose export is scored in that environment")
    p.add_argument("--summary", action="store_true", help="only write the summary of the results")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env_path = args.out.parent / "env.json"
    if args.env_size:
        env = env_size(args)
        env_path.write_text(json.dumps({**env, "provenance": run_provenance()}, indent=2) + "\n")
        print(json.dumps(env, indent=2))
    elif not args.summary:
        done = {(r["set"], r["model"]) for r in read_rows([args.out])}
        for root in find_categories(args.datasets):
            if args.sets and root.name not in args.sets:
                continue
            for model in args.models:
                if (root.name, model) in done:
                    continue
                with tempfile.TemporaryDirectory(prefix="export-bench-") as work:
                    row = run_one(MVTecCategory(root), model, args, Path(work))
                row["commit"] = git_commit(REPO)
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("set", "model", "p50_ms", "onnx_over_bundle")}
                                 | {"parity": row["parity"]["ok"], "int8": row["int8_gate"]["kept"]}), flush=True)
    rows = read_rows([args.out])
    env = json.loads(env_path.read_text()) if env_path.is_file() else None
    (args.out.parent / "summary.md").write_text(summarize(rows, env))
    doc = {"command": "python benchmarks/export.py (and --env-size)", "rows": len(rows),
           "provenance": {**run_provenance(), "commit": git_commit(REPO)}}
    (args.out.parent / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
