"""The onboarding report: why this model, what "normal" looks like to it, and what its thresholds cost.

Built from good images only when onboarding stores a version, and kept in the bundle:
``onboarding/report.json`` (the figures), the heat maps as PNGs and a self-contained
``onboarding/report.html`` (images inlined) that opens anywhere. The service shows the same
page (:func:`render_report` with its own image addresses) with the controls to move the
target false-reject rate and publish.

What it holds:

* the candidates table and why the winner won (the onboarding record);
* the histogram of the cross-fitted good scores with ``t_review`` and ``t_ng``, and the
  expected false-reject and REVIEW rates with their intervals;
* the synthetic-defect detection grid per kind and size (``ng`` and ``flagged``);
* heat maps of goods scored by models that had not seen them (lowest, median, highest), and
  of synthetic defects the model catches (the smallest caught) and misses (the largest
  missed), the defect outlined in green;
* the rate ladder: for each target false-reject rate on :data:`TARGET_LADDER`, the
  thresholds the stored good sample gives, the expected rates and the synthetic defects
  still caught, so the target can be moved before publishing without refitting.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from anomaly.calibration import Calibration
from anomaly.charts import calibration_svg
from anomaly.detectors.base import Detector
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError
from anomaly.imageio import encode_png
from anomaly.overlay import overlay

#: Target false-reject rates the report shows the cost of (the trained one is added).
TARGET_LADDER = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
#: Synthetic defects shown caught, and shown missed.
SHOWN_DEFECTS = 3
#: Long side of the heat maps in the report, in pixels.
SHOWN_SIDE = 384
#: Folder of the report in the bundle.
FOLDER = "onboarding"


def rate_ladder(cal: Calibration) -> list[dict[str, Any]]:
    """What each target false-reject rate would cost, from the stored good sample and synthetic defects.

    The review rate keeps its ratio to the target (as trained). No refit: the thresholds
    come from the same cross-fitted good scores (:func:`anomaly.thresholds.recalibrate`).

    Returns:
        One row per target, ascending: ``target_frr, t_review, t_ng, frr, frr_interval,
        review_fraction, synthetic_ng, synthetic_flagged, trained`` (``synthetic_*`` the
        share of every synthetic defect at or above the threshold, ``None`` without them).
    """
    from anomaly.thresholds import ThresholdChange, recalibrate

    if cal.t_ng is None or len(cal.good_scores) < 2 or not cal.target_frr:
        return []
    ratio = (cal.review_rate or 0.0) / cal.target_frr
    rows = []
    for target in sorted(set(TARGET_LADDER) | {float(cal.target_frr)}):
        review = min(ratio * target, 0.99 - target)
        moved = cal if target == cal.target_frr else recalibrate(
            cal, ThresholdChange(target_frr=target, review_rate=review))
        expected = moved.expected or {}
        samples = (moved.detection or {}).get("samples") or []
        scores = np.array([np.inf if s[2] is None else s[2] for s in samples], dtype=np.float64)
        rows.append({
            "target_frr": target, "review_rate": review, "t_review": moved.t_review, "t_ng": moved.t_ng,
            "frr": expected.get("frr"), "frr_interval": expected.get("frr_interval"),
            "review_fraction": expected.get("review_fraction"),
            "synthetic_ng": float(np.mean(scores >= moved.t_ng)) if scores.size else None,
            "synthetic_flagged": float(np.mean(scores >= moved.t_review)) if scores.size else None,
            "trained": target == cal.target_frr,
        })
    return rows


def _shown(image: np.ndarray) -> np.ndarray:
    """An overlay shrunk to :data:`SHOWN_SIDE` on its long side (never enlarged)."""
    h, w = image.shape[:2]
    factor = SHOWN_SIDE / max(h, w)
    if factor >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def _picture(image: np.ndarray, amap: np.ndarray, cal: Calibration, score: float | None,
             mask: np.ndarray | None = None) -> bytes:
    if amap.shape != image.shape[:2]:  # out-of-fold maps may be kept shrunk
        amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    low, high, contour = cal.colour_scale(amap)
    label = "refused" if score is None else f"{cal.verdict(score)} {cal.calibrated(score):.2f}"
    out = overlay(image, amap, vmin=low, vmax=high, label=label, contour_at=contour)
    if mask is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 220, 0), max(1, min(out.shape[:2]) // 200))
    return encode_png(_shown(out))


def evidence(detector: Detector, goods: Sequence[np.ndarray], cal: Calibration,
             good_examples: dict[int, tuple[float, np.ndarray]], *, seed: int,
             names: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Heat maps of goods and of synthetic defects caught and missed.

    Args:
        detector: The stored model (fitted on every good).
        goods: The decoded goods, ``(H, W[, 3])`` each.
        cal: Its calibration.
        good_examples: Out-of-fold scores and maps of a few goods by index
            (:attr:`anomaly.training.TrainedModel.good_examples`).
        seed: Seed of the synthetic defects (kinds cycled, sizes from the detection ladder).
        names: The goods' names, for the captions.

    Returns:
        The captions (``file, group, caption``) and the PNG bytes by file name.
    """
    from anomaly.detection_estimate import default_sizes
    from anomaly.synthesis import KINDS, DefectSpec, make_defect

    shown: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for rank, (index, (score, amap)) in enumerate(sorted(good_examples.items(), key=lambda e: e[1][0])):
        name = f"good-{rank}.png"
        files[name] = _picture(goods[index], amap, cal, score)
        who = names[index] if names else f"good #{index}"
        shown.append({"file": name, "group": "goods",
                      "caption": f"{who}: score {score:.4g}, from a model that had not seen it"})
    rng = np.random.default_rng(seed)
    sizes = (cal.detection or {}).get("sizes_px") or default_sizes(min(min(g.shape[:2]) for g in goods))
    contrast = float((cal.detection or {}).get("contrast") or 0.2)
    made = []
    for size in sizes:
        for kind in KINDS:
            base = goods[int(rng.integers(len(goods)))]
            try:
                bad, mask = make_defect(base, DefectSpec(kind, float(size), contrast),
                                        random_state=int(rng.integers(2**31)))
            except (InvalidImageError, InvalidParameterError, cv2.error):
                continue  # a kind that cannot change this image, as in the detection estimate
            made.append((kind, float(size), bad, mask))
    results = []
    for kind, size, bad, mask in made:
        try:
            result = detector.score([bad])
            results.append((kind, size, bad, mask, float(result.scores[0]), result.maps[0]))
        except AlignmentError:
            continue  # refused on the line (ALIGNMENT_FAILED): neither caught by a score nor missed
    caught = sorted([r for r in results if r[4] >= cal.t_ng], key=lambda r: r[1])[:SHOWN_DEFECTS]
    missed = sorted([r for r in results if r[4] < cal.t_ng], key=lambda r: -r[1])[:SHOWN_DEFECTS]
    for group, rows in (("caught", caught), ("missed", missed)):
        for i, (kind, size, bad, mask, score, amap) in enumerate(rows):
            name = f"{group}-{i}.png"
            files[name] = _picture(bad, amap, cal, score, mask)
            shown.append({"file": name, "group": group,
                          "caption": f"synthetic {kind}, {size:g} px, score {score:.4g} "
                                     f"({'at or above' if group == 'caught' else 'below'} t_ng {cal.t_ng:.4g})"})
    return shown, files


