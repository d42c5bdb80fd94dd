"""The feature discriminator beside PatchCore, PaDiM and anomalib 2.7.0's SuperSimpleNet, on the real sets.

For every MVTec-layout set under the datasets folder, every seed and every model:

1. the same training images for every model and seed: a seeded subset of at most
   ``--max-train`` (100) of ``train/good`` (subset seed 0, so the seeds vary the training
   only), and the same seeded subset of at most ``--max-test`` (150) test images;
2. ours through the registry with ``random_state=seed``: ``patchcore`` and ``padim`` with
   their defaults; ``discriminator`` with its defaults (EfficientNet-Lite2 at 260 px, the
   feature alone, a 1,024-wide hidden layer); ``discriminator-lite0-residual``, its
   defaults until 2026-12-04 (Lite0 at 256 px, the feature and its residual to the nearest
   good patch, 256 wide: :data:`FORMER_DEFAULT`), and variants named for how they differ
   from that one: ``-lite1`` / ``-lite2`` (the Lite1 / Lite2 backbone at the input size
   it was trained at), ``-feature-only`` (SimpleNet's input: no residual), ``-bank8192``
   (residuals against 8,192 good patches instead of 2,048), ``-lite2-feature-only``
   (both), ``-position`` / ``-lite2-position`` (with the residual to the goods at the same
   grid cell), ``-soft`` (the residual to a softmin-weighted mean of the nearest bank
   patches, ``residual_softness=0.05``), ``-fresh`` (the feature-space noise drawn afresh
   every epoch), ``-ascent`` (fresh noise pushed by 5 steps of GLASS's gradient ascent),
   ``-lite2-feature-only-all-patches`` / ``-lite2-feature-only-hidden1024`` (every patch
   of each good instead of 256; GLASS's 1,024-wide hidden layer: the current default but
   for the two changes that came with it, see docs/discriminator.md) and ``-hidden1024``;
3. ``anomalib-supersimplenet`` (with ``--peer``, under ``.venv-peer/bin/python``):
   anomalib's ``SupersimplenetModel`` on the same EfficientNet weights (Lite0 at 256 px, or
   Lite2 at 260 px with ``--peer-backbone efficientnet_lite2``, the discriminator's default;
   timm names ``blocks.2`` and ``blocks.4``: the discriminator's stages 2 and 3), images read and
   prepared as anomalib does (``read_image``, ``Resize`` + ImageNet ``Normalize``), trained
   by the steps of its Lightning module (``SSNLoss``, AdamW with its learning rates,
   ``MultiStepLR`` at 80 % and 90 % of the epochs) for ``--epochs`` epochs, the most our
   discriminator may run; its ``pred_score`` and ``anomaly_map`` as they come;
4. every test image scored alone from its file's bytes, timed, and the model's backbone
   floor timed beside it on the same image (decode, resize, normalise and the backbone's
   forward: the least any model on those features spends), the two alternating;
5. image AUROC over the test subset; pixel AUROC and AUPRO (FPR <= 0.3) where the set has
   masks, from the maps at the image's resolution.

Rows are appended to a JSON-lines file as they come (a rerun skips what is done); a summary
(mean +- standard deviation over seeds) is written beside it with ``--summary``.

``--train-time SET`` times the product's whole training flow on 200 goods of a set
(``anomaly train --model discriminator --max-images 200``, with the parameters of
``--train-model``'s variant: features, synthetic defects, five cross-fitted fold models, the
final model, calibration and the detection estimate) in a process of its own, with its peak
memory, into ``train_time.json`` beside the results (one entry per set and variant).

Usage::

    .venv/bin/python benchmarks/discriminator.py
    .venv-peer/bin/python benchmarks/discriminator.py --peer --models anomalib-supersimplenet \
        [--peer-backbone efficientnet_lite2]
    .venv/bin/python benchmarks/discriminator.py --train-time ball_screw [--train-model VARIANT]
    .venv/bin/python benchmarks/discriminator.py --summary
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from anomaly.metrics import PixelMetrics, image_auroc, quantile_thresholds  # noqa: E402
from ganomaly import load_average, read_rows, test_subset, training_subset  # noqa: E402
from report import write_report  # noqa: E402

OURS = ("patchcore", "padim", "discriminator", "discriminator-lite0-residual", "discriminator-lite1",
        "discriminator-lite2", "discriminator-feature-only", "discriminator-bank8192",
        "discriminator-lite2-feature-only",
        "discriminator-position", "discriminator-lite2-position", "discriminator-soft", "discriminator-fresh",
        "discriminator-ascent", "discriminator-lite2-feature-only-all-patches",
        "discriminator-lite2-feature-only-hidden1024", "discriminator-hidden1024")
PEER = "anomalib-supersimplenet"
#: The peer's backbones (our weights, timm names) and the input size each was trained at.
PEER_SIZES = {"efficientnet_lite0": 256, "efficientnet_lite2": 260}
#: The discriminator's defaults until 2026-12-04 (EfficientNet-Lite0 at 256 px, the residual to
#: the nearest good patch, a 256-wide hidden layer); the variants after it in ``VARIANTS`` are
#: named for how they differ from it. ``discriminator`` is the current default.
FORMER_DEFAULT = {"backbone": "efficientnet_lite0", "image_size": 256, "residual": True, "hidden_dim": 256}
LITE2_FEATURE_ONLY = {**FORMER_DEFAULT, "backbone": "efficientnet_lite2", "image_size": 260, "residual": False}
#: Our model name -> (registry name, parameters besides the defaults).
VARIANTS = {"patchcore": ("patchcore", {}), "padim": ("padim", {}), "discriminator": ("discriminator", {}),
            "discriminator-lite0-residual": ("discriminator", FORMER_DEFAULT),
            "discriminator-lite1": ("discriminator", {**FORMER_DEFAULT, "backbone": "efficientnet_lite1",
                                                      "image_size": 240}),
            "discriminator-lite2": ("discriminator", {**FORMER_DEFAULT, "backbone": "efficientnet_lite2",
                                                      "image_size": 260}),
            "discriminator-feature-only": ("discriminator", {**FORMER_DEFAULT, "residual": False}),
            "discriminator-bank8192": ("discriminator", {**FORMER_DEFAULT, "bank_size": 8192}),
            "discriminator-lite2-feature-only": ("discriminator", LITE2_FEATURE_ONLY),
            "discriminator-position": ("discriminator", {**FORMER_DEFAULT, "position": True}),
            "discriminator-soft": ("discriminator", {**FORMER_DEFAULT, "residual_softness": 0.05}),
            "discriminator-lite2-position": ("discriminator", {**LITE2_FEATURE_ONLY, "position": True}),
            "discriminator-fresh": ("discriminator", {**FORMER_DEFAULT, "fresh_noise": True}),
            "discriminator-ascent": ("discriminator", {**FORMER_DEFAULT, "ascent_steps": 5}),
            "discriminator-lite2-feature-only-all-patches": ("discriminator", {**LITE2_FEATURE_ONLY,
                                                                              "patches_per_image": 4096}),
            "discriminator-lite2-feature-only-hidden1024": ("discriminator", {**LITE2_FEATURE_ONLY,
                                                                             "hidden_dim": 1024}),
            "discriminator-hidden1024": ("discriminator", {**FORMER_DEFAULT, "hidden_dim": 1024})}
OUT = REPO / "benchmarks" / "results" / "discriminator"

Scorer = Callable[[bytes], tuple[float, np.ndarray]]


# -- ours ---------------------------------------------------------------------------------
def fit_ours(model: str, paths: list[Path], args, seed: int) -> tuple[Scorer, Callable[[bytes], None], dict]:
    from anomaly.detectors.registry import create_detector
    from anomaly.imageio import as_image

    name, params = VARIANTS[model]
    detector = create_detector(name, {**params, "random_state": seed}).fit([str(p) for p in paths])

    def score(data: bytes) -> tuple[float, np.ndarray]:
        result = detector.score([data])
        return float(result.scores[0]), result.maps[0]

    def floor(data: bytes) -> None:
        detector._layers([as_image(data)])

    meta = detector.training_meta()
    info = {"params": detector.get_params(), "backbone_sha256": detector.backbone_info()["weights_sha256"]}
    if name == "discriminator":
        info.update(epochs_run=meta["epochs"], best_epoch=meta["best_epoch"], synthetic=meta["synthetic"])
    return score, floor, info


# -- anomalib's SuperSimpleNet -------------------------------------------------------------
def fit_peer(paths: list[Path], args, seed: int) -> tuple[Scorer, Callable[[bytes], None], dict]:
    import functools

    import anomalib
    import torch
    from anomalib.data.utils import read_image
    from anomalib.models import Supersimplenet
    from anomalib.models.components import TimmFeatureExtractor
    from anomalib.models.image.supersimplenet import torch_model
    from anomalib.models.image.supersimplenet.loss import SSNLoss
    from PIL import Image
    from torchvision.transforms.v2.functional import to_dtype, to_image

    from anomaly.bench.peer_anomalib import layer_names, load_backbone

    torch.manual_seed(seed)
    backbone, size = args.peer_backbone, PEER_SIZES[args.peer_backbone]
    layers = layer_names(backbone, [2, 3])
    # anomalib would download ImageNet weights (pre_trained=True): build without, load ours.
    original = torch_model.TimmFeatureExtractor
    torch_model.TimmFeatureExtractor = functools.partial(TimmFeatureExtractor, pre_trained=False)
    try:
        model = torch_model.SupersimplenetModel(backbone=backbone, layers=layers)
    finally:
        torch_model.TimmFeatureExtractor = original
    digest = load_backbone(model.feature_extractor.feature_extractor, backbone)
    transform = Supersimplenet.configure_pre_processor(image_size=(size, size)).transform
    data = torch.stack([transform(read_image(str(p), as_tensor=True)) for p in paths])
    optimiser = torch.optim.AdamW([{"params": model.adaptor.parameters(), "lr": 0.0001},
                                   {"params": model.segdec.parameters(), "lr": 0.0002, "weight_decay": 0.00001}])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=[int(args.epochs * 0.8),
                                                                            int(args.epochs * 0.9)], gamma=0.4)
    loss_fn = SSNLoss()
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(data), generator=gen).split(args.batch_size):
            anomaly_map, anomaly_score, masks, labels = model(data[idx], labels=torch.zeros(len(idx)))
            loss = loss_fn(pred_map=anomaly_map, pred_score=anomaly_score, target_mask=masks, target_label=labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()  # the unsupervised module clips no gradient (norm_clip_val 0)
            steps += 1
        scheduler.step()
    model.eval()

    def prepared(data_bytes: bytes) -> torch.Tensor:
        image = Image.open(io.BytesIO(data_bytes)).convert("RGB")
        return transform(to_dtype(to_image(image), torch.float32, scale=True))[None]

    def score(data_bytes: bytes) -> tuple[float, np.ndarray]:
        with torch.inference_mode():
            out = model(prepared(data_bytes))
        return float(out.pred_score.reshape(-1)[0]), out.anomaly_map[0, 0].numpy()

    def floor(data_bytes: bytes) -> None:
        with torch.inference_mode():
            model.feature_extractor.feature_extractor(prepared(data_bytes))

    return score, floor, {"anomalib": anomalib.__version__, "steps": steps, "epochs_run": args.epochs,
                          "layers": layers, "backbone": backbone, "image_size": size, "backbone_sha256": digest}


def peer_label(row: dict[str, Any]) -> str:
    """The peer's name in the summary, with its backbone where not Lite0 and its epochs (each run its own row)."""
    epochs, backbone = peer_key(row["epochs"], row.get("backbone"))
    return PEER + ("" if backbone == "efficientnet_lite0" else "-" + backbone.rsplit("_", 1)[1]) + f"-{epochs}ep"


