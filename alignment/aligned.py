"""What the classical models share: align to a golden template, compare per pixel, map back.

:class:`AlignedDetector` runs the pipeline of MVTec HALCON's variation model around a
per-pixel statistic that a subclass supplies:

fit:   check the goods (one size, one channel count) -> learn exposure limits ->
       build the golden template and align the goods to it -> learn the alignment
       quality threshold -> (optional) gain/offset correction -> subclass statistics.
score: check the image (size, channels, exposure) -> register -> refuse a bad
       alignment (:class:`AlignmentError`) -> subclass deviation, signed (bright > 0,
       dark < 0) -> ROI/ignore mask, smoothing -> warp the map back to the image.

Every image is scored on its own, against state learned at fit time only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np

from alignment.exposure import ExposureLimits, check_exposure
from alignment.masks import check_rect, region_mask
from alignment.coarse import COARSE_METHODS
from alignment.registration import RegistrationOptions, estimate_transform
from alignment.transforms import MOTIONS
from alignment.warp import as_gray, to_unit_float, warp_native, warp_to_image
from alignment.template import build_template, quality_threshold
from anomaly.arrays import load_arrays, save_arrays
from anomaly.detectors.base import AnomalyResult, Detector, hyperparameters, load_images
from anomaly.errors import AlignmentError, InvalidImageError, InvalidParameterError
from anomaly.imageio import ImageLike

STATE_FILE = "state.npz"
_MIN_COVERAGE = 0.5  # pixels that fewer goods than this covered are not judged
_IDENTITY = np.eye(3)


@hyperparameters
class AlignedDetector(Detector):
    """Base of :class:`~alignment.difference.DifferenceModel` and :class:`~alignment.gmm.PixelGMM`.

    Holds the hyper-parameters of registration, masking and the map, which every
    classical model takes (below). Subclasses are declared with
    :func:`~anomaly.detectors.base.hyperparameters` and add their own as annotated
    class attributes (the keyword-only constructor, which the registry reads, then takes
    both), and implement :meth:`_fit_model`, :meth:`_deviation`, :meth:`_model_arrays`,
    :meth:`_set_model_arrays` and, if they have parameters of their own,
    :meth:`_check_model_params`.

    Args:
        motion: Registration model: ``"translation"``, ``"rigid"``, ``"similarity"``,
            ``"affine"``, ``"homography"``, or ``"none"`` for images that are already
            aligned (textures: there is nothing to align).
        coarse: Initial estimate before ECC: ``"phase"``, ``"log_polar"``, ``"orb"``,
            ``"akaze"`` or ``"none"`` (see :func:`alignment.registration.register`).
        pyramid_levels: ECC pyramid levels.
        max_side: Longest side of the finest ECC level (speed against precision).
        reference_index: Good image the template starts from; ``None`` picks the one
            closest to the median of the goods.
        refine_iterations: Rounds of "align, average" refining the template.
        quality_margin: An image whose alignment quality falls below ``1 - quality_margin
            x (worst good's shortfall)`` raises :class:`~anomaly.errors.AlignmentError`.
        min_overlap: Least fraction of the template that must lie inside the image.
        illumination: ``"none"`` or ``"gain_offset"`` (undo a global change of light).
        color: Model the three colour channels separately (for RGB images); otherwise gray.
        roi: ``(x, y, width, height)`` to inspect, in template pixels; ``None`` = all.
        ignore_regions: Rectangles ``(x, y, width, height)`` that vary legitimately.
        image_size: ``None`` (images must all have the template's size) or a size
            ``int`` / ``(height, width)`` every image is resized to first.
        map_sigma: Gaussian smoothing of the anomaly map, in pixels (0 = none).
        random_state: Seed of RANSAC sampling when ``coarse`` is a feature method (and of
            whatever a subclass draws at random).
    """

    motion: str = "rigid"
    coarse: str = "phase"
    pyramid_levels: int = 2
    max_side: int = 256
    reference_index: int | None = None
    refine_iterations: int = 1
    quality_margin: float = 10.0
    min_overlap: float = 0.9
    illumination: str = "none"
    color: bool = False
    roi: Sequence[int] | None = None
    ignore_regions: Sequence[Sequence[int]] = ()
    image_size: int | Sequence[int] | None = None
    map_sigma: float = 1.0
    random_state: int = 0

    # -- subclass hooks -------------------------------------------------------------------
    def _check_model_params(self) -> None:
        """Raise :class:`InvalidParameterError` on a bad model-specific parameter."""

    def _fit_model(self, stack: np.ndarray) -> None:
        """Learn per-pixel statistics from ``(N, h, w, C)`` float32 aligned goods (no NaN)."""
        raise NotImplementedError

    def _prepare_model(self) -> None:
        """Derive fast-path arrays from the learned state (after fit and after load)."""

    def _deviation(self, warped: np.ndarray) -> np.ndarray:
        """Signed deviation ``(h, w)`` float32 of an aligned image (``(h, w)`` or ``(h, w, 3)``).

        Positive where the image is brighter than what goods showed, negative where
        darker. Its absolute value is the anomaly map.
        """
        raise NotImplementedError

    def _model_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    _model_array_names: ClassVar[tuple[str, ...]] = ()

    # -- parameters ------------------------------------------------------------------------
    def _validate_params(self) -> None:
        if self.motion != "none" and self.motion not in MOTIONS:
            raise InvalidParameterError(f"motion must be 'none' or one of {', '.join(MOTIONS)}; got {self.motion!r}")
        if self.coarse not in COARSE_METHODS:
            raise InvalidParameterError(f"coarse must be one of {', '.join(COARSE_METHODS)}; got {self.coarse!r}")
        if self.illumination not in ("none", "gain_offset"):
            raise InvalidParameterError(f"illumination must be 'none' or 'gain_offset', got {self.illumination!r}")
        if not 0.0 < float(self.min_overlap) <= 1.0:
            raise InvalidParameterError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        if not float(self.map_sigma) >= 0.0:
            raise InvalidParameterError(f"map_sigma must be >= 0, got {self.map_sigma}")
        if self.roi is not None:
            check_rect(self.roi, name="roi")
        for index, rect in enumerate(self.ignore_regions or ()):
            check_rect(rect, name=f"ignore_regions[{index}]")
        self._frame_size()
        self._options = None if self.motion == "none" else RegistrationOptions(
            motion=self.motion,
            coarse=self.coarse,
            levels=int(self.pyramid_levels),
            max_side=int(self.max_side),
            random_state=int(self.random_state),
        )
        if self._options is not None:
            quality_threshold(np.ones(1), margin=float(self.quality_margin))  # validates the margin
        self._check_model_params()

    def _frame_size(self) -> tuple[int, int] | None:
        """``(h, w)`` every image is resized to, or ``None`` to keep the native size."""
        size = self.image_size
        if size is None:
            return None
        values = [size, size] if isinstance(size, (int, np.integer)) else list(size)
        try:
            h, w = (int(v) for v in values)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"image_size must be None, an int or (height, width), got {size!r}") from None
        if min(h, w) < 16 or max(h, w) > 8192:
            raise InvalidParameterError(f"image_size must be between 16 and 8192 pixels, got {size!r}")
        return h, w

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, images: Sequence[ImageLike]) -> None:
        decoded = load_images(images)
        if not self.color:
            decoded = [gray_if_neutral(image) for image in decoded]
        first = decoded[0]
        names = [_good_name(source, index) for index, source in enumerate(images)]
        for index, image in enumerate(decoded[1:], start=1):
            if _channels(image) != _channels(first):
                raise InvalidImageError(
                    f"{names[index]} has {_channels(image)} channel(s) (shape {image.shape}), {names[0]} has "
                    f"{_channels(first)} (shape {first.shape}); all good images must have one channel count"
                )
            if self.image_size is None and image.shape[:2] != first.shape[:2]:
                raise InvalidImageError(
                    f"{names[index]} is {image.shape[1]} x {image.shape[0]} pixels, {names[0]} is "
                    f"{first.shape[1]} x {first.shape[0]}; give image_size to resize them to one size"
                )
        frames = [self._resize(image) for image in decoded]
        del decoded
        grays = [as_gray(frame) for frame in frames]
        self.exposure_ = ExposureLimits.learn(grays)
        aligned = build_template(
            frames,
            grays,
            color=bool(self.color),
            options=self._options,
            reference_index=self.reference_index,
            refine_iterations=int(self.refine_iterations),
            names=names,
        )
        del frames, grays
        stack = aligned.stack
        h, w, channels = stack.shape[1:]
        valid = np.isfinite(stack[..., 0])
        counts = valid.sum(axis=0)
        self.coverage_ = counts >= max(1, int(np.ceil(_MIN_COVERAGE * len(stack))))
        # Pixels a good did not cover are filled with the mean of those that did, so they
        # add no spread; pixels most goods missed are masked out by coverage_ anyway.
        np.nan_to_num(stack, copy=False, nan=0.0)
        mean = stack.sum(axis=0) / np.maximum(counts, 1)[..., None]
        for index in range(len(stack)):
            missing = ~valid[index]
            if missing.any():
                stack[index][missing] = mean[missing]
        self.template_ = aligned.template
        self.frame_shape_ = (int(h), int(w))
        self.input_channels_ = _channels(first)
        self.model_channels_ = int(channels)
        self.reference_index_ = int(aligned.reference_index)
        self.good_qualities_ = np.asarray(aligned.qualities, dtype=np.float64)
        self.good_matrices_ = np.asarray(aligned.matrices, dtype=np.float64)
        self.quality_threshold_ = (
            quality_threshold(self.good_qualities_, margin=float(self.quality_margin)) if self._options else 0.0
        )
        self._pyramid = aligned.pyramid
        self._prepare_frame()
        if self.illumination == "gain_offset":
            for index in range(len(stack)):
                stack[index] = _correct_gain_offset(stack[index], self.template_, self._mask)
        self._fit_model(stack)
        self._prepare_model()

    def _prepare_frame(self) -> None:
        """Mask and registration pyramid from the learned template (after fit and load)."""
        roi_mask = region_mask(self.frame_shape_, roi=self.roi, ignore_regions=self.ignore_regions or ())
        self._mask = (roi_mask & self.coverage_).astype(np.float32)
        if self._options is not None and getattr(self, "_pyramid", None) is None:
            self._pyramid = self._options.prepare(self.template_)

    # -- score -----------------------------------------------------------------------------
    def _score(self, images: Sequence[ImageLike]) -> AnomalyResult:
        scores, maps, signed = [], [], []
        for source in images:
            image = load_images([source])[0]
            score, amap, smap = self.score_array(image)
            scores.append(score)
            maps.append(amap)
            signed.append(smap)
        return AnomalyResult(scores=np.asarray(scores), maps=maps, extras={"signed": signed})

    def score_array(self, image: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Score one decoded image.

        Args:
            image: Canonical ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 image (see
                :func:`anomaly.imageio.as_image`).

        Returns:
            ``(score, map, signed)``: the image score, the ``(H, W)`` float32 anomaly map
            (deviation in units of the tolerance, >= 0) and the same with the sign of the
            deviation (bright > 0, dark < 0), both in the image's own coordinates.

        Raises:
            InvalidImageError: wrong channel count or size, blank or saturated image.
            AlignmentError: the part could not be found or aligned, or lies partly
                outside the field of view.
        """
        self.check_fitted()
        if not self.color and self.input_channels_ == 1:
            image = gray_if_neutral(image)
        self._check_input(image)
        frame = self._resize(image)
        gray = as_gray(frame)
        check_exposure(gray, self.exposure_)
        source = frame if self.model_channels_ == 3 else gray
        mask = self._mask
        if self._options is None:
            warped, matrix = to_unit_float(source), _IDENTITY
        else:
            found = estimate_transform(source, self._pyramid, options=self._options)
            self._check_registration(found.quality, found.overlap)
            matrix = found.matrix
            native, inside = warp_native(source, matrix, self.frame_shape_)
            warped = to_unit_float(native)
            if inside is not None:
                # Template pixels the image does not show cannot be judged.
                mask = mask * inside
        if self.illumination == "gain_offset":
            warped = _correct_gain_offset(warped, self.template_, mask)
        deviation = self._deviation(warped)
        amap = np.abs(deviation)
        amap *= mask
        if float(self.map_sigma) > 0:
            amap = cv2.GaussianBlur(amap, _kernel_size(float(self.map_sigma)), float(self.map_sigma))
        score = float(amap.max())
        smap = np.copysign(amap, deviation)
        # One warp back serves both maps: |warp(signed)| equals warp(|signed|) except
        # where neighbouring pixels change sign, and there both are near 0.
        smap = warp_to_image(smap, matrix, frame.shape[:2])
        if frame.shape[:2] != image.shape[:2]:
            smap = cv2.resize(smap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
        return score, np.abs(smap), smap

    def _check_input(self, image: np.ndarray) -> None:
        if _channels(image) != self.input_channels_:
            kind = "an RGB (H, W, 3)" if self.input_channels_ == 3 else "a gray (H, W)"
            raise InvalidImageError(
                f"expected {kind} image like the good images this model was trained on, got shape {image.shape}"
            )
        if self.image_size is None and tuple(image.shape[:2]) != tuple(self.frame_shape_):
            h, w = self.frame_shape_
            raise InvalidImageError(
                f"expected an image of {w} x {h} pixels (the template's size), got {image.shape[1]} x "
                f"{image.shape[0]}; train with image_size set to score images of other sizes"
            )

    def _check_registration(self, quality: float, overlap: float) -> None:
        if not quality >= self.quality_threshold_:
            q = self.good_qualities_
            raise AlignmentError(
                f"part not found / could not align: alignment quality {quality:.3f} is below the threshold "
                f"{self.quality_threshold_:.3f} learned from the good images (they reached {q.min():.3f} to {q.max():.3f})"
            )
        if overlap < float(self.min_overlap):
            raise AlignmentError(
                f"part outside the field of view: only {overlap:.0%} of the template lies inside the image, "
                f"at least {float(self.min_overlap):.0%} is required"
            )

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self._frame_size()
        if size is None or tuple(image.shape[:2]) == size:
            return image
        h, w = size
        interpolation = cv2.INTER_AREA if (h < image.shape[0] or w < image.shape[1]) else cv2.INTER_LINEAR
        return cv2.resize(image, (w, h), interpolation=interpolation)

    # -- persistence -----------------------------------------------------------------------
    def _save_state(self, directory: Path) -> dict[str, Any]:
        arrays = {
            "template": self.template_,
            "coverage": self.coverage_.astype(np.uint8),
            "good_qualities": self.good_qualities_,
            "good_matrices": self.good_matrices_,
        }
        for name, value in self._model_arrays().items():
            arrays[f"model_{name}"] = value
        save_arrays(Path(directory) / STATE_FILE, arrays)
        return {
            "file": STATE_FILE,
            "frame_shape": list(self.frame_shape_),
            "input_channels": self.input_channels_,
            "model_channels": self.model_channels_,
            "reference_index": self.reference_index_,
            "quality_threshold": self.quality_threshold_,
            "exposure": self.exposure_.to_dict(),
        }

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        self._validate_params()
        names = ["template", "coverage", "good_qualities", "good_matrices"]
        names += [f"model_{n}" for n in self._model_array_names]
        arrays = load_arrays(Path(directory) / meta.get("file", STATE_FILE), names)
        self.template_ = arrays["template"].astype(np.float32)
        self.coverage_ = arrays["coverage"].astype(bool)
        self.good_qualities_ = arrays["good_qualities"]
        self.good_matrices_ = arrays["good_matrices"]
        self.frame_shape_ = tuple(int(v) for v in meta["frame_shape"])
        self.input_channels_ = int(meta["input_channels"])
        self.model_channels_ = int(meta["model_channels"])
        self.reference_index_ = int(meta["reference_index"])
        self.quality_threshold_ = float(meta["quality_threshold"])
        self.exposure_ = ExposureLimits.from_dict(meta["exposure"])
        self._set_model_arrays({n: arrays[f"model_{n}"] for n in self._model_array_names})
        self._pyramid = None
        self._prepare_frame()
        self._prepare_model()

    def training_meta(self) -> dict[str, Any]:
        q = getattr(self, "good_qualities_", None)
        return {
            "reference_index": getattr(self, "reference_index_", None),
            "random_state": self.random_state,
            "quality_threshold": getattr(self, "quality_threshold_", None),
            "good_quality_min": None if q is None else float(q.min()),
            "good_quality_median": None if q is None else float(np.median(q)),
            "n_images": None if q is None else int(len(q)),
            "frame_shape": list(getattr(self, "frame_shape_", ()) or []),
        }


def _kernel_size(sigma: float) -> tuple[int, int]:
    # +-2 sigma holds 95 % of the weight; OpenCV's default (+-4 sigma for float) costs twice as much.
    k = 2 * int(np.ceil(2.0 * sigma)) + 1
    return k, k


def _channels(image: np.ndarray) -> int:
    return 3 if image.ndim == 3 else 1


def _good_name(source: ImageLike, index: int) -> str:
    """How an error names a good image: its index, and its file when it came as a path."""
    if isinstance(source, (str, Path)):
        return f"good image {index} ({source})"
    return f"good image {index}"


def gray_if_neutral(image: np.ndarray) -> np.ndarray:
    """An RGB image whose three channels are equal, as the ``(H, W)`` gray image it holds.

    Gray content is sometimes stored as RGB (a JPEG writer's choice: 16 of DeepPCB's 901
    good images are 3-channel JPEGs with identical channels among 1-channel ones). A gray
    model (``color=False``) takes such a file as gray, at fit and at scoring, instead of
    refusing a mix of channel counts; an image with any colour in it is still refused by
    a model trained on gray ones.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``.

    Returns:
        ``(H, W)`` when the channels are equal (a copy of one), else ``image`` itself.
    """
    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
        return np.ascontiguousarray(image[..., 0])
    return image


def _correct_gain_offset(values: np.ndarray, template: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Undo a global gain and offset so the image's gray levels match the template's.

    Least squares of ``gray(values) ~ gain * template + offset`` on every 4th pixel in
    both directions (plenty for two numbers) inside ``mask``; the inverse is applied to
    all channels (a change of light level, not of colour).
    """
    if values.ndim == 2 or values.shape[2] == 1:
        gray = values.reshape(values.shape[:2])
    else:
        gray = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = template[::4, ::4].ravel()
    y = gray[::4, ::4].ravel()
    ok = np.isfinite(y) & (mask[::4, ::4].ravel() > 0)
    if ok.sum() < 16:
        return values
    x, y = x[ok].astype(np.float64), y[ok].astype(np.float64)
    var = x.var()
    if var <= 1e-12:
        return values
    gain = float(((x - x.mean()) * (y - y.mean())).mean() / var)
    gain = float(np.clip(gain, 0.2, 5.0))  # a sign flip or collapse is not a lighting change
    offset = float(y.mean() - gain * x.mean())
    return ((values - np.float32(offset)) * np.float32(1.0 / gain)).astype(np.float32)
