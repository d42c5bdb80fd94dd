"""anomalib 2.7 as the peer system (runs inside a bench worker, in anomalib's environment).

The peer's torch models are used directly (``PatchcoreModel``, ``PadimModel``,
``GanomalyModel``), fitted the way anomalib's Lightning modules fit them, without the
Lightning ``Trainer`` (which adds a training loop, loggers and callbacks around the same
calls); GANomaly is trained by the steps of its ``training_step`` (see
:func:`train_ganomaly`) and gives no anomaly map, so it has no pixel metrics:

* the model is built with ``pre_trained=False`` (anomalib would download weights) and
  its timm ``features_only`` backbone gets the same EfficientNet-Lite0 ImageNet weights
  as ours (the ``efficientnet_pytorch`` state dict mapped onto timm's names by
  :func:`anomaly.features.backbone.map_efficientnet_pytorch`); the layers are given by
  their timm module names (``blocks.2``, ``blocks.4``...), the same stages as ours;
* images are read with anomalib's ``read_image`` (PIL, RGB, float in [0, 1]) and
  prepared with its ``PreProcessor`` holding the transform its models configure:
  ``Resize((s, s), antialias=True)`` then ``Normalize`` with the weights' mean and std;
* fitting: ``model.train()``, one forward per training batch (the model stores the
  embeddings), then ``subsample_embedding(ratio)`` (PatchCore's k-center greedy coreset)
  or ``fit()`` (PaDiM's Gaussians), as ``Patchcore.fit`` / ``Padim.fit`` call them;
* scoring: ``model.eval()`` and one forward per image under ``torch.inference_mode()``;
  the raw ``pred_score`` and ``anomaly_map`` are used: no post-processor, so no
  normalisation fitted on any data.

End to end is file to score and map (read, pre-process, forward); the model call is the
forward on the pre-processed tensor. The map comes out at the model input's size; it is
resized to the image's own size for the pixel metrics outside the timed part (ours does
that inside its timed call, which is to anomalib's advantage).

anomalib's k-center selection runs with glibc's mmap threshold fixed (see
:func:`_fixed_mmap_threshold`): without it, it ran out of memory on this machine.

The bundle size is that of ``torch.save(model.state_dict())``, which holds the backbone
weights; ours refers to them by hash. ``bundle_backbone_mb`` says how much of it they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from anomaly.packages import installed_versions

_PACKAGES = ("anomalib", "torch", "torchvision", "timm", "lightning", "torchmetrics", "numpy")

#: Largest difference accepted between our backbone's features and the peer's on one
#: image, relative to the peer's largest feature magnitude in that layer. Ours folds the
#: batch norms into the convolutions (float rounding: about 1e-6 of the magnitude).
BACKBONE_TOLERANCE = 1e-5


def peer_python(repo_root: Path, explicit: str | None = None) -> tuple[str | None, str | None]:
    """The interpreter that can import anomalib, and why none when there is none.

    Looked up in order: ``explicit`` (``--peer-python``), ``$ANOMALY_PEER_PYTHON``, this
    interpreter (``pip install .[peer]`` here), ``<repo>/.venv-peer/bin/python``.

    Returns:
        ``(python, None)`` or ``(None, reason)``.
    """
    import importlib.util
    import subprocess

    candidates = [c for c in (explicit, os.environ.get("ANOMALY_PEER_PYTHON")) if c]
    if not candidates and importlib.util.find_spec("anomalib") is not None:
        return sys.executable, None
    if not candidates:
        venv = repo_root / ".venv-peer" / "bin" / "python"
        if venv.is_file():
            candidates.append(str(venv))
    for python in candidates:
        try:
            probe = subprocess.run([python, "-c", "import anomalib, sys; sys.stdout.write(anomalib.__version__)"],
                                   capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{python} could not run: {exc}"
        if probe.returncode == 0:
            return python, None
        return None, f"{python} cannot import anomalib: {probe.stderr.strip().splitlines()[-1:]}"
    return None, ("anomalib is not installed: `pip install .[peer]` (or a venv at .venv-peer, or "
                  "--peer-python PATH) to compare with it")


def _versions() -> dict[str, str]:
    return installed_versions(_PACKAGES)


def _mapped_state_dict(backbone: str) -> tuple[dict[str, Any], str]:
    """Our located ImageNet weights under timm's key names, and their sha256."""
    import timm
    import torch

    from anomaly.features.backbone import map_efficientnet_pytorch
    from anomaly.features.weights import locate_weights, sha256_file

    weights = locate_weights(backbone)
    if weights.path.suffix == ".safetensors":
        from safetensors.torch import load_file

        source = load_file(str(weights.path))
    else:
        source = torch.load(weights.path, map_location="cpu", weights_only=True)
        if isinstance(source, dict) and isinstance(source.get("state_dict"), dict):
            source = source["state_dict"]
    if weights.key_scheme == "efficientnet_pytorch":
        source = map_efficientnet_pytorch(source, timm.create_model(backbone, pretrained=False).state_dict())
    return source, sha256_file(weights.path)


