"""Posterior of the linearised model's image ``x = m₀ + J θ``, ``θ ~ N(0, Σ_θ)``.

``m₀`` is the prior mean of the image (``x*`` for the MacKay/"fit" expansion,
``x* - J θ*`` for the "linearised" one) and ``t = y - A m₀`` the centred data
(zero for "fit": its Laplace posterior is centred at ``x*``). The posterior is
``N(m₀ + K Aᵀ K_yy⁻¹ t, K - K Aᵀ K_yy⁻¹ A K)``.

Exact (small images): the covariance is formed densely in float64 and factorised.
Pathwise / Matheron (large images): a prior draw ``x₀ = J Σ^{1/2} ε`` and a
noise draw ``e`` are conditioned as ``x = m₀ + x₀ - K Aᵀ K_yy⁻¹ (A x₀ + e - t)``,
with the solve by preconditioned conjugate gradients.
"""

from __future__ import annotations

import torch

from tqdm.auto import tqdm

from ...operators.cg import conjugate_gradient
from .config import NumericalRecord
from .evidence import adjoint_rows, forward_rows
from .linalg import robust_cholesky

__all__ = ["exact_posterior_covariance", "exact_posterior_mean", "exact_samples", "posterior_cholesky",
           "matheron_batches", "kyy_matvec", "RunningMoments"]


def _kyy_cholesky(data_kernel, noise_variance, record):
    m = data_kernel.shape[0]
    kyy = data_kernel + noise_variance * torch.eye(m, dtype=data_kernel.dtype, device=data_kernel.device)
    chol, jitter = robust_cholesky(kyy, "K_yy", return_jitter=True)
    if record is not None:
        record.add_jitter(jitter)
    return chol


def exact_posterior_covariance(image_kernel: torch.Tensor, data_kernel: torch.Tensor,
                               noise_variance: torch.Tensor, op,
                               record: NumericalRecord | None = None) -> torch.Tensor:
    """``K - K Aᵀ (A K Aᵀ + σ² I)⁻¹ A K`` in float64, ``(N, N)``.

    ``image_kernel`` is ``K (N, N)``, ``data_kernel`` is ``A K Aᵀ (m, m)``; a
    Cholesky jitter, if needed, is warned and recorded in ``record``.
    """
    chol = _kyy_cholesky(data_kernel, noise_variance, record)
    ka = forward_rows(op, image_kernel)                         # (N, m) = K Aᵀ
    cov = image_kernel - ka @ torch.cholesky_solve(ka.T.contiguous(), chol)
    return 0.5 * (cov + cov.T)


def exact_posterior_mean(prior_mean: torch.Tensor, image_kernel: torch.Tensor,
                         data_kernel: torch.Tensor, noise_variance: torch.Tensor, op,
                         target: torch.Tensor | None, record: NumericalRecord | None = None) -> torch.Tensor:
    """``m₀ + K Aᵀ K_yy⁻¹ t`` in float64, ``(N,)`` (``m₀`` ``(N,)``, ``t`` ``(m,)`` or None for 0)."""
    mean = prior_mean.reshape(-1).to(torch.float64)
    if target is None:
        return mean
    chol = _kyy_cholesky(data_kernel, noise_variance, record)
    alpha = torch.cholesky_solve(target.reshape(-1, 1).to(torch.float64), chol)     # (m, 1)
    return mean + (forward_rows(op, image_kernel) @ alpha).reshape(-1)


def posterior_cholesky(covariance: torch.Tensor, record: NumericalRecord | None = None) -> torch.Tensor:
    """Lower Cholesky factor of a posterior covariance (jittered if needed; jitter warned and recorded)."""
    chol, jitter = robust_cholesky(covariance, "posterior covariance", return_jitter=True)
    if record is not None:
        record.add_jitter(jitter)
    return chol


def exact_samples(mean: torch.Tensor, covariance: torch.Tensor, num_samples: int,
                  generator: torch.Generator, record: NumericalRecord | None = None,
                  cholesky: torch.Tensor | None = None) -> torch.Tensor:
    """``(S, N)`` draws of ``N(mean, covariance)`` by a (jittered if needed) Cholesky factor.

    ``cholesky``: the factor from :func:`posterior_cholesky`, when drawing several batches.
    """
    chol = posterior_cholesky(covariance, record) if cholesky is None else cholesky
    eps = torch.randn(num_samples, covariance.shape[0], generator=generator, dtype=covariance.dtype,
                      device=generator.device)
    return mean.reshape(1, -1).to(covariance) + eps.to(covariance.device) @ chol.T


