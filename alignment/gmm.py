"""Per-pixel Gaussian mixture over registered good images (detector name ``gmm``).

Where a pixel legitimately takes more than one appearance (two colour variants of a
part, a connector that is either latched or not, a label printed in one of two inks), a
single ideal value and spread cannot describe it: the spread becomes so wide that a
defect between the modes passes, or the tolerance so tight that the rarer variant alarms.
A mixture of ``K`` Gaussians per pixel (diagonal covariance over the colour channels)
keeps the modes apart. The anomaly map is the negative log-likelihood of the aligned
image under its pixel's mixture, offset per pixel so that the most likely appearance
scores about 0 (the raw value also depends on how spread the pixel's components are,
which would make one threshold mean different things at different pixels).

The mixtures are fitted by EM (Dempster, Laird & Rubin 1977), vectorised over all pixels
at once (a block of pixels per step, no Python loop over pixels), from a seeded
k-means++ initialisation (Arthur & Vassilvitskii 2007) drawn per pixel, with a variance
floor so that a pixel that never changed does not alarm on sensor noise.

References:
    C. Stauffer, W. E. L. Grimson, "Adaptive background mixture models for real-time
    tracking", CVPR 1999 (per-pixel mixtures of Gaussians).
    Z. Zivkovic, "Improved adaptive Gaussian mixture model for background subtraction",
    ICPR 2004.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alignment.aligned import AlignedDetector
from anomaly.detectors.base import hyperparameters
from anomaly.errors import InvalidParameterError

_LOG_2PI = float(np.log(2.0 * np.pi))
_BLOCK_VALUES = 2_000_000  # N * K * pixels per EM block: keeps the working set in cache
_WEIGHT_PRIOR = 1e-3  # pseudo-count keeping an empty component's weight and mean defined


@dataclass(frozen=True)
class PixelMixtures:
    """``K``-component diagonal Gaussian mixtures, one per pixel.

    Attributes:
        weights: ``(K, P)`` float32 mixing weights (summing to 1 over ``K``).
        means: ``(K, P, C)`` float32 component means.
        variances: ``(K, P, C)`` float32 component variances (at least the floor).
        iterations: ``(B,)`` int EM iterations run in each block of pixels.
    """

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    iterations: np.ndarray


def fit_pixel_mixtures(
    samples: np.ndarray,
    *,
    n_components: int,
    std_floor: float,
    max_iter: int,
    tol: float,
    random_state: int,
) -> PixelMixtures:
    """Fit one Gaussian mixture per pixel by EM, vectorised over pixels.

    Args:
        samples: ``(N, P, C)`` float32: N observations of P pixels with C channels.
        n_components: ``K``, components per pixel.
        std_floor: Least standard deviation of a component, per channel.
        max_iter: EM iterations at most.
        tol: A block of pixels stops when its mean log-likelihood per observation rises
            by less than this (so with ``tol > 0`` the iteration count is shared by the
            pixels of a block; with ``tol = 0`` every pixel's fit is its own).
        random_state: Seed of the k-means++ initialisation.

    Returns:
        :class:`PixelMixtures`.
    """
    n, p, c = samples.shape
    k = int(n_components)
    # All random draws up front, pixel-major, so pixel i gets the same draws whatever the
    # block size or the number of pixels after it.
    uniforms = np.ascontiguousarray(np.random.default_rng(random_state).random((p, k), dtype=np.float32).T)
    weights = np.empty((k, p), dtype=np.float32)
    means = np.empty((k, p, c), dtype=np.float32)
    variances = np.empty((k, p, c), dtype=np.float32)
    iterations = []
    block = max(256, _BLOCK_VALUES // max(1, n * k))
    var_floor = np.float32(std_floor) ** 2
    for start in range(0, p, block):
        stop = min(p, start + block)
        x = np.ascontiguousarray(samples[:, start:stop], dtype=np.float32)
        w, mu, var, its = _em_block(x, uniforms[:, start:stop], var_floor, int(max_iter), float(tol))
        weights[:, start:stop], means[:, start:stop], variances[:, start:stop] = w, mu, var
        iterations.append(its)
    return PixelMixtures(weights, means, variances, np.asarray(iterations, dtype=np.int64))


def _em_block(
    x: np.ndarray, uniforms: np.ndarray, var_floor: np.float32, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n, p, c = x.shape
    k = uniforms.shape[0]
    cols = np.arange(p)
    # k-means++ seeding per pixel: each next centre is a sample drawn with probability
    # proportional to its squared distance from the centres chosen so far.
    centres = np.empty((k, p, c), dtype=np.float32)
    centres[0] = x[np.minimum((uniforms[0] * n).astype(np.int64), n - 1), cols]
    d2 = ((x - centres[0]) ** 2).sum(axis=2)
    for j in range(1, k):
        cumulative = np.cumsum(d2, axis=0)
        pick = np.minimum((cumulative < uniforms[j] * cumulative[-1]).sum(axis=0), n - 1)
        centres[j] = x[pick, cols]
        np.minimum(d2, ((x - centres[j]) ** 2).sum(axis=2), out=d2)
    # Hard assignment to the nearest centre starts EM (one k-means step).
    dist = ((x[:, None] - centres[None]) ** 2).sum(axis=3)  # (N, K, P)
    resp = (np.arange(k)[None, :, None] == dist.argmin(axis=1)[:, None, :]).astype(np.float32)
    del dist
    x2 = x * x
    previous = -np.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):
        weights, means, variances = _m_step(x, x2, resp, centres, var_floor)
        log_prob = _log_prob(x, x2, weights, means, variances)  # (N, K, P)
        top = log_prob.max(axis=1, keepdims=True)
        np.subtract(log_prob, top, out=log_prob)
        np.exp(log_prob, out=log_prob)
        total = log_prob.sum(axis=1, keepdims=True)
        resp = log_prob
        resp /= total
        current = float(np.mean(top) + np.mean(np.log(total)))
        if current - previous < tol:
            break
        previous = current
        centres = means
    weights, means, variances = _m_step(x, x2, resp, centres, var_floor)
    return weights, means, variances, iterations


def _m_step(x, x2, resp, previous_means, var_floor):
    counts = resp.sum(axis=0)  # (K, P)
    n = resp.shape[0]
    k = resp.shape[1]
    weights = (counts + _WEIGHT_PRIOR) / (n + k * _WEIGHT_PRIOR)
    denom = (counts + _WEIGHT_PRIOR)[..., None]
    s1 = np.einsum("nkp,npc->kpc", resp, x)
    s2 = np.einsum("nkp,npc->kpc", resp, x2)
    means = (s1 + _WEIGHT_PRIOR * previous_means) / denom
    variances = np.maximum(s2 / denom - means * means, var_floor)
    return weights.astype(np.float32), means.astype(np.float32), variances.astype(np.float32)


def _log_prob(x, x2, weights, means, variances):
    """``log w_k + log N(x | mu_k, diag(var_k))`` as ``(N, K, P)``, written as a quadratic in x."""
    inv = 1.0 / variances  # (K, P, C)
    const = np.log(weights) - 0.5 * (np.log(variances) + _LOG_2PI + means * means * inv).sum(axis=2)
    linear = means * inv  # (K, P, C)
    quad = -0.5 * inv
    out = np.broadcast_to(const[None], (x.shape[0],) + const.shape).copy()
    for ch in range(x.shape[2]):
        out += linear[None, :, :, ch] * x[:, None, :, ch]
        out += quad[None, :, :, ch] * x2[:, None, :, ch]
    return out


@hyperparameters
class PixelGMM(AlignedDetector):
    """Per-pixel Gaussian mixture over registered good images (detector name ``gmm``).

    Args:
        n_components: Gaussians per pixel. 2 covers a part with two legitimate
            appearances; each more costs about half as much fit time again.
        std_floor: Least standard deviation of a component, as a fraction of full scale.
        max_iter: EM iterations at most.
        tol: EM stops for a block of pixels when the mean log-likelihood gains less.
        motion, coarse, pyramid_levels, max_side, reference_index, refine_iterations,
        quality_margin, min_overlap, illumination, color, roi, ignore_regions,
        image_size, map_sigma: Registration, masking and the map, as for every classical
            model (see :class:`~alignment.aligned.AlignedDetector`).
        random_state: Seed of the per-pixel k-means++ initialisation (and of RANSAC for
            feature-based coarse registration).
    """

    name = "gmm"
    _model_array_names = ("weights", "means", "variances")

    n_components: int = 2
    std_floor: float = 0.02
    max_iter: int = 30
    tol: float = 1e-3

    def _check_model_params(self) -> None:
        if not 1 <= int(self.n_components) <= 8:
            raise InvalidParameterError(f"n_components must be between 1 and 8, got {self.n_components}")
        if not float(self.std_floor) > 0:
            raise InvalidParameterError(f"std_floor must be > 0, got {self.std_floor}")
        if int(self.max_iter) < 1:
            raise InvalidParameterError(f"max_iter must be >= 1, got {self.max_iter}")
        if not float(self.tol) >= 0:
            raise InvalidParameterError(f"tol must be >= 0, got {self.tol}")

    def _fit_model(self, stack: np.ndarray) -> None:
        n, h, w, c = stack.shape
        mixtures = fit_pixel_mixtures(
            stack.reshape(n, h * w, c),
            n_components=int(self.n_components),
            std_floor=float(self.std_floor),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            random_state=int(self.random_state),
        )
        k = int(self.n_components)
        self.weights_ = mixtures.weights.reshape(k, h, w)
        self.means_ = mixtures.means.reshape(k, h, w, c)
        self.variances_ = mixtures.variances.reshape(k, h, w, c)
        self.em_iterations_ = mixtures.iterations

    def _prepare_model(self) -> None:
        k, h, w, c = self.means_.shape
        inv = (1.0 / self.variances_).astype(np.float32)
        const = np.log(self.weights_) - 0.5 * (np.log(self.variances_) + _LOG_2PI).sum(axis=3)
        self._const = [np.ascontiguousarray(const[j], dtype=np.float32) for j in range(k)]
        self._half_inv = [np.ascontiguousarray(0.5 * inv[j], dtype=np.float32) for j in range(k)]
        self._means = [np.ascontiguousarray(self.means_[j], dtype=np.float32) for j in range(k)]
        if c == 1:
            self._half_inv = [a[..., 0] for a in self._half_inv]
            self._means = [a[..., 0] for a in self._means]
        # Log-density of the most likely appearance, approximately: the best component's
        # peak. Subtracting it makes a pixel at its usual value score about 0 everywhere.
        self._peak = np.max(np.stack(self._const), axis=0)
        luminance = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        self._mean_gray = [m if m.ndim == 2 else m @ luminance for m in self._means]

    def _deviation(self, warped: np.ndarray) -> np.ndarray:
        # Log-sum-exp over components, one (h, w) plane at a time: no (K, h, w) stack,
        # and the most likely component's mean (for the sign) falls out of the same pass.
        terms = []
        for const, half_inv, mean in zip(self._const, self._half_inv, self._means):
            d = np.subtract(warped, mean)
            np.multiply(d, d, out=d)
            np.multiply(d, half_inv, out=d)
            if d.ndim == 3:
                d = d.sum(axis=2)
            terms.append(np.subtract(const, d, out=d))
        top = terms[0].copy()
        nearest = self._mean_gray[0]
        for term, mean_gray in zip(terms[1:], self._mean_gray[1:]):
            nearest = np.where(term > top, mean_gray, nearest)
            np.maximum(top, term, out=top)
        total = np.zeros_like(top)
        for term in terms:
            np.subtract(term, top, out=term)
            np.exp(term, out=term)
            total += term
        np.log(total, out=total)
        total += top  # log-density of the mixture
        nll = np.subtract(self._peak, total, out=total)
        np.maximum(nll, 0.0, out=nll)
        gray = warped if warped.ndim == 2 else warped @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.where(gray >= nearest, nll, -nll).astype(np.float32, copy=False)

    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_, "means": self.means_, "variances": self.variances_}

    def _set_model_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = arrays["weights"].astype(np.float32)
        self.means_ = arrays["means"].astype(np.float32)
        self.variances_ = arrays["variances"].astype(np.float32)

    def training_meta(self) -> dict:
        meta = super().training_meta()
        iterations = getattr(self, "em_iterations_", None)
        meta["init"] = "k-means++ per pixel, seeded by random_state"
        if iterations is not None and len(iterations):
            meta["em_iterations_max"] = int(iterations.max())
            meta["em_iterations_mean"] = float(iterations.mean())
        return meta
