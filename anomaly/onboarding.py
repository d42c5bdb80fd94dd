"""Onboarding without an expert: from a folder of good parts to a chosen model, with the evidence kept.

1. Look at the goods (:mod:`anomaly.goods`): size, shape, colour, spread, alignment.
2. Offer candidates (:func:`candidates`): PatchCore and PaDiM at the stretched default
   input; an aspect-preserving (letterbox) input for elongated parts; a higher-resolution
   input for large frames; the aligned classical models (``difference``, ``gmm``) when the
   goods register to one template.
3. Judge each candidate by good-only evidence (:func:`evaluate_candidate`): the goods are
   split (seeded) into a fit set and held-out goods; the candidate is fitted and calibrated
   (cross-fitted thresholds, :func:`anomaly.training.fit_calibrated`) on the fit set only;
   the held-out goods are scored clean, and again with synthetic defects of every kind and
   a ladder of sizes put into them (:mod:`anomaly.detection_estimate`). The figures: the
   share of synthetic defects at or above ``t_ng`` (detection), the AUROC of held-out goods
   against synthetic defects, the held-out goods' false-reject rate, fit time and latency.
   No defect sample and no test label is ever used.
4. Successive halving within the time budget (:func:`onboard`): every candidate on a
   seeded subset of the goods, the better half on all of them; ties (detection within
   the noise of the figures, at least :data:`TIE`; AUROC likewise) go to the faster model.
   A round after the first skips a candidate that its previous round's time says would not
   finish, with the winner's final fit, within the budget.
5. The winner is fitted on every good, calibrated, and stored as a new version
   (:func:`anomaly.training.store_model`) with the whole record in its manifest's notes
   (``notes.onboarding``): the survey, every candidate's figures per round, the reason;
   and with its report (:mod:`anomaly.onboarding_report`) in the bundle.

The backbone is EfficientNet-Lite0; the round-1 leader, when it is a backbone model, is
tried again with EfficientNet-Lite2 (wider and deeper, about twice the cost per pixel) on
the same goods, and keeps it only where it pays off by more than a tie.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from anomaly.errors import AlignmentError, AnomalyError, DatasetError
from anomaly.folds import score_or_refuse
from anomaly.goods import GoodsSurvey, names_of, read_goods, survey
from anomaly.imageio import ImageLike
from anomaly.metrics import image_auroc, rank_refused_above
from anomaly.progress import progress
from anomaly.store import ModelStore
from anomaly.tiling import Tiling
from anomaly.training import TrainedVersion, TrainingOptions, fit_calibrated, store_model

log = logging.getLogger(__name__)

#: Detection rates and AUROCs closer than this count as a tie (then the faster model wins),
#: and closer than one standard error of their difference too (:func:`tie_margin`): with a
#: few dozen held-out goods and synthetic defects, differences of a few points are noise.
TIE = 0.02
#: Goods in the first round of the search (every candidate); later rounds use them all.
FIRST_ROUND_GOODS = 40
#: Share of the goods held out of each candidate's fit (at least 2, at most 24).
HELD_OUT_SHARE = 0.25
MAX_HELD_OUT = 24
#: Below this many goods the model is provisional: its false-reject interval is wide.
PROVISIONAL_BELOW = 20
#: Longest input side an aspect-preserving candidate gets, as a multiple of the base size.
MAX_ELONGATION = 4
#: Cross-fitting folds of the candidates' fits (the winner is refitted with the options' folds).
SEARCH_FOLDS = 3
#: Frames whose long side is at least this many base sizes are offered tiling.
TILE_FROM = 3
#: Most tiles per frame of a tiled candidate: a larger frame is tiled at a reduced scale
#: (25 at native resolution cover a 1024 px square with 256 px tiles).
MAX_CANDIDATE_TILES = 36
#: The wider backbone tried on the round-1 leader.
WIDER_BACKBONE = "efficientnet_lite2"


def tile_scale_for(shape: tuple[int, int], tile: int, overlap: int, max_tiles: int = MAX_CANDIDATE_TILES) -> float:
    """The largest scale (at most 1: native resolution) at which a frame of ``shape`` needs at most ``max_tiles``."""
    scale = 1.0
    while len(Tiling((tile, tile), overlap, scale).layout(shape)) > max_tiles and scale > 0.1:
        scale = round(scale * 0.9, 3)
    return scale


@dataclass(frozen=True)
class Candidate:
    """One configuration onboarding may choose.

    Attributes:
        name: Short label (``patchcore-256``, ``padim-letterbox-256x640``, ``difference``).
        detector: Registry name.
        params: Hyper-parameters (the rest are the detector's defaults).
        why: Why it is offered, in words.
    """

    name: str
    detector: str
    params: dict[str, Any] = field(default_factory=dict)
    why: str = ""


@dataclass
class Figures:
    """Good-only evidence for one candidate in one round.

    Attributes:
        n_fit, n_held_out: Goods fitted on, goods held out.
        detection: Share of synthetic defects in held-out goods at or above ``t_ng``.
        flagged: The same at or above ``t_review``.
        auroc: Held-out goods against synthetic defects.
        held_out_frr: Share of held-out goods at or above ``t_ng``.
        fit_seconds: Fit and calibration on the fit set.
        latency_ms: Median time to score one held-out good.
        n_synthetic: Synthetic defects scored.
        seconds: The whole evaluation (fit, calibration, scoring), for the budget.
        error: Why the candidate could not be judged (then the figures are empty).
    """

    n_fit: int
    n_held_out: int
    detection: float | None = None
    flagged: float | None = None
    auroc: float | None = None
    held_out_frr: float | None = None
    fit_seconds: float | None = None
    latency_ms: float | None = None
    n_synthetic: int | None = None
    seconds: float | None = None
    error: str | None = None


def candidates(goods: GoodsSurvey, *, base_size: int = 256) -> list[Candidate]:
    """The configurations worth trying for these goods (see the module docstring)."""
    out = []
    for detector in ("patchcore", "padim"):
        out.append(Candidate(f"{detector}-{base_size}", detector, {"image_size": base_size},
                             "the default: the frame stretched to a square"))
    if goods.elongation >= 1.5:
        long = int(min(MAX_ELONGATION * base_size, round(base_size * goods.elongation / 32) * 32))
        wide = goods.aspect[0] * goods.aspect[1] >= 1.0
        size = [base_size, long] if wide else [long, base_size]
        for detector in ("patchcore", "padim"):
            out.append(Candidate(f"{detector}-letterbox-{size[0]}x{size[1]}", detector,
                                 {"image_size": size, "resize": "letterbox"},
                                 f"elongated parts ({goods.elongation:.1f} : 1) keep their shape"))
    if goods.short_side >= 3 * base_size:
        out.append(Candidate(f"patchcore-{2 * base_size}", "patchcore", {"image_size": 2 * base_size},
                             f"large frames (short side {goods.short_side} px): small defects keep more pixels"))
    if goods.long_side >= TILE_FROM * base_size:
        overlap = base_size // 8
        scale = tile_scale_for(goods.typical_shape, base_size, overlap)
        where = "native resolution" if scale == 1.0 else f"{scale:g} x native resolution"
        out.append(Candidate(f"patchcore-tiled-{base_size}" + ("" if scale == 1.0 else f"-x{scale:g}"), "patchcore",
                             {"image_size": base_size, "resize": "tile", "tile_overlap": overlap, "tile_scale": scale},
                             f"large frames (long side {goods.long_side} px): {base_size} px tiles at {where}, "
                             "defects keep their pixels"))
    if goods.aligned:
        for detector in ("difference", "gmm"):
            out.append(Candidate(detector, detector, {}, "the goods register to one template"))
    return out


def split_goods(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fit set and of the held-out goods (seeded; at least 2 of each where n >= 4)."""
    if n < 4:
        raise DatasetError(f"onboarding needs at least 4 good images (2 fitted, 2 held out per candidate), got {n}")
    k = int(min(MAX_HELD_OUT, max(2, round(HELD_OUT_SHARE * n))))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


def evaluate_candidate(candidate: Candidate, goods: Sequence[np.ndarray], *, target_frr: float,
                       seed: int) -> Figures:
    """Fit ``candidate`` on part of ``goods`` and measure it on the rest, clean and with synthetic defects.

    Args:
        candidate: The configuration.
        goods: Decoded good images.
        target_frr: The false-reject rate the thresholds are calibrated for.
        seed: Seed of the split, the folds and the synthetic defects.

    Returns:
        The figures; ``error`` set where the candidate cannot be fitted on these goods
        (for example goods a classical model cannot align).
    """
    from anomaly.detection_estimate import estimate_detection

    fit_idx, held_idx = split_goods(len(goods), seed)
    figures = Figures(n_fit=len(fit_idx), n_held_out=len(held_idx))
    fit_set, held = [goods[i] for i in fit_idx], [goods[i] for i in held_idx]
    options = TrainingOptions(target_frr=target_frr, n_folds=min(SEARCH_FOLDS, len(fit_set)), seed=seed,
                              detection=False)
    start = time.perf_counter()
    try:
        model = fit_calibrated(candidate.detector, fit_set, options, params=candidate.params, source="onboarding")
    except AnomalyError as exc:
        figures.error = f"{type(exc).__name__}: {exc}"
        return figures
    figures.fit_seconds = round(time.perf_counter() - start, 3)
    cal, detector = model.calibration, model.detector
    clean, _ = score_or_refuse(detector, held)
    clean_scores = np.array([np.inf if s is None else s for s in clean])
    latencies = []
    for image in held[:5]:
        t0 = time.perf_counter()
        try:
            detector.score([image])
        except AlignmentError:
            pass
        latencies.append((time.perf_counter() - t0) * 1e3)
    figures.latency_ms = round(float(np.median(latencies)), 2)
    # Other seeds than the fit's, so the defects are not the ones any other step drew.
    synthetic = estimate_detection(detector, held, cal, random_state=seed + 1000, per_cell=2)
    scores = np.array([np.inf if s[2] is None else s[2] for s in synthetic["samples"]], dtype=np.float64)
    figures.n_synthetic = int(len(scores))
    figures.seconds = round(time.perf_counter() - start, 3)
    figures.detection = round(float(np.mean(scores >= cal.t_ng)), 4)
    figures.flagged = round(float(np.mean(scores >= cal.t_review)), 4)
    figures.held_out_frr = round(float(np.mean(clean_scores >= cal.t_ng)), 4)
    # Refused parts (no score) rank above every scored one, as on the line (rejected).
    ranked = np.asarray(rank_refused_above([None if not np.isfinite(v) else float(v)
                                            for v in np.concatenate([clean_scores, scores])]))
    figures.auroc = round(float(image_auroc([0] * len(clean_scores) + [1] * len(scores), ranked)), 4)
    return figures


def _rate_se(f: Figures) -> float:
    """Standard error of a detection rate (binomial)."""
    n = max(int(f.n_synthetic or 0), 1)
    return math.sqrt(max(f.detection * (1.0 - f.detection), 0.0) / n)


def _auroc_se(f: Figures) -> float:
    """Standard error of an AUROC (Hanley and McNeil, Radiology 1982), goods against synthetic defects."""
    a, n_bad, n_good = float(f.auroc), max(int(f.n_synthetic or 0), 1), max(int(f.n_held_out or 0), 1)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    return math.sqrt(max(a * (1 - a) + (n_bad - 1) * (q1 - a * a) + (n_good - 1) * (q2 - a * a), 0.0)
                     / (n_bad * n_good))


def tie_margin(a: Figures, b: Figures, figure: str) -> float:
    """How far apart ``a`` and ``b`` may be on ``figure`` (``"detection"`` or ``"auroc"``) and still tie:
    one standard error of the difference, at least :data:`TIE`."""
    se = _rate_se if figure == "detection" else _auroc_se
    return max(TIE, math.sqrt(se(a) ** 2 + se(b) ** 2))


def rank(entries: list[tuple[Candidate, Figures]]) -> list[tuple[Candidate, Figures]]:
    """Best first: the highest detection; those tied with it (:func:`tie_margin`), by AUROC; within a tie, the fastest."""
    judged = [(c, f) for c, f in entries if f.error is None and f.detection is not None]
    if not judged:
        return []
    lead = max(judged, key=lambda e: (e[1].detection, e[1].auroc))[1]
    top = [(c, f) for c, f in judged if f.detection >= lead.detection - tie_margin(lead, f, "detection")]
    best = max(top, key=lambda e: e[1].auroc)[1]
    tied = sorted([(c, f) for c, f in top if f.auroc >= best.auroc - tie_margin(best, f, "auroc")],
                  key=lambda e: e[1].latency_ms)
    rest = sorted([e for e in judged if e not in tied], key=lambda e: (-e[1].detection, -e[1].auroc))
    return tied + rest


def _projected_seconds(history: list[dict[str, Any]], n_goods: int) -> float:
    """A candidate's evaluation time on ``n_goods``, from its last round (time grows with the goods)."""
    last = next((h for h in reversed(history) if h.get("seconds")), None)
    if last is None:
        return 0.0
    return float(last["seconds"]) * n_goods / max(int(last["n_fit"]) + int(last["n_held_out"]), 1)


def _final_fit_seconds(results: dict[str, list[dict[str, Any]]], alive: list[Candidate], n_goods: int) -> float:
    """Time to reserve for the winner's final fit on every good: the slowest alive candidate's fit, scaled."""
    out = 0.0
    for candidate in alive:
        last = next((h for h in reversed(results[candidate.name]) if h.get("fit_seconds")), None)
        if last is not None:
            out = max(out, float(last["fit_seconds"]) * n_goods / max(int(last["n_fit"]), 1))
    return out


@dataclass
class Onboarded:
    """What :func:`onboard` did.

    Attributes:
        version: The stored version.
        winner: The chosen candidate.
        record: The JSON record stored in the manifest's ``notes.onboarding``.
    """

    version: TrainedVersion
    winner: Candidate
    record: dict[str, Any]


def onboard(
    store: ModelStore,
    name: str,
    images: Sequence[ImageLike],
    *,
    names: Sequence[str] | None = None,
    target_frr: float = 0.01,
    budget_seconds: float = 600.0,
    seed: int = 0,
    base_size: int = 256,
    promote: bool | None = None,
    notes: dict[str, Any] | None = None,
) -> Onboarded:
    """Choose, fit, calibrate and store a model for a product from its good images alone.

    Args:
        store: The model store.
        name: Model name.
        images: Good images (paths, bytes or arrays), at least 4.
        names: Their names for messages (default: file names or indices).
        target_frr: Wanted share of good parts judged NG.
        budget_seconds: Time for the search; candidates that would not fit in it are skipped
            (the final fit of the winner comes on top).
        seed: Seed of every split, fold and synthetic defect (saved).
        base_size: Side of the default square input.
        promote: As :func:`anomaly.training.store_model`.
        notes: More facts for the manifest's notes (who, why), beside ``onboarding``.

    Raises:
        DatasetError: fewer than 4 goods, or goods that cannot be read (named).
        InvalidParameterError: a bad option (checked before any work).
        AnomalyError: no candidate could be fitted (each one's reason in the message).
    """
    start = time.perf_counter()
    options = TrainingOptions(target_frr=target_frr, seed=seed)  # checks the rate before any work
    split_goods(len(images), seed)  # at least 4 goods, said before any is decoded
    goods = read_goods(images, names)
    found = survey(goods, names)
    offered = candidates(found, base_size=base_size)
    log.info("onboarding %s: %d goods, %d candidates (%s)", name, len(goods), len(offered),
             ", ".join(c.name for c in offered))
    rounds: list[dict[str, Any]] = []
    subset = np.sort(np.random.default_rng(seed).permutation(len(goods))[:FIRST_ROUND_GOODS])
    plan = [subset] + ([np.arange(len(goods))] if len(goods) > FIRST_ROUND_GOODS else [])
    alive, results = list(offered), {c.name: [] for c in offered}
    ranked: list[tuple[Candidate, Figures]] = []
    for number, pick in enumerate(plan, start=1):
        entries = []
        for candidate in progress(alive, desc=f"onboarding round {number}"):
            elapsed = time.perf_counter() - start
            projected = _projected_seconds(results[candidate.name], len(pick))
            if rounds and elapsed + projected + _final_fit_seconds(results, alive, len(goods)) > budget_seconds:
                figures = Figures(n_fit=0, n_held_out=0, error=(
                    f"skipped: about {projected:.0f} s more on {len(pick)} goods, with the final fit, would not end "
                    f"within the {budget_seconds:.0f} s budget ({elapsed:.0f} s spent); a larger budget tries it"))
            else:
                figures = evaluate_candidate(candidate, [goods[i] for i in pick], target_frr=target_frr, seed=seed)
            results[candidate.name].append({"round": number, **asdict(figures)})
            entries.append((candidate, figures))
        round_ranked = rank(entries)
        if number == 1 and round_ranked and round_ranked[0][0].detector in ("patchcore", "padim") \
                and time.perf_counter() - start < budget_seconds:
            leader = round_ranked[0][0]
            wider = Candidate(f"{leader.name}-lite2", leader.detector, {**leader.params, "backbone": WIDER_BACKBONE},
                              f"{leader.name}, the round-1 leader, with the wider EfficientNet-Lite2 backbone")
            offered.append(wider)
            figures = evaluate_candidate(wider, [goods[i] for i in pick], target_frr=target_frr, seed=seed)
            results[wider.name] = [{"round": number, **asdict(figures)}]
            entries.append((wider, figures))
            round_ranked = rank(entries)
        if round_ranked:
            ranked = round_ranked
        rounds.append({"round": number, "goods": len(pick), "ranking": [c.name for c, _ in round_ranked]})
        alive = [c for c, _ in round_ranked[:max(2, math.ceil(len(round_ranked) / 2))]]
        if len(alive) < 2 or time.perf_counter() - start > budget_seconds:
            break
    if not ranked:
        reasons = "; ".join(f"{n}: {r[-1]['error']}" for n, r in results.items() if r)
        raise AnomalyError(f"no candidate could be fitted on these goods ({reasons})")
    winner, best = ranked[0]
    provisional = len(goods) < PROVISIONAL_BELOW
    why = (f"{winner.name}: {best.detection:.0%} of synthetic defects in held-out goods at t_ng, AUROC "
           f"{best.auroc:.3f} against them, {best.latency_ms:.0f} ms per part"
           + (f"; ahead of {ranked[1][0].name} ({ranked[1][1].detection:.0%}, {ranked[1][1].auroc:.3f})"
              if len(ranked) > 1 else ""))
    log.info("onboarding %s: chose %s", name, why)
    model = fit_calibrated(winner.detector, goods, options, params=winner.params, source="onboarding")
    record = {
        "survey": found.to_dict(), "target_frr": target_frr, "seed": seed, "budget_seconds": budget_seconds,
        "search_seconds": round(time.perf_counter() - start, 1), "rounds": rounds,
        "candidates": [{**asdict(c), "figures": results[c.name]} for c in offered],
        "winner": winner.name, "why": why, "provisional": provisional,
        "method": "each candidate fitted and calibrated (cross-fitted, good images only) on a seeded share of the "
                  "goods; the held-out goods scored clean and with synthetic defects of every kind and size; "
                  "successive halving; ties to the faster model",
    }
    if provisional:
        record["note"] = (f"{len(goods)} goods give wide intervals on the false-reject rate; onboard "
                          "again with more goods")
    from anomaly import onboarding_report

    start_report = time.perf_counter()
    files = onboarding_report.build(record, model.calibration, model.detector, goods, model.good_examples,
                                    seed=seed + 2000, name=name, names=list(names) if names else names_of(images))
    record["report"] = {"files": sorted(files), "seconds": round(time.perf_counter() - start_report, 1)}
    stored = store_model(store, name, model, {**(notes or {}), "onboarding": record}, promote=promote,
                         extra_files=files)
    return Onboarded(stored, winner, record)