def load_backbone(extractor: Any, backbone: str) -> str:
    """Load our weights into anomalib's ``TimmFeatureExtractor``; return their sha256.

    Raises:
        anomaly.errors.BackboneWeightsError: a tensor the peer's backbone needs is missing.
    """
    from anomaly.errors import BackboneWeightsError

    source, digest = _mapped_state_dict(backbone)
    target = extractor.feature_extractor.state_dict()
    missing = [k for k in target if k not in source]
    if missing:
        raise BackboneWeightsError(f"weights for {backbone} lack {len(missing)} tensors anomalib's backbone needs, "
                                   f"e.g. {missing[:3]}")
    extractor.feature_extractor.load_state_dict({k: source[k] for k in target}, strict=True)
    return digest


@contextlib.contextmanager
def _fixed_mmap_threshold() -> Iterator[None]:
    """glibc's mmap threshold fixed at 128 KiB inside, 32 MiB after (no-op off glibc).

    Each iteration of anomalib's k-center loop allocates and frees one ``features - centre``
    temporary. Once glibc has raised its dynamic mmap threshold (after the backbone's
    passes free large blocks), temporaries under 32 MB come from the heap, and here the
    heap then grew by about one temporary per iteration: 21 GB and killed for memory on a
    25-image set at the default 10 % ratio. Blocks above 128 KiB are mapped and unmapped
    inside this context; afterwards the threshold is 32 MiB, the value the dynamic rule
    tends to, so scoring allocates as before.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        yield
        return
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 128 * 1024)
    try:
        yield
    finally:
        mallopt(m_mmap_threshold, 32 * 1024 * 1024)


def layer_names(backbone: str, indices: list[int]) -> list[str]:
    """timm module names (anomalib's layer names) of ``features_only`` stage indices."""
    import timm

    info = timm.create_model(backbone, pretrained=False, features_only=True).feature_info.info
    return [info[i]["module"] for i in indices]


def ganomaly_transform(size: tuple[int, int]) -> Any:
    """The pre-processing anomalib gives GANomaly: its model's own configured transform."""
    try:
        from anomalib.models import Ganomaly

        return Ganomaly.configure_pre_processor(image_size=size).transform
    except (ImportError, AttributeError, TypeError):
        from torchvision.transforms import v2

        return v2.Compose([v2.Resize(size, antialias=True),
                           v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])


def train_ganomaly(images: Any, *, image_size: int, batch_size: int, epochs: int, n_features: int,
                   latent_vec_size: int = 100, seed: int = 0) -> tuple[Any, int]:
    """anomalib's ``GanomalyModel`` trained by the steps of its Lightning ``training_step``.

    Generator: ``GeneratorLoss`` with its default weights 1 / 50 / 1; discriminator:
    ``DiscriminatorLoss``; Adam (lr 0.0002, betas 0.5 / 0.999), as ``Ganomaly`` configures.

    Args:
        images: ``(N, 3, s, s)`` float tensor, prepared by :func:`ganomaly_transform`.
        image_size: ``s``.
        batch_size: Images per step.
        epochs: Passes over ``images`` (in a seeded random order).
        n_features: Width of the networks.
        latent_vec_size: Size of the latent code.
        seed: Seed of the initial weights and of the batch order.

    Returns:
        The model in eval mode and the number of steps taken.
    """
    import torch
    from anomalib.models.image.ganomaly.loss import DiscriminatorLoss, GeneratorLoss
    from anomalib.models.image.ganomaly.torch_model import GanomalyModel

    torch.manual_seed(int(seed))
    size = (int(image_size), int(image_size))
    model = GanomalyModel(input_size=size, num_input_channels=3, n_features=int(n_features),
                          latent_vec_size=int(latent_vec_size), extra_layers=0, add_final_conv_layer=True)
    generator_loss, discriminator_loss = GeneratorLoss(1, 50, 1), DiscriminatorLoss()
    betas = (0.5, 0.999)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=0.0002, betas=betas)
    g_opt = torch.optim.Adam(model.generator.parameters(), lr=0.0002, betas=betas)
    order_rng = torch.Generator().manual_seed(int(seed))
    steps = 0
    for _ in range(int(epochs)):
        model.train()
        order = torch.randperm(len(images), generator=order_rng)
        for start in range(0, len(images), int(batch_size)):
            batch = images[order[start : start + int(batch_size)]]
            padded, fake, latent_i, latent_o = model(batch)
            pred_real, _ = model.discriminator(padded)
            pred_fake, _ = model.discriminator(fake)
            g_loss = generator_loss(latent_i, latent_o, padded, fake, pred_real, pred_fake)
            g_opt.zero_grad()
            g_loss.backward(retain_graph=True)
            g_opt.step()
            pred_fake, _ = model.discriminator(fake.detach())
            d_loss = discriminator_loss(pred_real, pred_fake)
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            steps += 1
    model.eval()
    return model, steps