def build(record: dict[str, Any], cal: Calibration, detector: Detector, goods: Sequence[np.ndarray],
          good_examples: dict[int, tuple[float, np.ndarray]], *, seed: int, name: str,
          names: Sequence[str] | None = None) -> dict[str, bytes]:
    """The report's files for the bundle, by path relative to it (under :data:`FOLDER`)."""
    shown, pictures = evidence(detector, goods, cal, good_examples, seed=seed, names=names)
    report = {"name": name, "record": record, "ladder": rate_ladder(cal), "pictures": shown,
              "calibration": {k: v for k, v in cal.to_dict().items() if k != "detection"},
              "detection": {k: v for k, v in (cal.detection or {}).items() if k != "samples"}}
    files = {f"{FOLDER}/{file}": data for file, data in pictures.items()}
    files[f"{FOLDER}/report.json"] = json.dumps(report, indent=1, default=float).encode()
    inline = {file: "data:image/png;base64," + base64.b64encode(data).decode() for file, data in pictures.items()}
    files[f"{FOLDER}/report.html"] = render_report(report, inline.__getitem__).encode()
    return files


def load_report(bundle_dir: str | Path) -> dict[str, Any] | None:
    """The report stored in a bundle, or ``None`` (a version not made by onboarding)."""
    path = Path(bundle_dir) / FOLDER / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def picture_path(bundle_dir: str | Path, report: dict[str, Any], file: str) -> Path | None:
    """The path of one of the report's pictures, or ``None`` when the report does not list it."""
    listed = {p["file"] for p in report.get("pictures") or []}
    return Path(bundle_dir) / FOLDER / file if file in listed else None


def render_report(report: dict[str, Any], image_src: Callable[[str], str], *, actions: str = "",
                  version: int | None = None) -> str:
    """The report as HTML.

    Args:
        report: From :func:`build` (``report.json``).
        image_src: The address of a picture by file name (a data URI in the file, a URL in the service).
        actions: HTML the service adds (the form that writes the version at the chosen rate).
        version: The version shown, when known.
    """
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["html"]))
    cal = Calibration.from_manifest({**report["calibration"], "detection": report.get("detection")})
    return env.get_template("onboarding_report.html").render(
        report=report, record=report["record"], cal=cal, ladder=report["ladder"], pictures=report["pictures"],
        detection=report.get("detection") or {}, chart=Markup(calibration_svg(cal)), image_src=image_src,
        actions=Markup(actions), version=version, ladder_json=Markup(json.dumps(report["ladder"], default=float)))
