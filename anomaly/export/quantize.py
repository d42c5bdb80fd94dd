"""INT8 backbones, written only when they judge held-out parts as the float export does.

Static quantisation (onnxruntime's ``quantize_static``: QDQ format, weights per channel in
int8, activations in uint8 with ranges from good images) of the backbone's convolutions
only: the distances to the bank or the Gaussians, the map and the score stay in float32,
since a quantised distance would move every threshold.

The goods given to the export are split: the first half calibrates the activation ranges,
the second half and the synthetic defects made from it are the gate. The INT8 graph is
kept only if, on those held-out parts and at the version's thresholds, its false-reject
rate is at most the float export's plus :data:`MAX_FRR_INCREASE`, its detection rate at
least the float export's minus :data:`MAX_DETECTION_DROP`, and the median change of a
held-out good's score is at most :data:`MAX_GOOD_SHIFT` of the calibration's good-score
spread: a few held-out goods rarely cross a threshold, but a shift of the whole good
distribution moves the false-reject rate the thresholds were set for. What changed is
recorded either way. A kept graph is a complete export folder of its own, ``int8/`` beside the float one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.errors import ExportError
from anomaly.imageio import as_image
from anomaly.inspect import inspect
from anomaly.runtime.deployed import GRAPH, file_sha256, load_deployed, model_inputs, write_deploy

log = logging.getLogger(__name__)

#: The INT8 graph may reject this much larger a share of the held-out goods than the float one,
MAX_FRR_INCREASE = 0.0
#: and flag this much smaller a share of their synthetic defects.
MAX_DETECTION_DROP = 0.0
#: and shift the held-out goods' scores by at most this share of the calibration's good-score
#: standard deviation (median over the goods).
MAX_GOOD_SHIFT = 0.1
#: Sub-folder of the export that holds a kept INT8 graph and its deploy.json.
INT8_FOLDER = "int8"


def _rates(model, goods: Sequence[np.ndarray], defects: Sequence[np.ndarray]) -> tuple[float, float, list[float]]:
    """False-reject rate on ``goods``, detection rate on ``defects`` (not GOOD counts as flagged), and the scores."""
    judged_goods = inspect(model, list(goods)) if goods else []
    judged_defects = inspect(model, list(defects)) if defects else []
    frr = float(np.mean([j.verdict != "GOOD" for j in judged_goods])) if judged_goods else 0.0
    detection = float(np.mean([j.verdict != "GOOD" for j in judged_defects])) if judged_defects else 0.0
    return frr, detection, [j.score for j in judged_goods + judged_defects]


def quantize_graph(source: Path, target: Path, inputs: Sequence[np.ndarray]) -> None:
    """Write ``source``'s graph with its convolutions quantised statically to ``target``.

    Args:
        source: The float32 ONNX graph.
        target: Where to write the INT8 one.
        inputs: Calibration batches, ``(1, h, w, 3)`` float32 pixels each.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(inputs)

        def get_next(self):
            batch = next(self._items, None)
            return None if batch is None else {"pixels": batch}

    quantize_static(str(source), str(target), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])


def quantize_export(bundle, folder: Path, deploy: dict[str, Any], goods: Sequence[Any],
                    check: Sequence[np.ndarray]) -> dict[str, Any]:
    """Quantise the float export in ``folder`` and keep it in ``folder/int8`` if it passes the gate.

    Args:
        bundle: The stored version (for its geometry).
        folder: The float export, already checked for parity.
        deploy: Its deploy.json content.
        goods: The goods the export was checked with.
        check: :func:`~anomaly.export.onnx_export.parity_images` of ``goods`` (goods, then defects).

    Returns:
        The gate's figures: ``kept``, the rates of both graphs, tolerances, score changes.
    """
    n_goods = len(goods)
    if n_goods < 4:
        raise ExportError(f"the INT8 gate needs at least 4 goods (half calibrate, half are held out), got {n_goods}")
    half = n_goods // 2
    calibrate = [as_image(g) for g in check[:half]]
    held_goods = list(check[half:n_goods])
    # Defects made from the held-out goods only (check holds one per good, in order, when drawable).
    held_defects = list(check[n_goods + half :])
    inputs = [pixels[None] for image in calibrate for pixels in model_inputs(bundle.detector, image)]

    target = folder / INT8_FOLDER
    target.mkdir()
    try:
        quantize_graph(folder / GRAPH, target / GRAPH, inputs)
        int8_deploy = {**deploy, "graph": {**deploy["graph"], "sha256": file_sha256(target / GRAPH),
                                           "precision": "int8 (backbone convolutions; distances and map float32)"}}
        int8_deploy.pop("parity", None)
        write_deploy(target, int8_deploy)
        float_frr, float_det, float_scores = _rates(load_deployed(folder), held_goods, held_defects)
        int8_frr, int8_det, int8_scores = _rates(load_deployed(target), held_goods, held_defects)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    int8_scores, float_scores = np.asarray(int8_scores), np.asarray(float_scores)
    changes = np.abs(int8_scores - float_scores) / np.maximum(np.abs(float_scores), 1e-12)
    spread = float(np.std(bundle.calibration.good_scores)) if len(bundle.calibration.good_scores) > 1 else 0.0
    good_shift = float(np.median(np.abs(int8_scores[: len(held_goods)] - float_scores[: len(held_goods)])))
    shift_share = good_shift / spread if spread > 0 else float("inf")
    kept = (int8_frr <= float_frr + MAX_FRR_INCREASE and int8_det >= float_det - MAX_DETECTION_DROP
            and shift_share <= MAX_GOOD_SHIFT)
    gate = {
        "kept": bool(kept),
        "calibration_goods": half,
        "held_out_goods": len(held_goods),
        "held_out_defects": len(held_defects),
        "float": {"false_reject_rate": float_frr, "detection_rate": float_det},
        "int8": {"false_reject_rate": int8_frr, "detection_rate": int8_det},
        "good_score_shift": {"median": good_shift, "good_score_std": spread, "share_of_std": shift_share},
        "tolerances": {"max_frr_increase": MAX_FRR_INCREASE, "max_detection_drop": MAX_DETECTION_DROP,
                       "max_good_shift_share_of_std": MAX_GOOD_SHIFT},
        "score_change_relative": {"median": float(np.median(changes)), "max": float(changes.max())},
        "folder": INT8_FOLDER if kept else None,
    }
    if kept:
        int8_deploy["int8_gate"] = gate
        write_deploy(target, int8_deploy)
    else:
        log.warning("INT8 graph not kept: false rejects %.3f (float %.3f), detections %.3f (float %.3f), "
                    "held-out goods' scores moved by %.2f of the goods' spread (at most %.2f)",
                    int8_frr, float_frr, int8_det, float_det, shift_share, MAX_GOOD_SHIFT)
        shutil.rmtree(target, ignore_errors=True)
    return gate
