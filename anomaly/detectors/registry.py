"""Detectors found by name.

Built-in detectors are listed by import path and imported only when asked for, so that
the classical models and the service start without importing torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from anomaly.detectors.base import Detector
from anomaly.errors import InvalidParameterError, UnknownDetectorError

_BUILTIN: dict[str, str] = {
    "patchcore": "anomaly.detectors.patchcore:PatchCore",
    "padim": "anomaly.detectors.padim:PaDiM",
    "difference": "alignment.difference:DifferenceModel",
    "gmm": "alignment.gmm:PixelGMM",
    "discriminator": "anomaly.detectors.discriminator:FeatureDiscriminator",
    "ganomaly": "anomaly.detectors.ganomaly:GANomaly",
    "skip-ganomaly": "anomaly.detectors.ganomaly:SkipGANomaly",
}
_EXTRA: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator registering a detector under its ``name`` (for plug-ins and tests).

    Raises:
        InvalidParameterError: no name, or hyper-parameters not declared with
            :func:`~anomaly.detectors.base.hyperparameters`.
    """
    if not cls.name:
        raise InvalidParameterError(f"{cls.__name__} has no name to register under")
    cls.param_names()  # refuses a class whose parameters are not declared with @hyperparameters
    _EXTRA[cls.name] = cls
    return cls


def available_detectors() -> list[str]:
    """Names of the detectors that can be imported here (modules present)."""
    names = []
    for name, target in _BUILTIN.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module.split(".")[0]) is not None and _module_exists(module):
            names.append(name)
    return sorted(set(names) | set(_EXTRA))


def get_detector_class(name: str) -> type[Detector]:
    """The detector class registered under ``name``.

    Raises:
        UnknownDetectorError: listing the known names.
    """
    if name in _EXTRA:
        return _EXTRA[name]
    target = _BUILTIN.get(name)
    if target is None or not _module_exists(target.split(":")[0]):
        raise UnknownDetectorError(
            f"unknown detector {name!r}; known detectors: {', '.join(available_detectors())}"
        )
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create_detector(name: str, params: dict[str, Any] | None = None) -> Detector:
    """Construct a detector by name from a dict of hyper-parameters (values checked by ``fit``).

    Raises:
        UnknownDetectorError: unknown name.
        InvalidParameterError: a parameter the detector does not take (no silent typos).
    """
    cls = get_detector_class(name)
    params = dict(params or {})
    allowed = set(cls.param_names())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidParameterError(
            f"{name} does not take parameter(s) {', '.join(unknown)}; it takes: {', '.join(sorted(allowed))}"
        )
    return cls(**params)


def check_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check hyper-parameters for a detector before any training: names and values.

    Nothing is fitted, no backbone is built and no weight file is read (importing the
    detector's module may import torch).

    Args:
        name: Registry name.
        params: Hyper-parameters; those left out take their defaults.

    Returns:
        Every hyper-parameter, defaults filled in, JSON-able: what the detector's
        ``get_params()`` and a bundle's manifest will hold.

    Raises:
        UnknownDetectorError: unknown name, listing the known ones.
        InvalidParameterError: a parameter the detector does not take (listing those it
            takes), or a bad value.
    """
    return create_detector(name, params).check_params()


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
