"""Loaded models of one worker: production versions loaded once, reloaded after a promotion.

Every request asks the store which version is in production (a small JSON file, read
per request, so a promotion or rollback made by any worker or by ``anomaly models`` is
seen at once) and gets the bundle of that version from a small cache; versions are
immutable, so a cached bundle never goes stale. A version not in the cache is loaded
(once, under a lock) and the least recently used ones beyond the cap are dropped.

``anomaly.bundle`` is imported here only when a bundle is loaded: deep detectors bring
torch in with them, the service's request handling does not. Over a deploy store
(``anomaly serve --runtime onnx``) the loaded models are exports, scored by onnxruntime.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from anomaly.drift import DriftReference
from anomaly.errors import AnomalyError, InvalidParameterError, ModelNotFoundError
from anomaly.store import ModelStore, check_model_name
from service.errors import ModelNotReadyError

if TYPE_CHECKING:
    from anomaly.bundle import Bundle

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A bundle loaded in this worker.

    Attributes:
        name: Model name.
        version: Version number.
        bundle: The loaded bundle.
        load_seconds: How long loading (and warming up) took.
        loaded_at: ``time.time()`` when it was loaded.
    """

    name: str
    version: int
    bundle: "Bundle"
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)

    @property
    def thresholds(self) -> dict[str, Any]:
        cal = self.bundle.calibration
        return {"t_review": cal.t_review, "t_ng": cal.t_ng, "pixel_threshold": cal.pixel_threshold,
                "method": cal.method}

    @property
    def detector(self) -> str:
        return str(self.bundle.manifest.get("detector", ""))

    @functools.cached_property
    def drift_reference(self) -> DriftReference | None:
        """What its calibration expects of good parts (:mod:`anomaly.drift`), ``None`` if uncalibrated."""
        return DriftReference.from_calibration(self.bundle.calibration)


class ModelRegistry:
    """Per-worker cache of loaded bundles over a :class:`~anomaly.store.ModelStore`.

    Args:
        store: The model store.
        max_loaded: How many bundles to keep loaded at most.
        warmup: Run one inference on a blank image after loading (the first call of a
            deep model is several times slower than the next ones).
    """

    def __init__(self, store: ModelStore, *, max_loaded: int = 8, warmup: bool = True) -> None:
        self.store = store
        self.max_loaded = max(1, int(max_loaded))
        self.warmup = warmup
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self._errors: dict[str, str] = {}

    def resolve_version(self, name: str, version: int | None = None) -> int:
        """The version a request for ``name`` (and optional ``version``) means.

        Raises:
            ModelNotFoundError: unknown name or version.
            ModelNotReadyError: the model has versions but none in production.
        """
        try:
            check_model_name(name)
        except InvalidParameterError:
            raise ModelNotFoundError(f"no model named {name!r}") from None
        versions = self.store.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no model named {name!r} in the store")
        if version is None:
            production = self.store.production(name)
            if production is None:
                raise ModelNotReadyError(f"model {name!r} has no production version yet; publish one of {versions}")
            return int(production)
        if int(version) not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version}; versions: {versions}")
        return int(version)

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The loaded bundle for ``name`` at ``version`` (default: production), loading it if needed.

        A bundle being loaded blocks only the requests that need that bundle.
        """
        resolved = self.resolve_version(name, version)
        key = (name, resolved)
        with self._lock:
            loaded = self._cache.get(key)
            if loaded is not None:
                self._cache.move_to_end(key)
                return loaded
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                loaded = self._cache.get(key)
            if loaded is None:
                loaded = self._load(name, resolved)
                with self._lock:
                    self._cache[key] = loaded
                    self._loading.pop(key, None)
                    while len(self._cache) > self.max_loaded:
                        old, _ = self._cache.popitem(last=False)
                        log.info("unloaded %s version %s (cache full)", *old)
        return loaded

    def _load(self, name: str, version: int) -> LoadedModel:
        start = time.perf_counter()
        # A bundle, or an export when the store is a deploy store (anomaly.runtime.store).
        bundle = self.store.load(name, version)
        if self.warmup:
            self._warm_up(bundle)
        seconds = time.perf_counter() - start
        log.info("loaded model %s version %s in %.2f s", name, version, seconds)
        return LoadedModel(name, version, bundle, seconds)

    @staticmethod
    def _warm_up(bundle: "Bundle") -> None:
        from anomaly.inspect import inspect

        size = (bundle.manifest.get("params") or {}).get("image_size") or 256
        height, width = (size, size) if isinstance(size, (int, float)) else (size[0], size[1])
        blank = np.full((int(height), int(width), 3), 128, np.uint8)
        try:
            inspect(bundle, [blank])
        except AnomalyError:  # e.g. a blank image cannot be aligned: warm enough
            pass

    def preload(self) -> dict[str, str]:
        """Load the production version of every model; returns ``{name: error}`` for failures."""
        errors: dict[str, str] = {}
        for name in self.store.names():
            if self.store.production(name) is None:
                continue
            try:
                self.get(name)
            except AnomalyError as exc:
                errors[name] = f"{exc.code}: {exc}"
                log.error("could not load model %s: %s", name, exc)
        self._errors = errors
        return errors

    def readiness(self) -> dict[str, Any]:
        """Which production models load here (loading the missing ones now), and whether the worker can serve.

        Ready when at least one production model loads, or none exists yet: one model that fails
        to load is listed in ``errors`` without taking the others out of service.
        """
        models, errors = [], {}
        for name in self.store.names():
            production = self.store.production(name)
            if production is None:
                continue
            try:
                loaded = self.get(name)
                models.append({"name": name, "version": loaded.version, "detector": loaded.detector,
                               "load_seconds": round(loaded.load_seconds, 3)})
            except AnomalyError as exc:
                errors[name] = f"{exc.code}: {exc}"
        return {"ready": bool(models) or not errors, "models": models, "errors": errors}

    def loaded(self) -> list[tuple[str, int]]:
        """(name, version) of every bundle loaded in this worker."""
        with self._lock:
            return list(self._cache)
