"""Registration of an image to a golden template: coarse estimate, then ECC on a pyramid.

:func:`register` and :func:`estimate_transform` are plain functions (no state) with one
options object, :class:`RegistrationOptions`, and a fixed return type, in the manner of
``skimage.registration``. They put together the jobs that live in their own modules:

* :mod:`alignment.pyramid`: the template's and the image's pyramids, and the structure
  check that refuses a template with structure in one direction only;
* :mod:`alignment.coarse`: the coarse estimate for large motions (phase correlation,
  Fourier-Mellin, ORB/AKAZE keypoints with RANSAC);
* :mod:`alignment.ecc`: the ECC refinement, coarse to fine, on levels of at most
  ``max_side`` pixels per side;
* :mod:`alignment.warp`: the final warp, at full resolution, and the way back;
* :mod:`alignment.local`: an optional field of local shifts after the global transform;
* :mod:`alignment.transforms`: the ``(3, 3)`` template -> image convention they share.

Only the final warp is done at full resolution, which keeps the alignment of a
1024 x 1024 image to about ten milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment.coarse import COARSE_METHODS, Coarse, coarse_starts
from alignment.ecc import refine_ecc
from alignment.pyramid import TemplatePyramid, image_levels, prepare_template
from alignment.transforms import MOTIONS, Motion, template_overlap
from alignment.warp import as_gray, warp_to_template
from anomaly.errors import AlignmentError, InvalidParameterError

# A template whose weaker gradient direction holds less than this share of the gradient
# energy is one-dimensional (parallel stripes, or blank): a shift along it is not measured.
_MIN_STRUCTURE_RATIO = 1e-3


@dataclass(frozen=True)
class RegistrationOptions:
    """How :func:`register` and :func:`estimate_transform` register an image.

    Attributes:
        motion: ``"translation"``, ``"rigid"`` (rotation + shift), ``"similarity"``
            (+ uniform scale), ``"affine"`` or ``"homography"``.
        coarse: Initial estimate for large motions: ``"none"`` (identity), ``"phase"``
            (phase correlation, shift only), ``"log_polar"`` (Fourier-Mellin: rotation,
            scale and shift), ``"orb"`` or ``"akaze"`` (feature matching + RANSAC). A
            coarse estimate is kept only if it correlates better than no motion.
        levels: Pyramid levels for ECC (used by :meth:`prepare`, so not when the
            template comes as a :class:`~alignment.pyramid.TemplatePyramid`).
        max_side: Longest side of the finest pyramid level (likewise).
        max_iterations: ECC iterations per level at most.
        epsilon: ECC stops when the correlation gains less than this per iteration.
        gauss_size: Odd size of the Gaussian ECC applies to both images (0 = none).
        max_features: Keypoints per image for ``"orb"``/``"akaze"``.
        random_state: Seed of the RANSAC sampling for feature-based coarse estimates.

    Raises:
        InvalidParameterError: an unknown motion or coarse method, ``max_iterations`` < 1,
            or an even ``gauss_size``.
    """

    motion: Motion = "affine"
    coarse: Coarse = "phase"
    levels: int = 2
    max_side: int = 256
    max_iterations: int = 30
    epsilon: float = 1e-4
    gauss_size: int = 5
    max_features: int = 1000
    random_state: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("motion", MOTIONS), ("coarse", COARSE_METHODS)):
            if getattr(self, name) not in allowed:
                raise InvalidParameterError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if int(self.max_iterations) < 1:
            raise InvalidParameterError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if int(self.gauss_size) < 0 or (int(self.gauss_size) > 0 and int(self.gauss_size) % 2 == 0):
            raise InvalidParameterError(f"gauss_size must be 0 or odd, got {self.gauss_size}")

    def prepare(self, template: np.ndarray) -> TemplatePyramid:
        """The template's pyramid at these options' ``levels`` and ``max_side``.

        Args:
            template: ``(h, w)`` or ``(h, w, 3)`` image, uint8/uint16 or float in ``[0, 1]``.

        Returns:
            A :class:`~alignment.pyramid.TemplatePyramid` for many registrations.
        """
        return prepare_template(template, levels=self.levels, max_side=self.max_side)


@dataclass(frozen=True)
class Alignment:
    """Where the template lies in an image: the result of :func:`estimate_transform`.

    Attributes:
        matrix: ``(3, 3)`` float64 transform from template to image pixel coordinates
            (see :mod:`alignment.transforms`).
        quality: ECC correlation coefficient at the finest pyramid level, in ``[-1, 1]``
            (1 = the aligned image is an exact gain/offset copy of the template).
        overlap: Fraction of the template's area that lies inside the image, in ``[0, 1]``.
        motion: The motion model that was fitted.
    """

    matrix: np.ndarray
    quality: float
    overlap: float
    motion: str


@dataclass(frozen=True)
class Registration(Alignment):
    """An :class:`Alignment` with the image resampled into the template frame (:func:`register`).

    Callers that warp their own way (in the image's dtype, with a mask) ask
    :func:`estimate_transform` for the :class:`Alignment` alone and skip this warp.

    Attributes:
        warped: The image in the template frame: ``(h, w)`` for a gray image,
            ``(h, w, 3)`` for a colour one, float32 in ``[0, 1]``; NaN where the template
            pixel maps outside the image (nothing there to judge).
    """

    warped: np.ndarray


def register(
    image: np.ndarray, template: np.ndarray | TemplatePyramid, *, options: RegistrationOptions | None = None
) -> Registration:
    """Estimate the transform of ``image`` to ``template`` and warp it into the template frame.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 image (or float in ``[0, 1]``);
            its size may differ from the template's.
        template: The golden image, or a :class:`~alignment.pyramid.TemplatePyramid`
            from :meth:`RegistrationOptions.prepare` (then ``levels`` and ``max_side``
            are those it was prepared with).
        options: How to register; ``None`` = :class:`RegistrationOptions` defaults.

    Returns:
        A :class:`Registration` (transform, quality, overlap, warped image).

    Raises:
        InvalidParameterError: ``levels`` or ``max_side`` out of range (template arrays only).
        InvalidImageError: not a 2-D gray or RGB image.
        AlignmentError: the part cannot be found: a template with structure in one
            direction only, a uniform image, or ECC that did not converge.
    """
    options = RegistrationOptions() if options is None else options
    pyramid = _pyramid(template, options)
    found = estimate_transform(image, pyramid, options=options)
    return Registration(**vars(found), warped=warp_to_template(image, found.matrix, pyramid.shape))


def estimate_transform(
    image: np.ndarray, template: np.ndarray | TemplatePyramid, *, options: RegistrationOptions | None = None
) -> Alignment:
    """:func:`register` without the final warp, for callers that warp their own way.

    Takes the same arguments as :func:`register` and raises the same errors.

    Returns:
        An :class:`Alignment` (transform, quality, overlap).
    """
    options = RegistrationOptions() if options is None else options
    pyramid = _pyramid(template, options)
    if pyramid.structure < _MIN_STRUCTURE_RATIO:
        raise AlignmentError(
            "part not found / could not align: the template has structure in one direction only (weaker "
            f"gradient direction holds {pyramid.structure:.1e} of the energy, less than {_MIN_STRUCTURE_RATIO:.0e}), "
            "so a shift along it cannot be measured; give an ROI with structure in both directions"
        )
    gray = as_gray(image)
    levels = image_levels(gray, pyramid)
    if float(levels[-1][0].std()) < 1e-6:
        raise AlignmentError("part not found / could not align: the image is uniform, there is nothing to align")
    starts = coarse_starts(options.coarse, pyramid, levels, motion=options.motion,
                           max_features=options.max_features, random_state=options.random_state)
    matrix, quality = refine_ecc(pyramid, levels, starts, motion=options.motion, max_iterations=options.max_iterations,
                                 epsilon=options.epsilon, gauss_size=options.gauss_size)
    return Alignment(matrix=matrix, quality=float(quality),
                     overlap=template_overlap(matrix, pyramid.shape, gray.shape), motion=options.motion)


def _pyramid(template: np.ndarray | TemplatePyramid, options: RegistrationOptions) -> TemplatePyramid:
    return template if isinstance(template, TemplatePyramid) else options.prepare(template)
