"""Judge parts: decode each image and inspect it with a model, while holding a scoring slot.

Nothing is stored here: judging is the first step of :func:`service.scoring.score_parts`,
and its judgements are recorded (:mod:`service.recording`) only once every part of the
request has been decoded and judged.

A part that cannot be aligned to its template (:class:`anomaly.errors.AlignmentError`)
is a judgement too: it is recorded with the verdict ``ALIGNMENT_FAILED``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from anomaly.detectors.base import batch_or_each
from anomaly.errors import AlignmentError
from anomaly.imageio import decode_image
from service.errors import ServiceBusyError
from service.registry import LoadedModel

if TYPE_CHECKING:
    from anomaly.inspect import Inspection

ALIGNMENT_FAILED = "ALIGNMENT_FAILED"


@dataclass
class Part:
    """One part to judge: the encoded image and the line's id for it."""

    data: bytes
    part_id: str | None = None


@dataclass(frozen=True)
class Judgement:
    """What judging one part gave, before it is recorded: its inspection, or why there is none.

    Exactly one of ``inspection`` and ``error`` is set.

    Attributes:
        image: The decoded image, ``(H, W)`` or ``(H, W, 3)`` RGB, uint8 or uint16.
        inspection: What :func:`anomaly.inspect.inspect` answered for the part (verdict,
            scores, the ``(H, W)`` float anomaly map of the image, regions); None if it could not be aligned.
        error: Why the part could not be aligned; None if it was inspected.
    """

    image: np.ndarray
    inspection: Inspection | None = None
    error: AlignmentError | None = None

    @property
    def verdict(self) -> str:
        """``GOOD``, ``REVIEW`` or ``NG`` from the inspection, or ``ALIGNMENT_FAILED``."""
        return ALIGNMENT_FAILED if self.inspection is None else self.inspection.verdict

    @property
    def amap(self) -> np.ndarray | None:
        """The inspection's ``(H, W)`` float anomaly map; None without an inspection."""
        return None if self.inspection is None else self.inspection.map


@dataclass(frozen=True)
class Judged:
    """A request's judgements and what judging them cost.

    Attributes:
        judgements: One per part, in the parts' order.
        decode_seconds: Time to decode all the parts' images.
        inference_seconds: Time to inspect them all.
    """

    judgements: list[Judgement]
    decode_seconds: float
    inference_seconds: float

    @property
    def decode_ms_each(self) -> float:
        """Decoding time per part in milliseconds (the request's share, not measured part by part)."""
        return self.decode_seconds * 1000 / len(self.judgements)

    @property
    def inference_ms_each(self) -> float:
        """Inference time per part in milliseconds (the parts are inspected as one batch)."""
        return self.inference_seconds * 1000 / len(self.judgements)


@contextlib.contextmanager
def scoring_slot(app: Any) -> Iterator[None]:
    """Hold one of the worker's scoring slots (``SCORING_SLOTS``) while parts are decoded and judged.

    Raises:
        ServiceBusyError: none came free within ``SCORING_WAIT_SECONDS`` (503 with Retry-After).
    """
    slots = app.extensions["anomaly_scoring_slots"]
    wait = float(app.config["SCORING_WAIT_SECONDS"])
    if not slots.acquire(timeout=wait):
        raise ServiceBusyError(f"this worker judged other parts for the last {wait:g} s; retry (Retry-After)")
    try:
        yield
    finally:
        slots.release()


def judge(model: LoadedModel, parts: Sequence[Part], *, max_pixels: int, max_bytes: int) -> Judged:
    """Decode every part's image, then inspect them all as one batch.

    Every image is decoded before any is inspected, so that one bad image refuses the
    whole request before the model spends time on the others.

    Args:
        model: The loaded model to judge with.
        parts: The parts, in order (at least one).
        max_pixels: Largest image accepted, in pixels.
        max_bytes: Largest encoded image accepted, in bytes.

    Returns:
        One judgement per part, with the time decoding and inference took.

    Raises:
        InvalidImageError, ImageTooLargeError: a part's image (400, 413).
    """
    from anomaly.inspect import inspect

    start = time.perf_counter()
    images = [decode_image(part.data, max_pixels=max_pixels, max_bytes=max_bytes,
                           label="image" if len(parts) == 1 else f"image {i}") for i, part in enumerate(parts)]
    decoded = time.perf_counter()
    # The parts of the batch that could not be aligned, told apart from the others.
    results = batch_or_each(lambda batch: inspect(model.bundle, batch), images)
    judgements = [Judgement(image, error=result) if isinstance(result, AlignmentError)
                  else Judgement(image, inspection=result) for image, result in zip(images, results)]
    return Judged(judgements, decoded - start, time.perf_counter() - decoded)


def map_scale(model: LoadedModel, amap: np.ndarray) -> tuple[float, float]:
    """The model's fixed colour scale for an ``(H, W)`` anomaly map: ``(low, high)``.

    From the good-map level to twice the pixel threshold
    (:meth:`anomaly.calibration.Calibration.colour_scale`), the same for every part, so a
    map answered or stored means the same whichever part it came from.
    """
    low, high, _ = model.bundle.calibration.colour_scale(amap)
    return low, high
