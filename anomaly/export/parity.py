"""Does an export judge parts as its bundle does? Scores, maps and verdicts compared image by image.

The check the export command runs before it writes anything, and the benchmark runs over
the dev sets: both models judge the same images through :func:`anomaly.inspect.inspect`
(the one verdict path), and the figures are compared against fixed tolerances.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from anomaly.errors import AnomalyError
from anomaly.inspect import inspect

#: Image scores must agree to this relative difference (relative to the larger of the score and
#: the calibration's good-score standard deviation: a logit near 0, as the discriminator's,
#: has no meaningful relative difference of its own),
SCORE_RTOL = 1e-4
#: maps to this share of the range of the bundle's map values over the images compared
#: (one good part's map can be flat: PaDiM puts each of its own training goods at almost the
#: same Mahalanobis distance everywhere, a range of 0.02 on values of 5, where one image's
#: own range would turn float rounding into a failure),
MAP_TOL = 1e-3
#: and every verdict must be the same.


@dataclass
class Parity:
    """Figures of one comparison.

    Attributes:
        n_images: Images compared.
        max_score_rel_diff: Largest ``|s_export - s_bundle| / max(|s_bundle|, good-score std)``.
        max_map_diff: Largest ``max |m_export - m_bundle|`` over the images, divided by the range of
            the bundle's map values over all of them.
        max_map_diff_own_range: The same divided by each image's own map range (reported only).
        verdict_mismatches: Images whose verdicts differ (or that one model refuses and the other judges).
        refused: Images both models refuse with the same error (an input the model does not
            accept, e.g. a colour image for a model of gray goods).
        region_count_mismatches: Images whose number of regions differs (reported, not a
            condition: a region at the pixel threshold may split at float rounding).
        mismatched: Indices of the images with another verdict.
    """

    n_images: int = 0
    max_score_rel_diff: float = 0.0
    max_map_diff: float = 0.0
    max_map_diff_own_range: float = 0.0
    verdict_mismatches: int = 0
    refused: int = 0
    region_count_mismatches: int = 0
    mismatched: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.max_score_rel_diff <= SCORE_RTOL and self.max_map_diff <= MAP_TOL
                and self.verdict_mismatches == 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok,
                "tolerances": {"score_rel": SCORE_RTOL, "map_of_range": MAP_TOL, "verdict_mismatches": 0}}

    def summary(self) -> str:
        return (f"{self.n_images} images: max score difference {self.max_score_rel_diff:.2e} relative "
                f"(tolerance {SCORE_RTOL:g}), max map difference {self.max_map_diff:.2e} of the maps' range "
                f"(tolerance {MAP_TOL:g}), {self.verdict_mismatches} verdict mismatches")


def _one(reference, candidate, image: np.ndarray) -> tuple[Any, Any]:
    """Both judgements of one image, each an :class:`~anomaly.inspect.Inspection` or, where that
    model refuses the image, the error's code."""
    out = []
    for model in (reference, candidate):
        try:
            out.append(inspect(model, [image])[0])
        except AnomalyError as exc:
            out.append(exc.code)
    return out[0], out[1]


def compare(reference, candidate, images: Sequence[np.ndarray], *, batch: int = 8) -> Parity:
    """Judge ``images`` with both models and compare.

    Args:
        reference: The bundle (anything :func:`~anomaly.inspect.inspect` takes).
        candidate: The export (:class:`~anomaly.runtime.deployed.DeployedModel`).
        images: Decoded images, ``(H, W)`` or ``(H, W, 3)`` each.
        batch: Images per call.
    """
    out = Parity()
    worst, low, high = 0.0, np.inf, -np.inf
    goods = reference.calibration.good_scores
    scale = max(float(np.std(goods)) if len(goods) > 1 else 0.0, 1e-12)
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        try:
            pairs = list(zip(inspect(reference, chunk), inspect(candidate, chunk)))
        except AnomalyError:
            pairs = [_one(reference, candidate, image) for image in chunk]
        for i, (a, b) in enumerate(pairs):
            out.n_images += 1
            if isinstance(a, str) or isinstance(b, str):
                refused_alike = a == b  # the same refusal from both
                out.refused += int(refused_alike)
                if not refused_alike:
                    out.verdict_mismatches += 1
                    out.mismatched.append(start + i)
                continue
            out.max_score_rel_diff = max(out.max_score_rel_diff, abs(b.score - a.score) / max(abs(a.score), scale))
            gap = float(np.abs(b.map - a.map).max())
            worst, low, high = max(worst, gap), min(low, float(a.map.min())), max(high, float(a.map.max()))
            out.max_map_diff_own_range = max(out.max_map_diff_own_range,
                                             gap / max(float(a.map.max() - a.map.min()), 1e-12))
            if a.verdict != b.verdict:
                out.verdict_mismatches += 1
                out.mismatched.append(start + i)
            out.region_count_mismatches += int(len(a.regions) != len(b.regions))
    if out.n_images:
        out.max_map_diff = worst / max(high - low, 1e-12)
    return out