def peer_key(epochs: int, backbone: str | None) -> tuple[int, str]:
    """What tells the peer's runs apart beyond set, seed and test images (rows before the option lack a backbone)."""
    return int(epochs), backbone or "efficientnet_lite0"


# -- one run ------------------------------------------------------------------------------
def run_one(category: MVTecCategory, model: str, seed: int, args) -> dict[str, Any]:
    import cv2

    paths = training_subset(category, args.max_train)
    samples = test_subset(category, args.max_test)
    load_before = load_average()
    t0, c0 = time.perf_counter(), time.process_time()
    if model == PEER:
        score, floor, info = fit_peer(paths, args, seed)
    else:
        score, floor, info = fit_ours(model, paths, args, seed)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    scores, labels, ms, floor_ms, maps, masks = [], [], [], [], [], []
    for i, sample in enumerate(samples):
        data = sample.path.read_bytes()
        for turn in ((0, 1) if i % 2 == 0 else (1, 0)):  # alternate which runs first
            t = time.perf_counter()
            if turn == 0:
                value, amap = score(data)
                ms.append((time.perf_counter() - t) * 1e3)
            else:
                floor(data)
                floor_ms.append((time.perf_counter() - t) * 1e3)
        scores.append(value)
        labels.append(sample.label)
        if category.has_masks():
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            shape = image.shape[:2]
            amap = np.asarray(amap, dtype=np.float32)
            if amap.shape != shape:
                amap = cv2.resize(amap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
            mask = sample.read_mask(shape)
            maps.append(amap)
            masks.append(np.zeros(shape, bool) if mask is None else mask.astype(bool))
    pixel = {}
    if maps and any(m.any() for m in masks):
        metrics = PixelMetrics(quantile_thresholds(maps))
        for amap, mask in zip(maps, masks):
            metrics.add(amap, mask)
        pixel = {"pixel_auroc": metrics.auroc(), "aupro": metrics.aupro()}
    return {"set": category.name, "dataset": str(category.root), "model": model, "seed": seed,
            "n_train": len(paths), "n_test": len(samples), "epochs": args.epochs,
            "image_auroc": image_auroc(labels, scores), **pixel,
            "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu_s, 1),
            "score_ms_p50": round(float(np.percentile(ms, 50)), 2),
            "score_ms_p90": round(float(np.percentile(ms, 90)), 2),
            "floor_ms_p50": round(float(np.percentile(floor_ms, 50)), 2),
            "load_average": [load_before, load_average()], **info}


def train_time(category: MVTecCategory, n_goods: int, model: str = "discriminator") -> dict[str, Any]:
    """Wall time and peak memory of ``anomaly train`` of a variant on ``n_goods`` goods, in a child process."""
    import resource
    import subprocess
    import tempfile

    name, params = VARIANTS[model]
    options = [arg for k, v in params.items()
               for arg in ("--param", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    with tempfile.TemporaryDirectory() as store:
        cmd = [sys.executable, "-c", "from anomaly.cli.main import main; raise SystemExit(main())", "train",
               str(category.root), "--name", "timing", "--model", name, *options, "--max-images", str(n_goods),
               "--store", store, "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"anomaly train failed: {proc.stderr[-2000:]}")
    return {"set": category.name, "model": model, "n_goods": min(n_goods, len(category.train_good())),
            "wall_seconds": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "command": "anomaly train " + " ".join(cmd[4:-3]).replace(str(category.root), category.name) + " --quiet",
            "load_average": load_average(), "commit": git_commit(REPO)}


# -- summary ------------------------------------------------------------------------------
def summary(rows: list[dict[str, Any]], timing: list[dict[str, Any]] | None = None) -> str:
    """Markdown tables: accuracy per model and set (mean +- std over seeds) with the wins, costs, training flows.

    The peer's rows are told apart by backbone and epochs (``anomalib-supersimplenet-lite2-30ep``).
    """
    rows = [{**r, "model": peer_label(r)} if r["model"] == PEER else r for r in rows]
    sets = sorted({r["set"] for r in rows})
    peers = sorted({r["model"] for r in rows if r["model"].startswith(PEER)},
                   key=lambda m: int(m.rsplit("-", 1)[1][:-2]))
    models = [m for m in OURS if any(r["model"] == m for r in rows)] + peers

    def n_train(s: str) -> str:
        return "/".join(str(n) for n in sorted({r["n_train"] for r in rows if r["set"] == s}))

    def values(s: str, m: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["set"] == s and r["model"] == m and r.get(key) is not None]

    def cell(v: list[float]) -> str:
        return "–" if not v else f"{np.mean(v):.3f}" + (f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else "")

    mean = lambda s, m: float(np.mean(values(s, m, "image_auroc"))) if values(s, m, "image_auroc") else None  # noqa: E731

    def above(ours: str) -> str:
        """The sets where ``ours`` is above the better of PatchCore and PaDiM, and its record against the peers."""
        if ours in ("patchcore", "padim") or ours in peers:
            return "–"
        better = [s for s in sets if None not in (mean(s, ours), mean(s, "patchcore"), mean(s, "padim"))
                  and mean(s, ours) > max(mean(s, "patchcore"), mean(s, "padim"))]
        text = f"{len(better)}/{len(sets)}" + (f" ({', '.join(better)})" if better else "")
        for label in peers:
            played = [s for s in sets if mean(s, ours) is not None and mean(s, label) is not None]
            text += f"; {sum(mean(s, ours) > mean(s, label) for s in played)}/{len(played)} above {label}"
        return text

    lines = []
    for key, title in (("image_auroc", "Image AUROC"), ("aupro", "AUPRO (FPR <= 0.3)")):
        lines += [f"**{title}**, mean ± sample std over the seeds (seeds: how many per set):", "",
                  "| model | seeds | " + " | ".join(sets) + " | mean over sets |"
                  + (" above the better of PatchCore and PaDiM; above the peer |" if key == "image_auroc" else ""),
                  "|---|---|" + "---|" * (len(sets) + 1) + ("---|" if key == "image_auroc" else "")]
        for m in models:
            counts = sorted({len(values(s, m, key)) for s in sets if values(s, m, key)})
            if not counts:
                continue
            per_set = [np.mean(values(s, m, key)) for s in sets if values(s, m, key)]
            row = (f"| {m} | {'–'.join(map(str, counts))} | " + " | ".join(cell(values(s, m, key)) for s in sets)
                   + f" | {np.mean(per_set):.3f} ({len(per_set)} sets) |")
            lines.append(row + (f" {above(m)} |" if key == "image_auroc" else ""))
        lines.append("")
    for label in peers:
        peer = [r for r in rows if r["model"] == label]
        lines.append(f"- {label}: {peer[0]['epochs']} epochs, seed(s) "
                     f"{', '.join(sorted({str(r['seed']) for r in peer}))}, on {len({r['set'] for r in peer})} sets "
                     f"({', '.join(sorted({r['set'] for r in peer}))}; each row of runs.jsonl records its steps).")
    lines += ["", "**Costs** (medians over seeds), per set: scoring p50 per image end to end from the file's bytes "
              "over the model's backbone floor on the same images (decode, resize, normalise, backbone forward; "
              "timed alternately), then the two p50s in ms and the training wall seconds on the set's training "
              "subset (n train):", "",
              "| model | " + " | ".join(f"{s} ({n_train(s)})" for s in sets) + " |", "|---|" + "---|" * len(sets)]
    for m in models:
        cells = []
        for s in sets:
            sub = [r for r in rows if r["set"] == s and r["model"] == m]
            if not sub:
                cells.append("–")
                continue
            score, floor = np.median([r["score_ms_p50"] for r in sub]), np.median([r["floor_ms_p50"] for r in sub])
            cells.append(f"{score / floor:.2f} ({score:.1f} / {floor:.1f} ms, "
                         f"{np.median([r['train_seconds'] for r in sub]):.0f} s)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for t in timing or []:
        lines += ["", f"**The whole training flow** of {t.get('model', 'discriminator')} on {t['n_goods']} goods of "
                  f"{t['set']} (`{t['command']}`, its own process): {t['wall_seconds']:.0f} s wall, peak RSS "
                  f"{t['peak_rss_mb']:.0f} MB (load average {t['load_average']} at the end)"
                  + (f"; {t['note']}." if t.get("note") else ".")]
    return "\n".join(lines)


def read_timings(path: Path) -> list[dict[str, Any]]:
    """The training-flow timings in ``path`` (one per set and variant; an older file held a single one)."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--sets", nargs="*", help="category names to run (default: all found)")
    p.add_argument("--models", nargs="*", help=f"default: {' '.join(OURS)} (+ {PEER} with --peer)")
    p.add_argument("--peer", action="store_true", help=f"also run {PEER} (needs anomalib 2.7.0)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="the peer's epochs: the most the discriminator may run")
    p.add_argument("--batch-size", type=int, default=8, help="the peer's training batch")
    p.add_argument("--peer-backbone", default="efficientnet_lite0", choices=sorted(PEER_SIZES),
                   help="the peer's backbone (our weights), at the input size it was trained at")
    p.add_argument("--max-train", type=int, default=100)
    p.add_argument("--max-test", type=int, default=150)
    p.add_argument("--out", type=Path, default=OUT / "runs.jsonl", help="JSON-lines results file (appended)")
    p.add_argument("--summary", action="store_true", help="only write the summary of the results file")
    p.add_argument("--train-time", metavar="SET", help="time the whole training flow on 200 goods of SET")
    p.add_argument("--train-model", default="discriminator", choices=[m for m in VARIANTS if m.startswith("disc")],
                   help="the variant --train-time trains")
    args = p.parse_args(argv)

    models = args.models or [*OURS, *([PEER] if args.peer else [])]
    if PEER in models and not args.peer:
        p.error(f"{PEER} needs --peer")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    timing_path = args.out.parent / "train_time.json"
    if args.train_time:
        roots = [r for r in find_categories(args.datasets) if r.name == args.train_time]
        if not roots:
            p.error(f"no set named {args.train_time} under {args.datasets}")
        timings = [t for t in read_timings(timing_path)
                   if (t["set"], t.get("model", "discriminator")) != (args.train_time, args.train_model)]
        timings.append(train_time(MVTecCategory(roots[0]), 200, args.train_model))
        timing_path.write_text(json.dumps(timings, indent=2) + "\n")
    elif not args.summary:
        done = {(r["dataset"], r["model"], r["seed"], r["n_test"],
                 peer_key(r["epochs"], r.get("backbone")) if r["model"] == PEER else None)
                for r in read_rows([args.out])}
        this_peer = peer_key(args.epochs, args.peer_backbone)
        categories = [MVTecCategory(root) for root in find_categories(args.datasets)]
        if args.sets:
            categories = [c for c in categories if c.name in set(args.sets)]
        for seed in args.seeds:  # every set once before the next seed: partial runs cover all sets
            for category in categories:
                n_test = len(test_subset(category, args.max_test))
                for model in models:
                    if (str(category.root), model, seed, n_test, this_peer if model == PEER else None) in done:
                        continue
                    row = run_one(category, model, seed, args)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps({k: row.get(k) for k in ("set", "model", "seed", "image_auroc", "aupro",
                                                              "train_seconds", "score_ms_p50", "floor_ms_p50")}),
                          flush=True)
    rows = read_rows([args.out])
    doc = {"command": "python benchmarks/discriminator.py", "rows": len(rows),
           "provenance": {**run_provenance(), "commit": git_commit(REPO)}}
    (args.out.parent / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = summary(rows, read_timings(timing_path))
    (args.out.parent / "summary.md").write_text(text + "\n")
    print(text)
    write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
