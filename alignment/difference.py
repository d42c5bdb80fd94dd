"""Difference (variation) model: per-pixel ideal image and spread of aligned good parts.

The open counterpart of MVTec HALCON's variation model (``create_variation_model``,
``train_variation_model``, ``prepare_variation_model``, ``compare_variation_model``):
good images are aligned to a golden template; at every pixel the model keeps an ideal
gray value ``i`` (mean, or median for the robust variant) and a variation ``v`` (standard
deviation, or 1.4826 x MAD). A test image ``c``, aligned the same way, deviates by

    z = (c - i) / (abs_tol + rel_tol * v)

so ``|z| > 1`` means "outside the tolerance". ``abs_tol`` keeps pixels that never vary
(flat areas, where ``v`` is nearly 0) from alarming on sensor noise; ``rel_tol`` widens the
band where goods legitimately vary (edges, which misregistration by a fraction of a pixel
makes vary). Bright (``z > 0``) and dark (``z < 0``) deviations can have their own
tolerances and are reported apart, in the signed map. HALCON combines the two tolerances
with ``max``; a sum is used here (it is smooth, and reduces to either term where the other
is negligible).

Reference:
    MVTec Software GmbH, HALCON Operator Reference: ``create_variation_model``,
    ``train_variation_model``, ``prepare_variation_model``, ``compare_variation_model``;
    and the HALCON Solution Guide I, chapter "Variation Model".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from alignment.aligned import AlignedDetector
from anomaly.detectors.base import hyperparameters
from anomaly.errors import InvalidParameterError

_MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
_CHUNK_VALUES = 8_000_000  # floats per statistics chunk: bounds the temporaries of median/std


@hyperparameters
class DifferenceModel(AlignedDetector):
    """Per-pixel variation model over registered good images (detector name ``difference``).

    Args:
        statistic: ``"mean"`` (mean and standard deviation, HALCON's ``'standard'``) or
            ``"robust"`` (median and 1.4826 x MAD, HALCON's ``'robust'``: a few goods with
            blemishes do not widen the tolerance).
        abs_tol: Absolute tolerance, as a fraction of full scale (0.04 is about 10 gray
            levels of 255); one number, or ``[bright, dark]``.
        rel_tol: Tolerance in units of the per-pixel spread; one number or ``[bright, dark]``.
        motion, coarse, pyramid_levels, max_side, reference_index, refine_iterations,
        quality_margin, min_overlap, illumination, color, roi, ignore_regions,
        image_size, map_sigma, random_state: Registration, masking and the map, as for
            every classical model (see :class:`~alignment.aligned.AlignedDetector`).
    """

    name = "difference"
    _model_array_names = ("ideal", "spread")

    statistic: str = "mean"
    abs_tol: float | Sequence[float] = 0.04
    rel_tol: float | Sequence[float] = 3.0

    def _check_model_params(self) -> None:
        if self.statistic not in ("mean", "robust"):
            raise InvalidParameterError(f"statistic must be 'mean' or 'robust', got {self.statistic!r}")
        abs_bright, abs_dark = _pair("abs_tol", self.abs_tol)
        rel_bright, rel_dark = _pair("rel_tol", self.rel_tol)
        if min(abs_bright, abs_dark) < 0 or min(rel_bright, rel_dark) < 0:
            raise InvalidParameterError(f"abs_tol and rel_tol must be >= 0, got {self.abs_tol} and {self.rel_tol}")
        if min(abs_bright + rel_bright, abs_dark + rel_dark) <= 0:
            raise InvalidParameterError("abs_tol and rel_tol cannot both be 0: every deviation would be infinite")

    def _fit_model(self, stack: np.ndarray) -> None:
        """Per-pixel ideal and spread of ``(N, h, w, C)`` aligned goods, a band of rows at a time."""
        n, h, w, c = stack.shape
        self.ideal_ = np.empty((h, w, c), dtype=np.float32)
        self.spread_ = np.empty((h, w, c), dtype=np.float32)
        rows = max(1, _CHUNK_VALUES // max(1, n * w * c))
        for top in range(0, h, rows):
            block = stack[:, top : top + rows]
            if self.statistic == "mean":
                ideal = block.mean(axis=0)
                spread = block.std(axis=0)
            else:
                ideal = np.median(block, axis=0)
                spread = _MAD_TO_STD * np.median(np.abs(block - ideal), axis=0)
            self.ideal_[top : top + rows] = ideal
            self.spread_[top : top + rows] = spread

    def _prepare_model(self) -> None:
        abs_bright, abs_dark = _pair("abs_tol", self.abs_tol)
        rel_bright, rel_dark = _pair("rel_tol", self.rel_tol)
        squeeze = (lambda a: np.ascontiguousarray(a[..., 0])) if self.ideal_.shape[2] == 1 else np.ascontiguousarray
        self._ideal = squeeze(self.ideal_)
        spread = squeeze(self.spread_)
        self._inv_bright = (1.0 / (abs_bright + rel_bright * spread)).astype(np.float32)
        self._symmetric = (abs_bright, rel_bright) == (abs_dark, rel_dark)
        self._inv_dark = self._inv_bright if self._symmetric else (1.0 / (abs_dark + rel_dark * spread)).astype(np.float32)

    def _deviation(self, warped: np.ndarray) -> np.ndarray:
        diff = warped - self._ideal
        if self._symmetric:
            z = diff * self._inv_bright
        else:
            z = diff * np.where(diff > 0, self._inv_bright, self._inv_dark)
        if z.ndim == 2:
            return z
        # Colour: the channel that deviates most speaks for the pixel, with its sign.
        strongest = np.nanargmax(np.abs(np.nan_to_num(z, nan=0.0)), axis=2)[..., None]
        out = np.take_along_axis(z, strongest, axis=2)[..., 0]
        return np.ascontiguousarray(out)

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"ideal": self.ideal_, "spread": self.spread_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.ideal_ = arrays["ideal"].astype(np.float32)
        self.spread_ = arrays["spread"].astype(np.float32)


def _pair(name: str, value: float | Sequence[float]) -> tuple[float, float]:
    """A tolerance as ``(bright, dark)`` from one number or a pair."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value), float(value)
    try:
        bright, dark = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a number or [bright, dark], got {value!r}") from None
    return bright, dark
