"""A stored version -> one ONNX graph and its deploy.json, written only if it judges as the bundle does.

The graph (:mod:`anomaly.export.graphs`) holds the whole scoring from model-input pixels to
the image score and the map at model resolution; deploy.json holds everything that is not
a weight: geometry, calibration, grading rules, the accepted input, name, version and
hashes. Thresholds live only there, so moving them never changes the graph: a version
written by ``anomaly models set-threshold`` exports a byte-identical graph and another
deploy.json.

Before anything is written, the export is loaded back through the torch-free runtime
(:mod:`anomaly.runtime.deployed`) and judges the model's own good images and synthetic
defects made from them beside the bundle (:mod:`anomaly.export.parity`); an export that
disagrees is refused. The folder is written aside and renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.bundle import Bundle
from anomaly.errors import ExportError
from anomaly.export.parity import Parity, compare
from anomaly.imageio import as_image
from anomaly.jsonable import jsonable
from anomaly.packages import installed_versions
from anomaly.runtime.deployed import (DEPLOY, FORMAT, FORMAT_VERSION, GRAPH, file_sha256, load_deployed, model_inputs,
                                      write_deploy)

log = logging.getLogger(__name__)

#: The ONNX operator set the graphs are written with (onnxruntime 1.20 and later run it).
OPSET = 17
#: Goods the parity check judges by default, each also with a synthetic defect.
PARITY_GOODS = 16
#: Synthetic defect kinds of the parity check (each good gets one, in turn).
PARITY_KINDS = ("scratch", "spot", "stain", "cutpaste")


def write_graph(detector, path: Path, example: np.ndarray) -> None:
    """Export a fitted detector's scoring graph to ``path``.

    Args:
        detector: A fitted exportable detector (:data:`anomaly.export.graphs.GRAPHS`).
        path: The ``.onnx`` file to write.
        example: ``(1, h, w, 3)`` float32 pixels to trace with.
    """
    import torch

    from anomaly.export.graphs import INPUT, OUTPUTS, scoring_graph

    graph = scoring_graph(detector)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        # The TorchScript-based exporter: deterministic and bundled with torch; the dynamo
        # exporter would add onnxscript to the install. torch 2.14 warns that it is
        # deprecated; our torch is pinned, and a torch upgrade reruns the parity tests.
        warnings.simplefilter("ignore")
        with torch.inference_mode():
            torch.onnx.export(graph, (torch.from_numpy(example),), str(path), dynamo=False,
                              input_names=[INPUT], output_names=list(OUTPUTS), opset_version=OPSET,
                              dynamic_axes={INPUT: batch, OUTPUTS[0]: batch, OUTPUTS[1]: batch})


def parity_images(goods: Sequence[Any], *, random_state: int = 0) -> list[np.ndarray]:
    """The check set: each good as it is, then each with one synthetic defect (kinds in turn).

    Args:
        goods: Good images (arrays, paths or bytes).
        random_state: Seed of the defects.

    Returns:
        ``2 * len(goods)`` decoded images (fewer when a defect cannot be drawn on a good).
    """
    from anomaly.synthesis.defects import DefectSpec, make_defect

    images = [as_image(g) for g in goods]
    defective = []
    for i, image in enumerate(images):
        side = min(image.shape[:2])
        spec = DefectSpec(PARITY_KINDS[i % len(PARITY_KINDS)], size=max(3.0, min(side * 0.12, side / 2)),
                          contrast=0.35)
        try:
            defective.append(make_defect(image, spec, random_state=[int(random_state), i])[0])
        except Exception as exc:  # noqa: BLE001 - a good without the structure a kind needs: skip it
            log.debug("no %s defect on good %d: %s", spec.kind, i, exc)
    return images + defective


def export_version(bundle: Bundle, out: str | Path, *, name: str, version: int | None,
                   goods: Sequence[Any], overwrite: bool = False, int8: bool = False) -> dict[str, Any]:
    """Export a bundle to an ONNX folder, checked for parity first.

    Args:
        bundle: The stored version, loaded.
        out: Folder to write (must not exist unless ``overwrite``).
        name, version: The model's name and version in the store (recorded in deploy.json).
        goods: Good images of the model (its training or calibration images) for the parity
            check (:func:`parity_images`); at least one.
        overwrite: Replace an existing folder.
        int8: Also write an INT8 graph (``model.int8.onnx`` and its own deploy file) when it
            passes the quantisation gate (:mod:`anomaly.export.quantize`).

    Returns:
        deploy.json's content.

    Raises:
        ExportError: the detector cannot be exported, no goods were given, or the export
            fails parity (nothing is written then).
    """
    out = Path(out)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose another folder or overwrite it")
    if not goods:
        raise ExportError("the parity check needs the model's good images: give at least one")
    detector = bundle.detector
    check = parity_images(goods)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        write_graph(detector, staging / GRAPH, model_inputs(detector, check[0])[0][None])
        deploy = deploy_document(bundle, name=name, version=version, graph=staging / GRAPH)
        write_deploy(staging, deploy)
        parity = compare(bundle, load_deployed(staging), check)
        log.info("parity: %s", parity.summary())
        if not parity.ok:
            raise ExportError(f"the export does not judge as the bundle does, nothing written: {parity.summary()}")
        deploy["parity"] = {**parity.to_dict(), "images": f"{len(goods)} goods and {len(check) - len(goods)} "
                                                         "synthetic defects made from them"}
        write_deploy(staging, deploy)
        if int8:
            from anomaly.export.quantize import quantize_export

            deploy["int8"] = quantize_export(bundle, staging, deploy, goods, check)
            write_deploy(staging, deploy)
        if out.exists():
            shutil.rmtree(out)
        staging.chmod(0o755)  # mkdtemp made it private; an export is read by the line PC's service user
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return deploy


def deploy_document(bundle: Bundle, *, name: str, version: int | None, graph: Path,
                    precision: str = "float32") -> dict[str, Any]:
    """deploy.json's content for a graph of ``bundle`` (its hash is added when written)."""
    detector, manifest = bundle.detector, bundle.manifest
    params = detector.get_params()
    tiling = getattr(detector, "tiling", None)
    geometry: dict[str, Any] = {"image_size": list(detector.geometry.size), "resize": params.get("resize"),
                                "roi": params.get("roi"), "tiling": None}
    if tiling is not None:
        geometry["tiling"] = {"tile": list(tiling.tile), "overlap": int(tiling.overlap), "scale": float(tiling.scale),
                              "roi": None if tiling.roi is None else list(tiling.roi)}
    packages = installed_versions(("anomaly-inspect", "torch", "onnx", "onnxruntime", "numpy",
                                   "opencv-python-headless"))
    return jsonable({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "detector": detector.name,
        "model": {"name": name, "version": version, "detector": detector.name, "params": params,
                  "bundle_sha256": manifest.get("sha256"), "backbone": manifest.get("backbone")},
        "graph": {"file": graph.name, "sha256": file_sha256(graph), "opset": OPSET, "precision": precision,
                  "input": {"name": "pixels", "shape": ["batch", *detector.geometry.size, 3], "dtype": "float32",
                            "meaning": "RGB levels / full scale (255 or 65535) of the model-size image, after "
                                       "the geometry's ROI and resize"},
                  "outputs": {"score": ["batch"], "map": ["batch", *detector.geometry.size]}},
        "geometry": geometry,
        "batch_size": int(params.get("batch_size", 8)),
        "calibration": manifest.get("calibration"),
        "training_data": {"accepted_input": (manifest.get("training_data") or {}).get("accepted_input"),
                          "fingerprint": (manifest.get("training_data") or {}).get("fingerprint"),
                          "n_images": (manifest.get("training_data") or {}).get("n_images")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "packages": packages,
    })


__all__ = ["DEPLOY", "GRAPH", "Parity", "deploy_document", "export_version", "model_inputs", "parity_images",
           "write_graph"]
