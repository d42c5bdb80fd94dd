"""Promotion gates: a version goes into production only if it still catches what the line confirmed.

The regression set of a model is every part of it (any version) that a person confirmed
defective: a **miss** (judged GOOD, found defective) and a **confirmed** reject (judged
REVIEW or NG, confirmed defective), whose image the archive kept. A candidate version
passes its gate when

1. it flags every part of the regression set (REVIEW or NG: none judged GOOD), and
2. its expected false-reject rate at ``t_ng`` (the calibration's tail model) is at most the
   target it was calibrated for, when the calibration has one (thresholds moved by hand can
   break it).

Every gate is stored (:class:`~service.db.PromotionGate`: passed or not, forced or not,
the figures, who, when) and shown on the model's page. A refused promotion answers 409
``gate_failed`` with the reason; ``force`` promotes anyway and is recorded as forced.

A passed part whose image was not archived (``ARCHIVE=rejected`` keeps no image of a GOOD
part) cannot join the set; the gate counts such parts as ``without_image``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from anomaly.errors import AnomalyError
from service.archive import Archive
from service.db import Database, FeedbackRecord, InspectionRecord, PromotionGate, utcnow
from service.errors import ConflictError

log = logging.getLogger(__name__)

#: Feedback kinds that put a part in the regression set.
REGRESSION_KINDS = ("miss", "confirmed")


class GateFailedError(ConflictError):
    """A version failed its promotion gate (409), saying which parts it missed or which rate it broke."""

    code = "gate_failed"


@dataclass
class GateResult:
    """The figures of one gate.

    Attributes:
        passed: Both conditions hold.
        regression_parts: Parts in the regression set that were judged.
        missed: Inspection ids of regression parts the candidate judged GOOD.
        without_image: Confirmed parts left out for want of an archived image.
        expected_frr: The candidate's expected false-reject rate at ``t_ng``.
        target_frr: The rate its calibration was set for (None: not checked).
        reasons: Why it failed, in words (empty when passed).
    """

    passed: bool = True
    regression_parts: int = 0
    missed: list[str] = field(default_factory=list)
    without_image: int = 0
    expected_frr: float | None = None
    target_frr: float | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def regression_set(db: Database, archive: Archive, name: str) -> tuple[list[tuple[str, bytes]], int]:
    """``(inspection id, image bytes)`` of the model's confirmed defective parts, and how many lack an image."""
    stmt = (sa.select(InspectionRecord.id, InspectionRecord.archive_path).join(FeedbackRecord)
            .where(InspectionRecord.model_name == name, FeedbackRecord.kind.in_(REGRESSION_KINDS))
            .distinct().order_by(InspectionRecord.id))
    parts, missing = [], 0
    with db.session() as session:
        rows = session.execute(stmt).all()
    for inspection_id, rel in rows:
        path = archive.file(rel, "image") if rel else None
        if path is None:
            missing += 1
            continue
        parts.append((inspection_id, path.read_bytes()))
    return parts, missing


def run_gate(db: Database, archive: Archive, name: str, bundle: Any) -> GateResult:
    """Judge the model's regression set with ``bundle`` and check its expected false-reject rate."""
    from anomaly.inspect import inspect

    parts, missing = regression_set(db, archive, name)
    result = GateResult(without_image=missing)
    for inspection_id, data in parts:
        try:
            verdict = inspect(bundle, [data])[0].verdict
        except AnomalyError as exc:  # a part the candidate refuses (another input geometry) is not caught
            verdict = f"refused: {exc.code}"
        result.regression_parts += 1
        if verdict == "GOOD" or verdict.startswith("refused"):
            result.missed.append(inspection_id)
    cal = bundle.calibration
    result.expected_frr = (cal.expected or {}).get("frr")
    result.target_frr = cal.target_frr
    if result.missed:
        result.reasons.append(f"misses {len(result.missed)} of the {result.regression_parts} confirmed defective "
                              f"part(s): {', '.join(result.missed[:5])}{' ...' if len(result.missed) > 5 else ''}")
    if result.expected_frr is not None and result.target_frr is not None \
            and result.expected_frr > result.target_frr * (1 + 1e-9):
        result.reasons.append(f"expected false-reject rate {result.expected_frr:.4f} is above the target "
                              f"{result.target_frr:.4f}")
    result.passed = not result.reasons
    return result


def record_gate(db: Database, name: str, version: int, result: GateResult, *, promoted: bool, forced: bool,
                by: str) -> None:
    """Store a gate with its version (shown on the model's page and by the API)."""
    with db.session() as session:
        session.add(PromotionGate(model_name=name, model_version=version, passed=result.passed, forced=forced,
                                  promoted=promoted, figures=result.to_dict(), by=by[:64], at=utcnow()))


def gated_promote(db: Database, archive: Archive, store: Any, name: str, version: int, bundle: Any, *,
                  force: bool, by: str) -> GateResult:
    """Run the gate, promote when it passes (or when forced), and record it either way.

    Raises:
        GateFailedError: the gate failed and ``force`` is off (nothing promoted).
    """
    result = run_gate(db, archive, name, bundle)
    promote = result.passed or force
    if promote:
        store.promote(name, version)
    record_gate(db, name, version, result, promoted=promote, forced=force and not result.passed, by=by)
    if not promote:
        log.warning("model %s version %s refused promotion: %s", name, version, "; ".join(result.reasons))
        raise GateFailedError(f"version {version} of {name!r} was not promoted: {'; '.join(result.reasons)} "
                              "(force to promote anyway; it is recorded)")
    if force and not result.passed:
        log.warning("model %s version %s promoted by force by %s despite: %s", name, version, by,
                     "; ".join(result.reasons))
    return result


def gates_of(db: Database, name: str) -> list[dict[str, Any]]:
    """The model's gates, newest first."""
    with db.session() as session:
        rows = session.scalars(sa.select(PromotionGate).where(PromotionGate.model_name == name)
                               .order_by(PromotionGate.id.desc())).all()
    return [{"version": r.model_version, "passed": r.passed, "forced": r.forced, "promoted": r.promoted,
             "figures": r.figures, "by": r.by, "at": r.at} for r in rows]
