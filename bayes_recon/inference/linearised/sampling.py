"""Posterior draws of the linearised model's image ``x = x* + J (θ - θ*)``.

Exact (small images): the posterior covariance
``K - K Aᵀ K_yy⁻¹ A K`` is formed densely in float64 and factorised.
Pathwise / Matheron (large images): a prior draw ``x₀ = J Σ^{1/2} ε`` and a
noise draw ``e`` are conditioned as ``x = x* + x₀ - K Aᵀ K_yy⁻¹ (A x₀ + e)``,
with the solve by preconditioned conjugate gradients. Both have mean ``x*``.
"""

from __future__ import annotations

import torch

from ...operators.cg import conjugate_gradient
from .evidence import adjoint_rows, forward_rows
from .linalg import robust_cholesky

__all__ = ["exact_posterior_covariance", "exact_samples", "matheron_samples"]


def exact_posterior_covariance(image_kernel: torch.Tensor, data_kernel: torch.Tensor,
                               noise_variance: torch.Tensor, op) -> torch.Tensor:
    """``K - K Aᵀ (A K Aᵀ + σ² I)⁻¹ A K`` in float64, ``(N, N)``."""
    m = data_kernel.shape[0]
    kyy = data_kernel + noise_variance * torch.eye(m, dtype=data_kernel.dtype, device=data_kernel.device)
    chol = robust_cholesky(kyy, "K_yy")
    ka = forward_rows(op, image_kernel)                         # (N, m) = K Aᵀ
    cov = image_kernel - ka @ torch.cholesky_solve(ka.T.contiguous(), chol)
    return 0.5 * (cov + cov.T)


def exact_samples(mean: torch.Tensor, covariance: torch.Tensor, num_samples: int,
                  generator: torch.Generator) -> torch.Tensor:
    """``(S, N)`` draws of ``N(mean, covariance)`` by a (jittered if needed) Cholesky factor."""
    chol = robust_cholesky(covariance, "posterior covariance")
    eps = torch.randn(num_samples, covariance.shape[0], generator=generator, dtype=covariance.dtype)
    return mean.reshape(1, -1).to(covariance) + eps.to(covariance.device) @ chol.T


def matheron_samples(mean, jac, prior, op, log_lengthscale, log_variance, noise_variance,
                     num_samples: int, generator: torch.Generator, preconditioner=None,
                     tol: float = 1e-6, max_iter: int = 1000, batch_size: int = 64) -> torch.Tensor:
    """``(S, N)`` pathwise posterior draws with CG solves against ``K_yy`` (float64)."""
    m = op.range_size
    out = []
    for start in range(0, num_samples, batch_size):
        s = min(batch_size, num_samples - start)
        eps = torch.randn(s, jac.num_params, generator=generator, dtype=torch.float64)
        theta0 = prior.apply_sqrt(eps, log_lengthscale, log_variance)
        x0 = jac.jvp(theta0.to(jac.dtype)).to(torch.float64)
        noise = noise_variance.sqrt() * torch.randn(s, m, generator=generator, dtype=torch.float64)

        def kyy(v):
            g = jac.vjp(adjoint_rows(op, v.to(jac.dtype))).to(torch.float64)
            x = jac.jvp(prior.apply(g, log_lengthscale, log_variance).to(jac.dtype)).to(torch.float64)
            return forward_rows(op, x) + noise_variance * v

        rhs = forward_rows(op, x0) + noise
        alpha = conjugate_gradient(kyy, rhs, tol=tol, max_iter=max_iter,
                                   preconditioner=preconditioner).x
        g = jac.vjp(adjoint_rows(op, alpha.to(jac.dtype))).to(torch.float64)
        corr = jac.jvp(prior.apply(g, log_lengthscale, log_variance).to(jac.dtype)).to(torch.float64)
        out.append(mean.reshape(1, -1).to(torch.float64) + x0 - corr)
    return torch.cat(out)
