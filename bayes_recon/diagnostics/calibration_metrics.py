"""Per-image calibration metrics on numpy arrays (the numerics behind ``calibration``).

Every function takes flattened samples ``(S, N)`` (``S`` samples of ``N`` pixels)
or the image-shaped ``(S, C, H, W)`` and a truth of matching shape, works in
float64, and returns plain numpy values. Nothing here knows about Posterior or
ArviZ.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "CalibrationWarning",
    "interval_coverage",
    "pit_values",
    "floor_std",
    "gaussian_log_likelihood",
    "patch_log_likelihood",
    "sparsification_curves",
    "zscore_summary",
]

_LOG_2PI = math.log(2 * math.pi)


class CalibrationWarning(UserWarning):
    """Numerical trouble in a calibration metric (zero std, singular patch covariance)."""


def interval_coverage(flat: np.ndarray, truth: np.ndarray, levels) -> np.ndarray:
    """Fraction of pixels whose truth lies in the central sample-quantile interval.

    Parameters
    ----------
    flat : ndarray, shape (S, N)
    truth : ndarray, shape (N,)
    levels : sequence of float in (0, 1)

    Returns
    -------
    ndarray, shape (len(levels),)
        For level ``p`` the interval is ``[q_{(1-p)/2}, q_{(1+p)/2}]`` of the
        samples per pixel (linear interpolation, closed at both ends).
    """
    levels = np.asarray(levels, dtype=np.float64)
    probs = np.concatenate([(1 - levels) / 2, (1 + levels) / 2])
    q = np.quantile(flat, probs, axis=0)  # (2L, N)
    lower, upper = q[: len(levels)], q[len(levels):]
    inside = (truth[None] >= lower) & (truth[None] <= upper)
    return inside.mean(axis=1)


def pit_values(flat: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Probability integral transform of the truth under each pixel's sample marginal.

    With ``r`` samples below the truth and ``k`` equal to it, the truth's rank
    among the ``S + 1`` values is uniform on ``r, ..., r + k`` when truth and
    samples are exchangeable; the mid-rank ``(r + k/2 + 1/2) / (S + 1)`` is then
    uniform on a grid of spacing ``1/(S+1)`` in ``(0, 1)`` -- never exactly 0 or 1.

    Returns
    -------
    ndarray, shape (N,)
    """
    below = (flat < truth[None]).sum(axis=0)
    equal = (flat == truth[None]).sum(axis=0)
    return (below + 0.5 * equal + 0.5) / (flat.shape[0] + 1)


def floor_std(std: np.ndarray, min_std: float) -> np.ndarray:
    """``std`` with entries below ``min_std`` replaced by it (``CalibrationWarning`` if any)."""
    small = std < min_std
    if small.any():
        warnings.warn(
            f"{int(small.sum())} of {std.size} pixels have posterior std below min_std={min_std:g}; "
            "using min_std there so z-scores and log-likelihoods stay finite",
            CalibrationWarning,
            stacklevel=3,
        )
        std = np.where(small, min_std, std)
    return std


