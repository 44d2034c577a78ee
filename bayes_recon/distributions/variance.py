"""Marginal variances and correlation maps of a :class:`StructuredGaussian` (introspection).

Exact for small images (``N <= DENSE_MAX_PIXELS``) through sparse triangular
solves against blocks of the identity, Monte Carlo otherwise. Nothing here is
differentiable; results are detached, on the device and dtype of ``loc``.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_int
from .triangular_solve import DENSE_MAX_PIXELS, _build_unit_factors, _scipy_solve

__all__ = ["marginal_variance", "correlation_map", "DEFAULT_VARIANCE_SAMPLES"]

#: Samples of the Monte Carlo variance when the image is too large for the exact path.
DEFAULT_VARIANCE_SAMPLES = 1000
# Bound on the floats held by one block of right-hand sides (32 MB in float64).
_BLOCK_FLOATS = 2**22


def _exact_variance_scipy(dist) -> torch.Tensor:
    ld, off = dist.log_diag.detach(), dist.off_diag.detach()
    n = dist.num_pixels
    mats, dinv = _build_unit_factors(ld, off, dist.radius)
    nb = len(mats)
    block = max(1, min(n, _BLOCK_FLOATS // (nb * n)))
    var = np.zeros((nb, n))
    for start in range(0, n, block):
        cols = np.arange(start, min(n, start + block))
        rhs = np.zeros((cols.size, nb, n))
        rhs[np.arange(cols.size), :, cols] = 1.0
        # Columns of U⁻¹; Σ = U⁻¹U⁻ᵀ so Σ_ii is the squared norm of row i of U⁻¹.
        var += np.square(_scipy_solve(mats, dinv, rhs, transpose=False)).sum(0)
    out = torch.from_numpy(var).to(device=dist.loc.device, dtype=dist.loc.dtype)
    return out.reshape(dist.batch_shape + dist.event_shape)


def _sampled_variance(dist, num_samples: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=dist.loc.device).manual_seed(seed)
    nb = max(1, dist.batch_shape.numel())
    chunk = max(1, min(num_samples, _BLOCK_FLOATS // (nb * dist.num_pixels)))
    total = torch.zeros_like(dist.loc)
    done = 0
    with torch.no_grad():
        while done < num_samples:
            s = min(chunk, num_samples - done)
            eps = dist.sample((s,), generator=gen) - dist.loc
            total = total + eps.square().sum(0)  # the mean is known: no bias correction
            done += s
    return total / num_samples


def marginal_variance(dist, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
    """``diag(Λ⁻¹)`` of ``dist`` as ``(*batch, C, H, W)``; see :meth:`StructuredGaussian.marginal_variance`."""
    if num_samples is not None:
        check_int("num_samples", num_samples, minimum=2)
        return _sampled_variance(dist, num_samples, seed)
    if dist.num_pixels > DENSE_MAX_PIXELS:
        return _sampled_variance(dist, DEFAULT_VARIANCE_SAMPLES, seed)
    if dist.solver == "dense":
        with torch.no_grad():
            cov = dist.to_dense_covariance()
        var = torch.diagonal(cov, dim1=-2, dim2=-1)
        return var.reshape(dist.batch_shape + dist.event_shape)
    return _exact_variance_scipy(dist)


def _pixel_index(dist, pixel) -> tuple[int, int, int]:
    c, h, w = dist.event_shape
    if isinstance(pixel, torch.Tensor):
        pixel = tuple(int(p) for p in pixel.tolist())
    if not isinstance(pixel, (tuple, list)) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in pixel
    ):
        raise TypeError(f"pixel must be a tuple of ints (c, h, w), got {pixel!r}")
    pixel = tuple(pixel)
    if len(pixel) == 2 and c == 1:
        pixel = (0, *pixel)
    if len(pixel) != 3:
        raise ValueError(
            f"pixel must be (c, h, w) (or (h, w) for one channel), got {pixel!r} for event shape {(c, h, w)}"
        )
    if not all(0 <= p < s for p, s in zip(pixel, (c, h, w))):
        raise ValueError(f"pixel {pixel} is outside the event shape {(c, h, w)}")
    return pixel


def correlation_map(dist, pixel, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
    """Correlations of ``pixel`` with all pixels; see :meth:`StructuredGaussian.correlation_map`."""
    c, h, w = _pixel_index(dist, pixel)
    e = torch.zeros(dist.batch_shape + dist.event_shape, dtype=dist.loc.dtype, device=dist.loc.device)
    e[..., c, h, w] = 1.0
    with torch.no_grad():
        col = dist.solve_precision(e)  # exact covariance column Σ e_p
    var = marginal_variance(dist, num_samples=num_samples, seed=seed).clone()
    var_p = col[..., c, h, w]
    var[..., c, h, w] = var_p  # exact, so the pixel's own correlation is exactly 1
    corr = col / torch.sqrt(var * var_p[..., None, None, None])
    return corr.clamp(-1.0, 1.0)