class AnomalibSystem:
    """Fit and score anomalib's PatchCore, PaDiM or GANomaly torch model."""

    name = "anomalib"

    def __init__(self) -> None:
        import torch
        from torchvision.transforms.v2 import Compose, Normalize, Resize

        from anomalib.data.utils import read_image
        from anomalib.models.image.padim.torch_model import PadimModel
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
        from anomalib.pre_processing import PreProcessor

        self._torch = torch
        self._classes = {"patchcore": PatchcoreModel, "padim": PadimModel}
        self._compose, self._resize, self._normalize = Compose, Resize, Normalize
        self._pre_processor_cls = PreProcessor
        self._read = read_image
        self.model = None
        self.model_name: str | None = None
        self.pre = None

    def versions(self) -> dict[str, str]:
        return _versions()

    def _pre_processor(self, size: int, mean: list[float], std: list[float]) -> Any:
        transform = self._compose([self._resize((size, size), antialias=True), self._normalize(mean=mean, std=std)])
        return self._pre_processor_cls(transform=transform)

    def _prepare(self, paths: list[str]) -> Any:
        images = [self.pre.transform(self._read(p, as_tensor=True).unsqueeze(0)) for p in paths]
        return self._torch.cat(images, dim=0)

    def fit(self, model: str, params: dict[str, Any], train: list[str], bundle_dir: Path) -> dict[str, Any]:
        """Build, load our weights into, and fit anomalib's torch model on ``train``.

        ``params``: ``model``, ``backbone``, ``layers`` (stage indices), ``image_size``,
        ``mean``, ``std``, ``batch_size``, ``seed`` and the model's own settings
        (``coreset_ratio``, ``num_neighbors`` | ``n_features``).
        """
        torch = self._torch
        if model == "ganomaly":
            return self._fit_ganomaly(params, train)
        if model not in self._classes:
            raise ValueError(f"no anomalib counterpart for {model!r}; known: {sorted(self._classes)} and ganomaly")
        backbone = params.get("backbone", "efficientnet_lite0")
        names = layer_names(backbone, list(params["layers"]))
        torch.manual_seed(int(params.get("seed", 0)))
        # anomalib's coreset projection draws its columns with scikit-learn's
        # sample_without_replacement(random_state=None), i.e. numpy's global generator:
        # unseeded, two runs of the same protocol gave different figures. Seeded here, a
        # rerun reproduces them.
        np.random.seed(int(params.get("seed", 0)))
        load_start = time.perf_counter()
        if model == "patchcore":
            net = self._classes[model](layers=names, backbone=backbone, pre_trained=False,
                                       num_neighbors=int(params["num_neighbors"]))
        else:
            net = self._classes[model](backbone=backbone, layers=names, pre_trained=False,
                                       n_features=int(params["n_features"]))
            if params.get("channels_of_seed") is not None:
                # Matched: the channels our PaDiM draws for this seed, so that both fit the
                # same Gaussians and differ by implementation only (the order of the
                # channels does not change a Mahalanobis distance).
                from anomaly.detectors.padim import channel_subset

                index = channel_subset(int(net.n_features_original), int(params["n_features"]),
                                       int(params["channels_of_seed"]))
                net.idx = torch.as_tensor(index, dtype=net.idx.dtype)
        digest = load_backbone(net.feature_extractor, backbone)
        load_seconds = time.perf_counter() - load_start
        self.pre = self._pre_processor(int(params["image_size"]), list(params["mean"]), list(params["std"]))
        batch = int(params.get("batch_size", 32))

        start = time.perf_counter()
        net.train()
        with torch.no_grad():
            for i in range(0, len(train), batch):
                net(self._prepare(train[i : i + batch]))
            if model == "patchcore":
                with _fixed_mmap_threshold():
                    net.subsample_embedding(float(params["coreset_ratio"]))
            else:
                net.fit()
        fit_seconds = time.perf_counter() - start
        net.eval()
        self.model = net
        self.model_name = model

        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        backbone_bytes = sum(t.numel() * t.element_size() for k, t in net.state_dict().items()
                             if k.startswith("feature_extractor."))
        target = bundle_dir / "anomalib"
        target.mkdir(parents=True, exist_ok=True)
        (target / "model.pt").write_bytes(buffer.getvalue())
        size = (target / "model.pt").stat().st_size
        shutil.rmtree(target, ignore_errors=True)
        training: dict[str, Any] = {"layers": names}
        if model == "patchcore":
            training["bank_size"] = int(net.memory_bank.shape[0])
            training["feature_dim"] = int(net.memory_bank.shape[1])
        else:
            training["n_features"] = int(net.n_features)
            training["channel_index"] = sorted(int(i) for i in net.idx.tolist())
            training["channels_of_seed"] = params.get("channels_of_seed")
        return {
            "fit_seconds": round(fit_seconds, 3),
            "model_load_seconds": round(load_seconds, 3),
            "bundle_mb": round(size / 1e6, 3),
            "bundle_backbone_mb": round(backbone_bytes / 1e6, 3),
            "bundle_holds_backbone": True,
            "params": {k: v for k, v in params.items() if k not in ("mean", "std")},
            "backbone": {"name": backbone, "layers": names, "weights_sha256": digest,
                         "mean": list(params["mean"]), "std": list(params["std"])},
            "training": training,
        }

    def _fit_ganomaly(self, params: dict[str, Any], train: list[str]) -> dict[str, Any]:
        """Train anomalib's GANomaly (``params``: ``image_size``, ``batch_size``, ``epochs``,
        ``n_features``, ``latent_vec_size``, ``seed``) on ``train``; no backbone."""
        torch = self._torch
        size = int(params["image_size"])
        transform = ganomaly_transform((size, size))
        self.pre = self._pre_processor_cls(transform=transform)
        start = time.perf_counter()
        images = torch.cat([transform(self._read(p, as_tensor=True).unsqueeze(0)) for p in train], dim=0)
        net, steps = train_ganomaly(images, image_size=size, batch_size=int(params["batch_size"]),
                                    epochs=int(params["epochs"]), n_features=int(params["n_features"]),
                                    latent_vec_size=int(params.get("latent_vec_size", 100)),
                                    seed=int(params.get("seed", 0)))
        fit_seconds = time.perf_counter() - start
        self.model = net
        self.model_name = "ganomaly"
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        return {
            "fit_seconds": round(fit_seconds, 3),
            "model_load_seconds": 0.0,
            "bundle_mb": round(len(buffer.getvalue()) / 1e6, 3),
            "bundle_backbone_mb": 0.0,
            "bundle_holds_backbone": False,
            "params": dict(params),
            "backbone": None,
            "training": {"steps": steps, "epochs": int(params["epochs"])},
        }

    def score(self, path: str) -> tuple[float, np.ndarray | None, dict[str, float | None]]:
        """Score one image file; return its raw score, its map at the image's size (``None``
        for GANomaly, which has none), timings (ms)."""
        import cv2

        torch = self._torch
        with torch.inference_mode():
            t0 = time.perf_counter()
            image = self._read(path, as_tensor=True)
            t1 = time.perf_counter()
            x = self.pre.transform(image.unsqueeze(0))
            t2 = time.perf_counter()
            out = self.model(x)
            t3 = time.perf_counter()
            if self.model_name == "ganomaly":
                t4 = None
            else:
                self.model.feature_extractor(x)
                t4 = time.perf_counter()
        timings = {
            "e2e_ms": (t3 - t0) * 1e3,
            "model_ms": (t3 - t2) * 1e3,
            "decode_ms": (t1 - t0) * 1e3,
            "preprocess_ms": (t2 - t1) * 1e3,
            "backbone_ms": None if t4 is None else (t4 - t3) * 1e3,
        }
        if self.model_name == "ganomaly":
            pred = out.pred_score if hasattr(out, "pred_score") else out
            return float(pred.reshape(-1)[0]), None, timings
        amap = out.anomaly_map[0].reshape(out.anomaly_map.shape[-2:]).float().numpy()
        height, width = image.shape[-2:]
        amap = cv2.resize(amap, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        return float(out.pred_score.reshape(-1)[0]), amap, timings

    def backbone_check(self, backbone: str, layers: list[int], path: str, image_size: int) -> dict[str, Any]:
        """Our backbone and the peer's, same weights, on one pre-processed image: identical?

        Returns the largest absolute difference per layer (and relative to the peer's
        largest magnitude, which decides), the peer's layer names, and the normalisation
        our extractor uses (which the peer is then given).
        """
        torch = self._torch
        from anomaly.features.backbone import FeatureExtractor

        ours = FeatureExtractor(backbone, layers)
        names = layer_names(backbone, layers)
        net = self._classes["patchcore"](layers=names, backbone=backbone, pre_trained=False)
        digest = load_backbone(net.feature_extractor, backbone)
        self.pre = self._pre_processor(int(image_size), ours.mean.tolist(), ours.std.tolist())
        x = self._prepare([path])
        with torch.inference_mode():
            a = ours(x)
            b = net.feature_extractor(x)
        diffs = {name: float((fa - b[name]).abs().max()) for fa, name in zip(a, names)}
        relative = {name: diffs[name] / max(float(b[name].abs().max()), 1e-12) for name in names}
        return {
            "backbone": backbone,
            "layers": list(layers),
            "peer_layers": names,
            "image": path,
            "max_abs_diff": diffs,
            "max_rel_diff": relative,
            "identical": max(relative.values()) <= BACKBONE_TOLERANCE,
            "tolerance": BACKBONE_TOLERANCE,
            "weights_sha256": digest,
            "ours_weights_sha256": ours.info.weights_sha256,
            "mean": ours.mean.tolist(),
            "std": ours.std.tolist(),
        }