def gaussian_log_likelihood(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel ``log N(truth; mean, std^2)`` (std must already be positive)."""
    r = (truth - mean) / std
    return -0.5 * (_LOG_2PI + r * r) - np.log(std)


def patch_log_likelihood(
    samples: np.ndarray, truth: np.ndarray, size: int, jitter: float = 1e-6
) -> tuple[float, int]:
    """Mean per-pixel log-likelihood of the truth under Gaussian patch marginals.

    The image is cut into non-overlapping ``size x size`` patches per channel
    (rows/columns beyond a multiple of ``size`` are dropped). Each patch gets
    the sample mean and sample covariance (``ddof=1``) of its ``size**2``
    pixels, plus a diagonal jitter of ``jitter`` times the mean of that
    covariance's diagonal (scale-free; it makes covariances from few samples
    invertible). If a Cholesky factorisation still fails the jitter grows
    tenfold (up to ``1e-2``) with a ``CalibrationWarning``. ``size=1``
    reproduces the per-pixel Gaussian test log-likelihood up to the jitter.

    Parameters
    ----------
    samples : ndarray, shape (S, C, H, W)
    truth : ndarray, shape (C, H, W)
    size : int
        Patch side length.
    jitter : float
        Relative diagonal jitter.

    Returns
    -------
    (float, int)
        Sum of patch log-densities divided by the number of pixels covered, and
        that number of pixels.
    """
    s, c, h, w = samples.shape
    nh, nw = h // size, w // size
    d = size * size
    if s - 1 < d:
        warnings.warn(
            f"{s} samples give a rank-deficient covariance for {size}x{size} patches "
            f"({d} pixels); the patch log-likelihood is dominated by the jitter",
            CalibrationWarning,
            stacklevel=3,
        )

    def patches(a):  # (..., C, H, W) -> (C*nh*nw, ..., d)
        lead = a.shape[:-3]
        a = a[..., : nh * size, : nw * size].reshape(*lead, c, nh, size, nw, size)
        a = np.moveaxis(a, (-5, -4, -2), (0, 1, 2))  # C, nh, nw, ..., size, size
        return a.reshape(c * nh * nw, *lead, d)

    xs = patches(samples)  # (P, S, d)
    t = patches(truth)  # (P, d)
    mu = xs.mean(axis=1)
    xc = xs - mu[:, None]
    cov = np.einsum("psi,psj->pij", xc, xc) / (s - 1)
    scale = np.trace(cov, axis1=1, axis2=2) / d
    scale = np.where(scale > 0, scale, 1.0)  # a constant patch still gets a usable jitter
    eye = np.eye(d)
    rel = jitter
    while True:
        try:
            chol = np.linalg.cholesky(cov + (rel * scale)[:, None, None] * eye)
            break
        except np.linalg.LinAlgError:
            if rel >= 1e-2:
                raise
            rel = max(rel * 10, 1e-12)
            warnings.warn(
                f"patch covariance ({size}x{size}) not positive definite; jitter raised to {rel:g}",
                CalibrationWarning,
                stacklevel=3,
            )
    r = np.linalg.solve(chol, (t - mu)[..., None])[..., 0]
    logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    logp = -0.5 * (d * _LOG_2PI + logdet + (r * r).sum(axis=1))
    n_pix = xs.shape[0] * d
    return float(logp.sum() / n_pix), int(n_pix)


def _trapezoid(values: np.ndarray, x: np.ndarray) -> float:
    # np.trapz was renamed in numpy 2; the rule is one line, so no version switch.
    return float(np.sum(0.5 * (values[1:] + values[:-1]) * np.diff(x)))


def sparsification_curves(abs_error: np.ndarray, std: np.ndarray, num_fractions: int = 100) -> dict:
    """Sparsification curves of RMSE and the AUSE / AURG areas.

    Pixels are removed in order of decreasing predicted ``std`` (uncertainty
    curve) or decreasing true ``abs_error`` (oracle curve); after removing a
    fraction ``f`` the RMSE of the remaining pixels is recorded, normalised by
    the RMSE of all pixels. The random curve is its expectation under random
    removal, the constant 1 (the expected MSE of a random subset is the MSE).
    Fractions are ``0, 1/num_fractions, ..., 1 - 1/num_fractions``; areas use
    the trapezoidal rule over them.

    Returns
    -------
    dict
        ``fractions``, ``uncertainty``, ``oracle``, ``random`` (1-D arrays) and
        ``ause`` = area(uncertainty - oracle) >= 0, ``aurg`` = area(random -
        uncertainty) (positive when the std ranks errors better than chance).
        If all errors are zero the curves are 0 and both areas 0.
    """
    n = abs_error.size
    fractions = np.arange(num_fractions) / num_fractions
    removed = np.minimum(np.round(fractions * n).astype(np.int64), n - 1)
    sq = abs_error.astype(np.float64) ** 2
    total = sq.sum()

    def curve(order_key):
        order = np.argsort(-order_key, kind="stable")
        csum = np.concatenate([[0.0], np.cumsum(sq[order])])
        remaining = np.maximum(total - csum[removed], 0.0)  # cumsum rounding can dip below 0
        return np.sqrt(remaining / (n - removed))

    unc, orc = curve(std), curve(abs_error)
    rmse0 = math.sqrt(total / n)
    if rmse0 > 0:
        unc, orc, rnd = unc / rmse0, orc / rmse0, np.ones_like(unc)
    else:
        unc, orc, rnd = np.zeros_like(unc), np.zeros_like(orc), np.zeros_like(unc)
    ause = _trapezoid(unc - orc, fractions)
    aurg = _trapezoid(rnd - unc, fractions)
    return {
        "fractions": fractions,
        "uncertainty": unc,
        "oracle": orc,
        "random": rnd,
        "ause": ause,
        "aurg": aurg,
    }


def zscore_summary(z: np.ndarray, num_quantiles: int = 99) -> dict:
    """Summary of z-scores ``(truth - mean) / std`` against N(0, 1).

    Returns fractions with ``|z| > 2`` and ``|z| > 3`` (4.55 % and 0.27 % under
    N(0, 1)), the mean and std of ``z``, and QQ data: the standard-normal
    quantiles at probabilities ``(i - 1/2)/num_quantiles`` and the empirical
    z quantiles there.
    """
    from scipy.stats import norm

    probs = (np.arange(1, num_quantiles + 1) - 0.5) / num_quantiles
    az_ = np.abs(z)
    return {
        "z_beyond_2": float((az_ > 2).mean()),
        "z_beyond_3": float((az_ > 3).mean()),
        "z_mean": float(z.mean()),
        "z_std": float(z.std()),
        "qq_theoretical": norm.ppf(probs),
        "qq_observed": np.quantile(z, probs),
    }
