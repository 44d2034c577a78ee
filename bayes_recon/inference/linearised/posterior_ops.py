"""Posterior of the linearised model: mean, dense covariance, samples and running moments.

Mixed into :class:`~.laplace.LinearisedLaplace` (kept apart so each module stays short).
The posterior is ``N(m₀ + K Aᵀ K_yy⁻¹ t, K - K Aᵀ K_yy⁻¹ A K)`` (see :mod:`.sampling`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..._validation import check_int
from ...operators.cg import conjugate_gradient
from ...posterior import Posterior
from .config import NumericalRecord
from .evidence import DataKernelOperator, NystromPreconditioner, adjoint_rows
from .linalg import recording_warnings
from .sampling import (RunningMoments, _kyy_cholesky, exact_posterior_covariance, exact_posterior_mean, exact_samples,
                       matheron_batches, posterior_cholesky)

__all__ = ["PosteriorMixin"]


class PosteriorMixin:
    """Posterior methods of :class:`~.laplace.LinearisedLaplace`."""

    @property
    def subspace_summary(self) -> dict | None:
        """``{"rank", "missed_fraction"}`` of the subspace path (None on the other paths)."""
        if self.subspace is None:
            return None
        return {"rank": self.subspace.rank, "missed_fraction": self.subspace.missed_fraction}

    def posterior_covariance(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior covariance ``(N, N)`` float64 (exact and subspace paths).

        ``K - K Aᵀ K_yy⁻¹ A K`` (the same for both expansions; on the subspace path
        ``Q C Qᵀ`` with ``C`` the subspace posterior covariance); a Cholesky
        jitter is warned and added to ``record`` if given.
        """
        if self.path == "scalable":
            raise ValueError("posterior_covariance needs path='exact' or 'subspace' (dense kernel); "
                             f"this model uses path={self.path!r}")
        cov = self._kernel_posterior_covariance(record)
        return cov if self.subspace is None else self.subspace.lift_covariance(cov)

    def _kernel_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``K`` and ``A K Aᵀ`` in the kernel's coordinates at the current hyperparameters."""
        ls, var = self.log_lengthscale, self.log_variance
        return self.kernel.image_kernel(ls, var), self.kernel.data_kernel(ls, var)

    def _kernel_posterior_covariance(self, record, kernels=None):
        """Posterior covariance in the kernel's coordinates (pixels, or the subspace's ``u``)."""
        with torch.no_grad():
            k, kd = kernels if kernels is not None else self._kernel_matrices()
            return exact_posterior_covariance(k, kd, self.log_noise_variance.exp(), self.kernel_op, record)

    def _kernel_posterior_mean(self, record, kernels=None):
        """Posterior mean in the kernel's coordinates ``(n,)`` (dense kernel only)."""
        if self.target is None:
            return self.prior_mean.clone()
        with torch.no_grad():
            k, kd = kernels if kernels is not None else self._kernel_matrices()
            return exact_posterior_mean(self.prior_mean, k, kd, self.log_noise_variance.exp(), self.kernel_op,
                                        self.target, record)

    def _kernel_posterior(self, record):
        """``(mean, covariance)`` in the kernel's coordinates, the kernels built once."""
        with torch.no_grad():
            kernels = self._kernel_matrices()
            return self._kernel_posterior_mean(record, kernels), self._kernel_posterior_covariance(record, kernels)

    def _lift(self, rows: torch.Tensor) -> torch.Tensor:
        """Kernel coordinates ``(s, n)`` to images ``(s, N)`` (identity off the subspace path)."""
        return rows if self.subspace is None else self.subspace.lift(rows)

    def posterior_mean(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior mean ``m₀ + K Aᵀ K_yy⁻¹ t`` ``(N,)`` float64.

        ``x*`` for ``expansion="fit"``; for ``"linearised"`` the mean of the
        linear model, by Cholesky (exact and subspace paths) or preconditioned CG
        (scalable path; its outcome goes to ``record``, a short solve warns).
        """
        if self.kernel is not None:
            return self._lift(self._kernel_posterior_mean(record)[None])[0]
        if self.target is None:
            return self.prior_mean.clone()
        with torch.no_grad():
            ls, var = self.log_lengthscale, self.log_variance
            alpha = self.solve_kyy(self.target[None], record)
            g = self.jac.vjp(adjoint_rows(self.kernel_op, alpha.to(self.jac.dtype))).to(torch.float64)
            corr = self.jac.jvp(self.prior.apply(g, ls, var).to(self.jac.dtype)).to(torch.float64)
            return self.prior_mean + corr.reshape(-1)

    def _data_kernel(self) -> DataKernelOperator:
        return DataKernelOperator(self.log_lengthscale, self.log_variance, jac=self.jac, prior=self.prior,
                                  op=self.kernel_op, size=self.m)

    def _preconditioner(self, kop: DataKernelOperator | None = None):
        """Row-wise ``P⁻¹`` for :func:`conjugate_gradient` (None without a Nyström rank)."""
        if self.config.preconditioner_rank <= 0:
            return None
        kop = kop if kop is not None else self._data_kernel()
        pre = NystromPreconditioner(kop.matmul, self.m, self.config.preconditioner_rank,
                                    self.log_noise_variance.exp(), self.config.probe_seed,
                                    device=self.y.device)
        return lambda r: pre.solve(r.T).T

    def solve_kyy(self, rhs: torch.Tensor, record: NumericalRecord | None = None, x0=None,
                  preconditioner=None) -> torch.Tensor:
        """``K_yy⁻¹ R`` row-wise for ``R (k, m)`` float64: Cholesky (dense kernel) or preconditioned CG.

        CG short of ``config.cg_tolerance`` warns ``CGConvergenceWarning`` and is added
        to ``record`` (with its residual).
        """
        nv = self.log_noise_variance.exp()
        if self.kernel is not None:
            kd = self.kernel.data_kernel(self.log_lengthscale, self.log_variance)
            chol = _kyy_cholesky(kd, nv, record)
            return torch.cholesky_solve(rhs.T.contiguous(), chol).T
        kop = self._data_kernel()
        pre = preconditioner if preconditioner is not None else self._preconditioner(kop)
        res = conjugate_gradient(lambda v: kop.matmul(v.T).T + nv * v, rhs, x0=x0,
                                 tol=self.config.cg_tolerance, max_iter=self.config.max_cg_iterations,
                                 preconditioner=pre)
        if record is not None:
            record.add_cg(res.converged, res.iterations, float(res.relative_residual.max()))
        return res.x

    def _draw_batches(self, num_samples, gen, record, progress):
        """Batches ``(s, N)`` of posterior draws (float64)."""
        if self.kernel is not None:
            mean, cov = self._kernel_posterior(record)
            chol = posterior_cholesky(cov, record)   # one factorisation for every batch
            bs = self.config.sample_batch_size
            for start in range(0, num_samples, bs):
                yield self._lift(exact_samples(mean, cov, min(bs, num_samples - start), gen, record, cholesky=chol))
            return
        yield from matheron_batches(self.prior_mean, self.jac, self.prior, self.kernel_op,
                                    self.log_lengthscale, self.log_variance, self.log_noise_variance.exp(),
                                    num_samples, gen, self._preconditioner(), tol=self.config.cg_tolerance,
                                    max_iter=self.config.max_cg_iterations,
                                    batch_size=self.config.sample_batch_size, target=self.target,
                                    record=record, progress=progress)

    def sample(self, num_samples: int, seed: int = 0, num_chains: int = 1,
               progress: bool | None = None) -> Posterior:
        """Posterior image draws: exact Cholesky (exact path) or Matheron + CG (scalable path).

        Parameters
        ----------
        num_samples : int
            Total draws, divisible by ``num_chains``.
        seed : int
            Seeds a generator on the data's device.
        num_chains : int
            Independent draws are split into this many "chains" (for ArviZ).
        progress : bool, optional
            Bar over the Matheron batches (default: the constructor's setting).

        Returns
        -------
        Posterior
            ``method="linearised-dip"``, samples ``(chains, draws, C, H, W)`` in the
            fit's dtype. ``extras``: ``log_evidence``, ``predcp_scale``,
            ``path``, ``expansion``, ``map_estimate`` (the DIP output ``x*``),
            ``subspace`` (``{"rank", "missed_fraction"}`` on the subspace path, else None),
            ``solver_converged`` (every CG solve met its tolerance),
            ``adjointness_error`` (the operator's, measured at construction) and
            ``numerics`` (``{"evidence", "sampling"[, "optimisation"]}``).
        """
        check_int("num_samples", num_samples, minimum=1)
        check_int("seed", seed, minimum=0)
        check_int("num_chains", num_chains, minimum=1)
        if num_samples % num_chains:
            raise ValueError(f"num_samples={num_samples} must be divisible by num_chains={num_chains}")
        progress = self.progress if progress is None else progress
        gen = torch.Generator(device=self.y.device).manual_seed(seed)
        record = NumericalRecord(evaluations=1)
        with torch.no_grad(), recording_warnings(record):
            if self.kernel is not None:   # one factorisation for all draws
                flat = self._lift(exact_samples(*self._kernel_posterior(record), num_samples, gen, record))
            else:
                flat = torch.cat(list(self._draw_batches(num_samples, gen, record, progress)))
        shape = tuple(self.fit.x.shape[1:])
        samples = flat.to(self.fit.x.dtype).reshape(num_chains, num_samples // num_chains, *shape)
        return self._posterior(samples, record, seed)

    def posterior_moments(self, num_samples: int, seed: int = 0, progress: bool | None = None):
        """Per-pixel posterior mean and std from ``num_samples`` draws, never storing them all.

        Draws are made in batches of ``config.sample_batch_size`` and folded into
        running moments. Returns ``(mean, std, record)``: two ``(C, H, W)`` tensors
        in the fit's dtype and the :class:`NumericalRecord` of the draws.
        """
        check_int("num_samples", num_samples, minimum=2)
        check_int("seed", seed, minimum=0)
        progress = self.progress if progress is None else progress
        gen = torch.Generator(device=self.y.device).manual_seed(seed)
        record, moments = NumericalRecord(evaluations=1), RunningMoments()
        with torch.no_grad(), recording_warnings(record):
            for batch in self._draw_batches(num_samples, gen, record, progress):
                moments.update(batch)
        shape, dt = tuple(self.fit.x.shape[1:]), self.fit.x.dtype
        return (moments.mean.reshape(shape).to(dt), moments.variance.sqrt().reshape(shape).to(dt), record)

    def _posterior(self, samples, record, seed) -> Posterior:
        log_ev = self.log_evidence()
        trace = self.evidence_trace if self.evidence_trace is not None else np.array([log_ev])
        numerics = {"evidence": self.last_numerics.to_dict(), "sampling": record.to_dict()}
        if self.evidence_result is not None:
            numerics["optimisation"] = self.evidence_result.numerics.to_dict()
        nv = self.log_noise_variance.exp()
        return Posterior(samples, method="linearised-dip", operator=self.op,
                         noise_std=float(nv.sqrt()), seed=seed, evidence_trace=trace,
                         hyperparameters=self.hyperparameters, log_evidence=log_ev,
                         predcp_scale=self.predcp_scale, path=self.path,
                         expansion=self.config.expansion, g_prior=self.config.g_prior,
                         map_estimate=self.fit.x.detach().clone(),
                         solver_converged=all(v["converged"] for v in numerics.values()),
                         numerics=numerics, subspace=self.subspace_summary,
                         adjointness_error=self.adjointness_error)
