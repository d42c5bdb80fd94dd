"""An exported model folder, loaded and scored with onnxruntime, numpy and OpenCV only (no torch).

Layout (written by :func:`anomaly.export.onnx_export.export_version`)::

    model.onnx     the scoring graph: model-input pixels -> image score and map at model
                   resolution (anomaly.export.graphs)
    deploy.json    geometry (ROI, resize policy, tiles), calibration (thresholds, calibrated
                   score mapping, pixel threshold, grading rules), the accepted input, the
                   model's name and version, the graph's sha256, the parity figures the
                   export was checked with, and the sha256 of the rest of deploy.json

Loading checks the format, deploy.json's own hash and the graph's, and refuses a folder that
does not match, saying why. A :class:`DeployedModel` quacks like a
:class:`~anomaly.bundle.Bundle` where judging needs it (``detector.score``, ``calibration``,
``manifest``), so :func:`anomaly.inspect.inspect` gives the same answer from either.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomaly.calibration import Calibration
from anomaly.detectors.base import AnomalyResult
from anomaly.errors import DeployError, InvalidImageError
from anomaly.geometry import Geometry
from anomaly.imageio import ImageLike, as_image
from anomaly.tiling import Tiling

FORMAT = "anomaly-deploy"
FORMAT_VERSION = 1
DEPLOY = "deploy.json"
GRAPH = "model.onnx"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def deploy_digest(deploy: dict[str, Any]) -> str:
    """sha256 of a deploy.json's content without its own ``sha256`` key (canonical JSON)."""
    body = {k: v for k, v in deploy.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_deploy(directory: str | os.PathLike, deploy: dict[str, Any]) -> None:
    """Write deploy.json with its own hash."""
    body = {k: v for k, v in deploy.items() if k != "sha256"}
    body["sha256"] = deploy_digest(body)
    Path(directory, DEPLOY).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def pixels_of(image: np.ndarray) -> np.ndarray:
    """The graph's input of one model-size image: ``(h, w, 3)`` float32, levels over full scale.

    Gray images are repeated on three channels, as the backbone's preparation does
    (:func:`anomaly.features.preprocess.normalise_into`); the scale is the same float32
    product, so the graph sees the values the bundle's backbone sees.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint8:
        scale = np.float32(1.0 / 255)
    elif image.dtype == np.uint16:
        scale = np.float32(1.0 / 65535)
    else:
        raise InvalidImageError(f"expected a uint8 or uint16 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image.astype(np.float32) * scale


def model_inputs(detector, image: np.ndarray) -> list[np.ndarray]:
    """The graph's inputs of one image, ``(h, w, 3)`` float32 pixels each: its tiles, or the image
    after the geometry's ROI and resize (as :class:`~anomaly.runtime.deployed.OnnxScorer` makes them)."""
    tiling = getattr(detector, "tiling", None)
    if tiling is None:
        return [pixels_of(detector.geometry.forward(image)[0])]
    return [pixels_of(tile) for tile in tiling.cut(image)[0]]


class OnnxScorer:
    """The exported graph behind the detector interface's ``score``.

    Geometry and tiling are applied here, in numpy and OpenCV, exactly as the detectors
    do (:class:`~anomaly.geometry.Geometry`, :class:`~anomaly.tiling.Tiling`); the graph
    scores model-size inputs in batches.

    Args:
        graph: Path of the ONNX graph.
        geometry: The model input of one image (one tile when tiled).
        tiling: How frames are cut into tiles, ``None`` untiled.
        batch_size: Inputs per graph call.
        threads: onnxruntime intra-op threads (``None``: its default, every core).
    """

    name = "onnx"

    def __init__(self, graph: Path, geometry: Geometry, tiling: Tiling | None, batch_size: int,
                 threads: int | None = None) -> None:
        import onnxruntime  # lazy: the runtime's one heavy import

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.geometry, self.tiling, self.batch_size = geometry, tiling, max(1, int(batch_size))

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph on a batch: ``(N, h, w, 3)`` pixels to ``(N,)`` scores and ``(N, h, w)`` maps."""
        scores, maps = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})
        return scores, maps

    def score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        """Scores ``(N,)`` and maps at each image's resolution, as the exported detector gives them."""
        if isinstance(images, (str, bytes, np.ndarray)):
            images = [images]
        if len(images) == 0:
            return AnomalyResult(scores=np.zeros(0), maps=[])
        if self.tiling is not None:
            return self._score_tiled(images)
        scores, maps = [], []
        step = self.batch_size
        for start in range(0, len(images), step):
            placed = [self.geometry.forward(as_image(source)) for source in images[start : start + step]]
            batch_scores, batch_maps = self.run(np.stack([pixels_of(resized) for resized, _ in placed]))
            for (_, placement), score, model_map in zip(placed, batch_scores, batch_maps):
                scores.append(float(score))
                fill = float(model_map.min()) if model_map.size else 0.0  # as anomaly.maps.to_image_map
                maps.append(self.geometry.backward(model_map, placement, fill=fill))
        return AnomalyResult(scores=np.asarray(scores), maps=maps)

    def _score_tiled(self, images: Sequence[ImageLike]) -> AnomalyResult:
        """Each image cut into tiles, the tiles scored in batches; an image's score is its
        largest tile score and its map the tiles' maps blended (as PatchCore tiles)."""
        scores, maps = [], []
        for source in images:
            tiles, layout = self.tiling.cut(as_image(source))
            stitcher = self.tiling.stitcher(layout)
            best = -np.inf
            for start in range(0, len(tiles), self.batch_size):
                chunk = tiles[start : start + self.batch_size]
                batch_scores, batch_maps = self.run(np.stack([pixels_of(t) for t in chunk]))
                for offset, (score, model_map) in enumerate(zip(batch_scores, batch_maps)):
                    best = max(best, float(score))
                    stitcher.add(start + offset, model_map)
            scores.append(best)
            maps.append(stitcher.result())
        return AnomalyResult(scores=np.asarray(scores), maps=maps)


@dataclass
class DeployedModel:
    """A loaded export: its scorer, its deploy.json and where it came from.

    Attributes:
        detector: The :class:`OnnxScorer`.
        manifest: deploy.json as a dict (``calibration`` and ``training_data`` as in a bundle's manifest).
        path: The folder.
    """

    detector: OnnxScorer
    manifest: dict[str, Any]
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calibration(self) -> Calibration:
        return Calibration.from_manifest(self.manifest.get("calibration"))

    @property
    def name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def version(self) -> int | None:
        return self.manifest["model"].get("version")


def read_deploy(directory: str | os.PathLike) -> dict[str, Any]:
    """deploy.json of an export folder, checked: format, its own hash, the graph's hash.

    Raises:
        DeployError: not an export folder, another format version, or a file changed after export.
    """
    root = Path(directory)
    path = root / DEPLOY
    if not path.is_file():
        raise DeployError(f"{root} is not an exported model: {DEPLOY} is missing (export one with `anomaly export`)")
    try:
        deploy = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeployError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(deploy, dict) or deploy.get("format") != FORMAT:
        raise DeployError(f"{path} is not an {FORMAT} file")
    if deploy.get("format_version") != FORMAT_VERSION:
        raise DeployError(f"{path} has format version {deploy.get('format_version')}, this runtime reads "
                          f"{FORMAT_VERSION}: export the model again with this version")
    if deploy.get("sha256") != deploy_digest(deploy):
        raise DeployError(f"{path} was changed after export (its sha256 does not match its content); thresholds "
                          "move with `anomaly models set-threshold` and a new export, which rewrites deploy.json")
    graph = root / deploy["graph"]["file"]
    if not graph.is_file():
        raise DeployError(f"{root} is incomplete: {deploy['graph']['file']} is missing")
    actual = file_sha256(graph)
    if actual != deploy["graph"]["sha256"]:
        raise DeployError(f"{graph} has sha256 {actual[:16]}..., deploy.json says {deploy['graph']['sha256'][:16]}... "
                          "(the graph was changed after export)")
    return deploy


def load_deployed(directory: str | os.PathLike, *, threads: int | None = None) -> DeployedModel:
    """Load an export folder for scoring (see the module docstring for what is checked).

    Raises:
        DeployError: see :func:`read_deploy`.
    """
    root = Path(directory)
    deploy = read_deploy(root)
    geo = deploy["geometry"]
    tiling = None
    if geo.get("tiling"):
        t = geo["tiling"]
        tiling = Tiling(tuple(t["tile"]), int(t["overlap"]), float(t["scale"]),
                        None if t.get("roi") is None else tuple(t["roi"]))
        geometry = Geometry.from_params(tuple(t["tile"]), "stretch", None)
    else:
        geometry = Geometry.from_params(tuple(geo["image_size"]), geo["resize"], geo.get("roi"))
    scorer = OnnxScorer(root / deploy["graph"]["file"], geometry, tiling, int(deploy.get("batch_size", 8)),
                        threads=threads)
    return DeployedModel(detector=scorer, manifest=deploy, path=root)
