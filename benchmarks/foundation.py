"""Foundation figures: `anomaly eval` on every set in ../shared/datasets, with where and how each ran.

Runs PatchCore and PaDiM with their defaults (EfficientNet-Lite0, 256 px) on every
MVTec-layout category, each as its own `anomaly eval` process (so peak RSS and timings are
per run), and writes the JSON reports plus a Markdown table.

    python benchmarks/foundation.py [--datasets ../shared/datasets] [--models patchcore padim]
                                    [--out benchmarks/results/foundation] [--param KEY=VALUE --tag NAME]

Each report gains a ``provenance`` entry (start time, command, machine, package versions, commit);
benchmarks/REPORT.md is rewritten from the reports at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from anomaly.bench.provenance import git_commit, run_provenance  # noqa: E402
from anomaly.datasets import find_categories  # noqa: E402
from report import write_report  # noqa: E402  (benchmarks/report.py: this script's folder is on sys.path)

COLUMNS = [
    ("set", lambda r: f"{Path(r['dataset']).parent.name}/{r['category']}"),
    ("model", lambda r: r["detector"]),
    ("train", lambda r: r["n_train"]),
    ("test", lambda r: r["n_test"]),
    ("image AUROC", lambda r: _f(r["image_auroc"])),
    ("pixel AUROC", lambda r: _f(r["pixel_auroc"])),
    ("AUPRO", lambda r: _f(r["aupro"])),
    ("F1 max", lambda r: _f(r["f1_max_image"])),
    ("fit s", lambda r: f"{r['fit_seconds']:.1f}"),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.1f}"),
    ("p90 ms", lambda r: f"{r['latency_ms']['p90']:.1f}"),
    ("decode ms", lambda r: f"{r['decode_ms_p50']:.1f}"),
    ("backbone ms", lambda r: _f(r.get("backbone_ms_p50"), 1)),
    ("p50 / floor", lambda r: _f(r.get("latency_over_floor"), 2)),
    ("inspect p50 ms", lambda r: _f((r.get("inspect_latency_ms") or {}).get("p50"), 1)),
    ("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}"),
]


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(reports: list[dict]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = ["| " + " | ".join(str(fn(r)) for _, fn in COLUMNS) + " |" for r in reports]
    return "\n".join([head, rule, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--models", nargs="+", default=["patchcore", "padim"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "foundation")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE passed to every eval")
    parser.add_argument("--tag", default="", help="appended to each report's file name (e.g. the option measured)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    anomaly = Path(sys.executable).with_name("anomaly")
    for category in find_categories(args.datasets):
        for model in args.models:
            out = args.out / f"{category.parent.name}__{category.name}__{model}{'__' + args.tag if args.tag else ''}.json"
            cmd = [str(anomaly), "eval", str(category), "--model", model, "--json", str(out), "--quiet"]
            for p in args.param:
                cmd += ["--param", p]
            print("$", " ".join(cmd), flush=True)
            provenance = {**run_provenance(), "command": cmd[1:], "commit": git_commit(REPO)}
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ)
            report = json.loads(out.read_text())
            report["provenance"] = provenance
            out.write_text(json.dumps(report, indent=2) + "\n")
            reports.append(report)
            print(markdown(reports[-1:]).splitlines()[-1], flush=True)
    print(markdown(reports))
    # The folder's table holds every report in it, from this run and earlier ones (other sets or models).
    stored = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    (args.out / "table.md").write_text(markdown([r for r in stored if "image_auroc" in r]) + "\n")
    write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