def kyy_matvec(jac, prior, op, log_lengthscale, log_variance, noise_variance):
    """``v (k, m) -> K_yy v`` row-wise, matrix-free (float64)."""
    def kyy(v):
        g = jac.vjp(adjoint_rows(op, v.to(jac.dtype))).to(torch.float64)
        x = jac.jvp(prior.apply(g, log_lengthscale, log_variance).to(jac.dtype)).to(torch.float64)
        return forward_rows(op, x) + noise_variance * v
    return kyy


def matheron_batches(prior_mean, jac, prior, op, log_lengthscale, log_variance, noise_variance,
                     num_samples: int, generator: torch.Generator, preconditioner=None,
                     tol: float = 1e-6, max_iter: int = 1000, batch_size: int = 64,
                     target: torch.Tensor | None = None, record: NumericalRecord | None = None,
                     progress: bool = False):
    """Yield ``(s, N)`` float64 batches of pathwise posterior draws (CG solves against ``K_yy``).

    Parameters
    ----------
    prior_mean : torch.Tensor
        ``m₀ (N,)``.
    jac, prior, op, log_lengthscale, log_variance, noise_variance
        The linear model (``NetworkJacobian``, ``MaternFilterPrior``, forward
        operator, hyperparameters, ``σ_y²``).
    num_samples : int
    generator : torch.Generator
        Its device is where the draws are made.
    preconditioner : callable, optional
        ``R (k, m) -> P⁻¹ R`` row-wise.
    tol, max_iter : float, int
        CG relative-residual tolerance and iteration cap.
    batch_size : int
        Draws per CG solve (memory ~ ``batch_size · (N + P + m)`` numbers).
    target : torch.Tensor, optional
        ``t (m,)``: the centred data; None means 0 (posterior mean ``m₀``).
    record : NumericalRecord, optional
        Receives each batch's CG outcome (a short solve also warns
        ``CGConvergenceWarning``).
    progress : bool
        tqdm bar over the draws.
    """
    m = op.range_size * (2 if op.complex_range else 1)
    dev = generator.device
    kyy = kyy_matvec(jac, prior, op, log_lengthscale, log_variance, noise_variance)
    bar = tqdm(total=num_samples, desc="Matheron samples", disable=not progress, leave=False)
    try:
        for start in range(0, num_samples, batch_size):
            s = min(batch_size, num_samples - start)
            eps = torch.randn(s, jac.num_params, generator=generator, dtype=torch.float64, device=dev)
            theta0 = prior.apply_sqrt(eps, log_lengthscale, log_variance)
            x0 = jac.jvp(theta0.to(jac.dtype)).to(torch.float64)
            noise = noise_variance.sqrt() * torch.randn(s, m, generator=generator, dtype=torch.float64,
                                                        device=dev)
            rhs = forward_rows(op, x0) + noise
            if target is not None:
                rhs = rhs - target.reshape(1, -1).to(rhs)
            res = conjugate_gradient(kyy, rhs, tol=tol, max_iter=max_iter, preconditioner=preconditioner)
            if record is not None:
                record.evaluations += 1
                record.add_cg(res.converged, res.iterations, float(res.relative_residual.max()))
            g = jac.vjp(adjoint_rows(op, res.x.to(jac.dtype))).to(torch.float64)
            corr = jac.jvp(prior.apply(g, log_lengthscale, log_variance).to(jac.dtype)).to(torch.float64)
            bar.update(s)
            yield prior_mean.reshape(1, -1).to(torch.float64) + x0 - corr
    finally:
        bar.close()


class RunningMoments:
    """Per-pixel mean and variance of batches of draws without storing them (Chan et al.'s merge).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(100, 5, dtype=torch.float64)
    >>> rm = RunningMoments()
    >>> for b in x.split(30):
    ...     rm.update(b)
    >>> torch.allclose(rm.mean, x.mean(0)) and torch.allclose(rm.variance, x.var(0))
    True
    """

    def __init__(self):
        self.count, self.mean, self._m2 = 0, None, None

    def update(self, batch: torch.Tensor) -> None:
        """Add draws ``(s, ...)``."""
        b = batch.to(torch.float64)
        n_b, mean_b = b.shape[0], b.mean(0)
        m2_b = (b - mean_b).pow(2).sum(0)
        if self.mean is None:
            self.count, self.mean, self._m2 = n_b, mean_b, m2_b
            return
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta.pow(2) * (self.count * n_b / n)
        self.count = n

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased sample variance (``count - 1`` denominator)."""
        return self._m2 / max(self.count - 1, 1)
