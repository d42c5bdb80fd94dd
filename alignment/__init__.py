"""Classical baselines: register to a golden template, compare per pixel (numpy + OpenCV only).

Modules:

* :mod:`alignment.registration`: an image registered to a template with one
  :class:`~alignment.registration.RegistrationOptions`, from the jobs in
  :mod:`alignment.coarse` (phase correlation, Fourier-Mellin, ORB features + RANSAC),
  :mod:`alignment.ecc` (ECC on a pyramid, :mod:`alignment.pyramid`), :mod:`alignment.warp`
  (warping both ways) and :mod:`alignment.local` (local shifts); the ``(3, 3)`` transform
  convention is in :mod:`alignment.transforms`;
* :mod:`alignment.template`: the golden template built from good images, and the
  alignment-quality threshold;
* :mod:`alignment.difference`: the variation model, detector ``difference``;
* :mod:`alignment.gmm`: per-pixel Gaussian mixtures, detector ``gmm``;
* :mod:`alignment.reference`: one image against its own reference, with a tolerance band;
* :mod:`alignment.aligned`, :mod:`alignment.exposure`, :mod:`alignment.masks`: what the
  two detectors share (pipeline, blank/saturated checks, ROI and ignore rectangles).

Nothing is imported here, so that ``import alignment`` stays cheap; torch is never used.
"""
