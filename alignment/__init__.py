"""Classical baselines: register to a golden template, compare per pixel (numpy + OpenCV only).

Modules:

* :mod:`alignment.registration`: transforms of an image to a template (phase correlation,
  Fourier-Mellin, ORB features + RANSAC, ECC on a pyramid), warping both ways;
* :mod:`alignment.template`: the golden template built from good images, and the
  alignment-quality threshold;
* :mod:`alignment.difference`: the variation model, detector ``difference``;
* :mod:`alignment.gmm`: per-pixel Gaussian mixtures, detector ``gmm``;
* :mod:`alignment.reference`: one image against its own reference, with a tolerance band;
* :mod:`alignment.aligned`, :mod:`alignment.exposure`, :mod:`alignment.masks`: what the
  two detectors share (pipeline, blank/saturated checks, ROI and ignore rectangles).

Nothing is imported here, so that ``import alignment`` stays cheap; torch is never used.
"""
