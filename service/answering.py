"""The answer to a scoring request: the recorded inspections, with timings, and maps and overlays if asked.

Maps and overlays are drawn from each part's own judgement (:func:`draw`) before anything
is recorded, so a part whose pictures cannot be drawn is not recorded either; they are
put into the answer (:func:`answer`) only after the records are committed.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Sequence

from anomaly.imageio import encode_png
from service.archive import map_to_png
from service.db import InspectionRecord, iso
from service.judging import Judged, Judgement, map_scale
from service.registry import LoadedModel


@dataclass(frozen=True)
class Pictures:
    """What a part's answer may show besides its facts, as PNG bytes.

    Attributes:
        map_png: The anomaly map, 8-bit gray, on the model's fixed scale; None if not asked
            for or the part has no map (not aligned).
        overlay_png: The map as a heat map over the image, with the verdict; None likewise.
    """

    map_png: bytes | None = None
    overlay_png: bytes | None = None


def draw(model: LoadedModel, judgements: Sequence[Judgement], *, return_map: bool,
         return_overlay: bool) -> list[Pictures]:
    """Each part's map and overlay, as asked, drawn from the part's own inspection.

    Args:
        model: The model that judged the parts (its calibration fixes the colour scale).
        judgements: One per part.
        return_map: Encode each map (:func:`service.archive.map_to_png`).
        return_overlay: Draw each overlay (:func:`anomaly.inspect.render_overlay`).

    Returns:
        One :class:`Pictures` per judgement.
    """
    from anomaly.inspect import render_overlay

    out = []
    for judgement in judgements:
        found = judgement.inspection
        if found is None:
            out.append(Pictures())
            continue
        out.append(Pictures(
            map_png=map_to_png(found.map, *map_scale(model, found.map)) if return_map else None,
            overlay_png=encode_png(render_overlay(model.bundle, judgement.image, found)) if return_overlay else None,
        ))
    return out


def recorded_answer(model: LoadedModel, batch_id: str | None, records: Sequence[InspectionRecord]) -> dict[str, Any]:
    """The answer without maps or timings: what an idempotent retry gets back (see :mod:`service.recording`)."""
    return {"model": {"name": model.name, "version": model.version, "detector": model.detector},
            "batch_id": batch_id, "results": [inspection_answer(r, model) for r in records]}


def answer(model: LoadedModel, records: Sequence[InspectionRecord], pictures: Sequence[Pictures], *,
           judged: Judged, store_seconds: float, started: float, return_map: bool,
           return_overlay: bool) -> dict[str, Any]:
    """The scoring answer: every recorded inspection, its timings and, if asked, its map and overlay.

    Args:
        model: The model that judged the parts.
        records: The committed records, one per part, in order (at least one).
        pictures: What :func:`draw` gave, one per part.
        judged: The judgements' decoding and inference times.
        store_seconds: Time to archive and commit the records.
        started: ``time.perf_counter()`` when the request began (for the total).
        return_map: Put each map in the answer (base64 PNG with its ``vmin``/``vmax``).
        return_overlay: Put each overlay in the answer (base64 PNG).

    Returns:
        ``{"model": ..., "batch_id": ..., "results": [...], "timings_ms": ...}``; each
        result's timings are its share of the request's.
    """
    n = len(records)
    decode_ms, inference_ms, store_ms = judged.decode_ms_each, judged.inference_ms_each, store_seconds * 1000
    out = recorded_answer(model, records[0].batch_id, records)
    for item, record, drawn in zip(out["results"], records, pictures):
        item["timings_ms"] = {"decode": round(decode_ms, 2), "inference": round(inference_ms, 2),
                              "store": round(store_ms / n, 2)}
        if return_map:
            item["map"] = None if drawn.map_png is None else {
                "png_base64": base64.b64encode(drawn.map_png).decode("ascii"),
                "vmin": record.map_stats["vmin"], "vmax": record.map_stats["vmax"],
                "encoding": "8-bit gray PNG, linear from vmin (0) to vmax (255)",
            }
        if return_overlay:
            item["overlay_png_base64"] = (None if drawn.overlay_png is None
                                          else base64.b64encode(drawn.overlay_png).decode("ascii"))
    total_ms = (time.perf_counter() - started) * 1000
    out["timings_ms"] = {"decode": round(decode_ms * n, 2), "inference": round(inference_ms * n, 2),
                         "store": round(store_ms, 2), "total": round(total_ms, 2)}
    return out


def inspection_answer(record: InspectionRecord, model: LoadedModel | None = None) -> dict[str, Any]:
    """The JSON form of a stored inspection (the scoring answer and the records API share it)."""
    thresholds: dict[str, Any] = {"t_review": record.t_review, "t_ng": record.t_ng}
    if model is not None:
        thresholds = model.thresholds
    out = {
        "inspection_id": record.id,
        "created_at": iso(record.created_at),
        "part_id": record.part_id,
        "model": {"name": record.model_name, "version": record.model_version, "detector": record.detector},
        "verdict": record.verdict,
        "score_verdict": record.score_verdict,
        "reasons": record.reasons or [],
        "score": record.score,
        "calibrated_score": record.calibrated_score,
        "thresholds": thresholds,
        "regions": record.regions or [],
        "map_stats": record.map_stats,
        "image": {"sha256": record.image_sha256, "width": record.image_width, "height": record.image_height},
        "source": record.source,
        "batch_id": record.batch_id,
        "client": record.client,
        "archived": record.archive_path is not None,
    }
    if record.error_code:
        out["error"] = {"code": record.error_code, "message": record.message}
    return out
