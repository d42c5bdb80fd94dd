"""Compare two runs of `anomaly eval` image by image: the same images, the same raw scores?

For a restructure that must not change behaviour: run ``benchmarks/foundation.py`` before
and after (each report lists ``image_scores``), then

    python benchmarks/compare_scores.py BEFORE_DIR AFTER_DIR [--rtol 0]

Prints, per report found in both folders, the number of images, how many scores are
identical to the bit, the largest relative difference over the images scored in both runs,
the images refused (no score: not aligned, or not accepted) in each run, and whether the
image AUROC and the thresholds agree; exits 1 when a score differs by more than ``--rtol``
or the refusals differ, so that every change is seen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def compare(before: dict, after: dict) -> dict:
    """Per-image comparison of two eval reports of the same set and model."""
    a = {row["image"]: row["score"] for row in before.get("image_scores") or []}
    b = {row["image"]: row["score"] for row in after.get("image_scores") or []}
    common = sorted(set(a) & set(b))
    identical, worst = 0, 0.0
    for image in common:
        x, y = a[image], b[image]
        if x == y:
            identical += 1
        elif x is not None and y is not None:
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-12))
    return {
        "images": len(common), "only_before": len(set(a) - set(b)), "only_after": len(set(b) - set(a)),
        "identical": identical, "max_relative_difference": worst,
        "refused": ([i for i in common if a[i] is None], [i for i in common if b[i] is None]),
        "image_auroc": (before.get("image_auroc"), after.get("image_auroc")),
        "thresholds_equal": all(before["thresholds"].get(k) == after["thresholds"].get(k)
                                for k in ("t_review", "t_ng", "pixel_threshold")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0, help="largest relative score difference accepted")
    args = parser.parse_args()
    failed = False
    print("| report | images | identical | max rel. diff | refused before / after | image AUROC before / after "
          "| thresholds equal |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(args.before.glob("*.json")):
        other = args.after / path.name
        if not other.is_file():
            continue
        before, after = json.loads(path.read_text()), json.loads(other.read_text())
        if "image_scores" not in before or "image_scores" not in after:
            print(f"| {path.stem} | no image_scores in one of the reports | | | | |")
            failed = True
            continue
        row = compare(before, after)
        refused_before, refused_after = row["refused"]
        bad = (row["max_relative_difference"] > args.rtol or row["only_before"] or row["only_after"]
               or refused_before != refused_after)
        failed |= bool(bad) or not row["thresholds_equal"]
        auroc = " / ".join("n/a" if v is None else f"{v:.4f}" for v in row["image_auroc"])
        newly = sorted(set(refused_after) - set(refused_before))
        refused = f"{len(refused_before)} / {len(refused_after)}" + (f" (new: {', '.join(newly)})" if newly else "")
        print(f"| {path.stem} | {row['images']} | {row['identical']} | {row['max_relative_difference']:.2e} | "
              f"{refused} | {auroc} | {row['thresholds_equal']} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
