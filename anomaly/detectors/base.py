"""The one detector interface every model follows (see ARCHITECTURE.md).

In the spirit of scikit-learn estimators: the constructor stores its keyword-only
hyper-parameters unchanged, validation happens in ``fit``, learned state ends in ``_``,
``fit`` returns ``self``. Unlike scikit-learn's outlier scores, ours are
**higher = more anomalous**, for image scores and for every pixel of the maps.

Hyper-parameters are declared one way for every detector: as annotated class attributes
with defaults, the class decorated with :func:`hyperparameters` (a keyword-only dataclass
``__init__``). A base class may declare the ones its subclasses share; a subclass adds its
own and may redeclare an inherited one to change its default. Those fields are the
parameters: :meth:`Detector.param_names`, :meth:`Detector.get_params` and the bundle's
manifest list exactly them. Fixed choices that are not parameters are ``ClassVar``.
Checking a value (``_validate_params``) never builds a backbone or reads weight files, so
:func:`anomaly.detectors.registry.check_params` can answer before any training.

Persistence is split so that the bundle code stays generic and pickle-free: a detector
writes its learned state into a folder (``_save_state``: ``.npz`` arrays, faiss indexes,
torch state dicts) and returns a small JSON-able dict; ``_load_state`` reads it back.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence, TypeVar

import numpy as np

from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError, NotFittedError
from anomaly.imageio import DEFAULT_MAX_PIXELS, ImageLike, as_image
from anomaly.jsonable import jsonable


@dataclass
class AnomalyResult:
    """Scores and maps for a batch of images.

    Attributes:
        scores: ``(N,)`` float64 image scores, higher = more anomalous.
        maps: N float32 anomaly maps, map ``i`` of shape ``(H_i, W_i)``: the resolution of
            input image ``i`` (images in one call may differ in size).
        extras: Optional named per-image arrays a detector offers beside the map (for
            example the classical models' signed deviation, for polarity); each of
            length N.
    """

    scores: np.ndarray
    maps: list[np.ndarray]
    extras: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if len(self.maps) != len(self.scores):
            raise ValueError(f"{len(self.scores)} scores but {len(self.maps)} maps")

    def __len__(self) -> int:
        return len(self.scores)


_ItemT = TypeVar("_ItemT")
_ResultT = TypeVar("_ResultT")


def batch_or_each(call: Callable[[list[_ItemT]], Sequence[_ResultT]],
                  items: Sequence[_ItemT]) -> list[_ResultT | AlignmentError]:
    """One result per item of a batched call, with the parts it cannot align singled out.

    ``call`` runs on the whole batch; only if it raises :class:`AlignmentError` (a classical
    model that could not align one of the parts) is it run again item by item, so each
    part refused is told apart from the others, which keep their results.

    Args:
        call: Takes a list of items, returns one result per item.
        items: The batch.

    Returns:
        Per item, its result or the :class:`AlignmentError` it raised alone.
    """
    items = list(items)
    try:
        return list(call(items))
    except AlignmentError as exc:
        if len(items) == 1:
            return [exc]
    out: list[_ResultT | AlignmentError] = []
    for item in items:
        try:
            out.extend(call([item]))
        except AlignmentError as one:
            out.append(one)
    return out


_DetectorT = TypeVar("_DetectorT", bound="Detector")


def hyperparameters(cls: type[_DetectorT]) -> type[_DetectorT]:
    """Class decorator: a keyword-only ``__init__`` that stores the class's hyper-parameters.

    Every detector is declared with it (see the module docstring). Each class declares
    its own as annotated class attributes with defaults; a subclass adds its own and may
    redeclare an inherited one to change its default. :mod:`dataclasses` writes the
    constructor, which stores every value unchanged (validation stays in ``fit``); the
    detector keeps identity equality, hashing and :meth:`Detector.__repr__`. Non-parameter
    class attributes must be annotated ``ClassVar`` (or not annotated).
    """
    return dataclasses.dataclass(kw_only=True, eq=False, repr=False)(cls)


class Detector(abc.ABC):
    """Base class of every anomaly detector.

    Subclasses set ``name``, declare their hyper-parameters with :func:`hyperparameters`,
    and implement ``_fit``, ``_score`` and the state hooks.
    """

    name: ClassVar[str] = ""
    #: Whether this detector computes deep features (and so needs torch and a backbone).
    uses_backbone: ClassVar[bool] = False

    # -- scikit-learn style parameters -------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the hyper-parameters, in declaration order.

        Raises:
            InvalidParameterError: the class does not declare them with :func:`hyperparameters`.
        """
        if not dataclasses.is_dataclass(cls):
            raise InvalidParameterError(f"{cls.__name__} must declare its hyper-parameters with @hyperparameters")
        return [f.name for f in dataclasses.fields(cls)]

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given to the constructor (JSON-able: tuples become lists)."""
        return {name: jsonable(getattr(self, name)) for name in self.param_names()}

    def check_params(self) -> dict[str, Any]:
        """Check the hyper-parameters' values without fitting: no backbone built, no weights read.

        Returns:
            :meth:`get_params`.

        Raises:
            InvalidParameterError: a bad value, saying which (a value of the wrong type too).
        """
        try:
            self._validate_params()
        except InvalidParameterError:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"{self.name or type(self).__name__}: a parameter has a value of the "
                                        f"wrong kind ({exc}); parameters: {self.get_params()}") from None
        return self.get_params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- public API --------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]) -> "Detector":
        """Learn what good parts look like.

        Args:
            images: GOOD images only: arrays ``(H, W)``/``(H, W, 3)`` (uint8/uint16, RGB),
                file paths, or encoded bytes.

        Returns:
            self.
        """
        self.check_params()
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__"):
            raise InvalidImageError("fit expects a sequence of images (arrays, paths or bytes)")
        if len(images) == 0:
            raise InvalidImageError("fit needs at least one good image, got none")
        self._fit(images)
        self.fitted_ = True
        return self

    def score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        """Score images; each score depends on that image alone.

        Args:
            images: Arrays, paths or bytes, as for :meth:`fit`.

        Returns:
            An :class:`AnomalyResult` with ``(N,)`` scores and N maps at input resolution.

        Raises:
            NotFittedError: before :meth:`fit`.
            InvalidImageError: unreadable input or an image of the wrong kind.
        """
        self.check_fitted()
        if isinstance(images, (str, bytes, np.ndarray)):
            images = [images]
        if len(images) == 0:
            return AnomalyResult(scores=np.zeros(0), maps=[])
        return self._score(images)

    def extend(self, images: Sequence[ImageLike]) -> "Detector":
        """Learn from more good images without the ones it was fitted on (where the model allows).

        The result is what :meth:`fit` on all of them would give, or a stated approximation
        of it (each model says which). Models that cannot (the default) refuse.

        Raises:
            NotFittedError: before :meth:`fit`.
            InvalidParameterError: the model cannot add goods: fit it again on all of them.
            InvalidImageError: unreadable input.
        """
        self.check_fitted()
        if isinstance(images, (str, bytes, np.ndarray)) or not hasattr(images, "__len__") or len(images) == 0:
            raise InvalidImageError("extend expects a non-empty sequence of good images (arrays, paths or bytes)")
        self._extend(images)
        return self

    def _extend(self, images: Sequence[ImageLike]) -> None:
        raise InvalidParameterError(f"{self.name} cannot add good images to a fitted model: fit it again on all "
                                    "of them (onboard again with every good)")

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless the detector has been fitted."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(good_images) or load a bundle first")

    # -- subclass hooks ------------------------------------------------------------------
    def _validate_params(self) -> None:
        """Check hyper-parameters; raise ``InvalidParameterError`` on a bad value.

        Must not build a backbone or read weight files (see :meth:`check_params`); what
        depends on the backbone is checked where it is built.
        """

    @abc.abstractmethod
    def _fit(self, images: Sequence[ImageLike]) -> None: ...

    @abc.abstractmethod
    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult: ...

    @abc.abstractmethod
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write learned state into ``directory``; return JSON-able metadata."""

    @abc.abstractmethod
    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        """Restore learned state written by :meth:`_save_state`."""

    def backbone_info(self) -> dict[str, Any] | None:
        """What the bundle records about a deep backbone; ``None`` for classical models."""
        return None

    def training_meta(self) -> dict[str, Any]:
        """Facts about the last fit worth keeping in the manifest (random choices, sizes)."""
        return {}


def load_images(images: Iterable[ImageLike], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """Decode a sequence of arrays, paths or bytes with the shared loader."""
    return [as_image(image, max_pixels=max_pixels) for image in images]
