"""Onboarding on every set, then every candidate measured on the test split it never saw.

For each MVTec-layout category under ``--datasets``:

1. ``anomaly.onboarding.onboard`` on ``train/good`` alone (at most ``--max-goods``, a seeded
   choice), in a process of its own: wall time, peak RSS, the candidate it chose and why.
2. Every candidate it offered, fitted and calibrated on the same goods and measured on
   ``test/`` as ``anomaly eval`` measures (image AUROC, recall at the good-only ``t_ng``,
   false rejects on ``test/good``): where the chosen one stands against the best candidate
   (chosen with test labels, which onboarding never sees) and against the defaults
   (PatchCore, 256 stretched).

    python benchmarks/onboard.py [--datasets ../shared/datasets] [--sets grid ball_screw]
                                 [--budget-min 10] [--max-goods 200] [--out benchmarks/results/onboard]

Writes one JSON per set and ``summary.md`` in ``--out``, then rewrites benchmarks/REPORT.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from anomaly.datasets import MVTecCategory, find_categories  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

DEFAULTS = "patchcore-256"


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``), in MB.

    Not ``getrusage``: on Linux a child's ``ru_maxrss`` keeps the high-water mark of the
    parent image it was forked from, so a driver that has measured candidates in-process
    would lend the child its own size (a first run reported 4,431 MB for three sets).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def onboard_one(category: Path, budget_min: float, max_goods: int, seed: int) -> dict:
    """Onboarding alone (run in a child process, so its peak RSS is its own)."""
    import tempfile

    import numpy as np

    from anomaly.goods import names_of
    from anomaly.onboarding import onboard
    from anomaly.store import ModelStore

    paths = MVTecCategory(category).train_good()
    if len(paths) > max_goods:
        paths = [paths[i] for i in np.sort(np.random.default_rng(seed).choice(len(paths), max_goods, replace=False))]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        done = onboard(ModelStore(scratch), "onboard", paths, names=names_of(paths), budget_seconds=60 * budget_min,
                       seed=seed)
    return {"goods": len(paths), "wall_seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": peak_rss_mb(),
            "record": done.record}


def measure(category: Path, candidate: dict, max_goods: int, seed: int) -> dict:
    """A candidate fitted on the goods onboarding saw, measured on the test split."""
    from anomaly.evaluate import evaluate
    from anomaly.training import TrainingOptions

    report = evaluate(category, candidate["detector"], params=candidate["params"],
                      options=TrainingOptions(detection=False, seed=seed, max_images=max_goods))
    good_only = report["good_only"]
    return {"image_auroc": report["image_auroc"], "recall": good_only["recall"]["rate"],
            "frr_test_good": good_only["frr_test_good"]["rate"], "frr_ci95": good_only["frr_test_good"]["ci95"],
            "n_test": report["n_test"], "latency_ms_p50": report["latency_ms"]["p50"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--sets", nargs="*", help="only categories whose name contains one of these")
    parser.add_argument("--budget-min", type=float, default=10.0)
    parser.add_argument("--max-goods", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "onboard")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child: onboard this category, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(onboard_one(args.one, args.budget_min, args.max_goods, args.seed)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for category in find_categories(args.datasets):
        label = f"{category.parent.name}/{category.name}"
        if args.sets and not any(s in label for s in args.sets):
            continue
        print(f"# {label}: onboarding", file=sys.stderr, flush=True)
        child = subprocess.run([sys.executable, __file__, "--one", str(category), "--budget-min", str(args.budget_min),
                                "--max-goods", str(args.max_goods), "--seed", str(args.seed)],
                               check=True, capture_output=True, text=True)
        found = json.loads(child.stdout.strip().splitlines()[-1])
        tested = {}
        for candidate in found["record"]["candidates"]:
            print(f"# {label}: measuring {candidate['name']} on test/", file=sys.stderr, flush=True)
            try:
                tested[candidate["name"]] = measure(category, candidate, args.max_goods, args.seed)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot be fitted is reported, not fatal
                tested[candidate["name"]] = {"error": f"{type(exc).__name__}: {exc}"}
        doc = {"set": label, **found, "test": tested, "defaults": DEFAULTS,
               "provenance": {**run_provenance(), "commit": git_commit(REPO)}}
        (args.out / f"{category.parent.name}__{category.name}.json").write_text(json.dumps(doc, indent=2))
        rows.append(doc)
    (args.out / "summary.md").write_text(summary(rows))
    print(summary(rows))
    write_report()
    return 0


def summary(rows: list[dict]) -> str:
    """One line per set: chosen against the best candidate (by test labels) and the defaults."""
    lines = ["| set | goods | chosen | chosen AUROC | best candidate (test) | best AUROC | defaults AUROC | "
             "chosen recall / FRR | defaults recall / FRR | onboarding s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for doc in rows:
        ok = {k: v for k, v in doc["test"].items() if v.get("image_auroc") is not None}
        chosen, default = doc["test"].get(doc["record"]["winner"], {}), doc["test"].get(doc["defaults"], {})
        best = max(ok, key=lambda k: ok[k]["image_auroc"]) if ok else None

        def f(x, d=3):
            return "n/a" if x is None else f"{x:.{d}f}"

        def rates(m):
            return f"{f(m.get('recall'), 2)} / {f(m.get('frr_test_good'), 3)}"

        lines.append(f"| {doc['set']} | {doc['goods']} | {doc['record']['winner']} | {f(chosen.get('image_auroc'))} | "
                     f"{best} | {f(ok[best]['image_auroc']) if best else 'n/a'} | {f(default.get('image_auroc'))} | "
                     f"{rates(chosen)} | {rates(default)} | {doc['wall_seconds']} | {doc['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
