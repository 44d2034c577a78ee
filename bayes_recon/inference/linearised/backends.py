"""The three computational paths of :class:`~.laplace.LinearisedLaplace`, one backend class each.

A backend owns the linear model ``x = m₀ + J θ``, ``θ ~ N(0, Σ_θ(φ))``,
``y = A x + N(0, σ² I)`` in its own coordinates (its ``jac``, ``op``, ``y``, ``m``,
``x_star``, ``prior_mean``, ``target``; nothing is rewritten after construction)
and, once bound to the hyperparameter module and the likelihood
(:meth:`LinearModelBackend.bind`), answers at their current values with the same
methods:

* ``data_covariance(log ℓ, log σ²)``: ``A K Aᵀ`` ``(m, m)`` as a ``linear_operator``
  (the covariance of :class:`~.gp.LinearisedGP`);
* ``solve_kyy(R)``: ``K_yy⁻¹ R`` row-wise;
* ``posterior_mean()``, ``posterior_covariance()`` (dense backends) and
  ``draws`` / ``draw_batches``: the image posterior, lifted to pixels;
* ``evaluate(raw, part, priors)``: log evidence and/or log priors
  (:class:`~.gp.LinearisedEvidence`) at any raw hyperparameters; its gradient is
  autograd through the same call.

The backends (``path``):

* :class:`ExactBackend` (``"exact"``): pixels and a dense ``J``; distance-class
  kernel pieces, Cholesky solves, exact draws;
* :class:`SubspaceBackend` (``"subspace"``): ``u = Qᵀ (x - x*)`` with ``W = Qᵀ J`` and
  ``A Q = U H`` (:mod:`.subspace`); the exact numerics on ``r x r`` matrices;
* :class:`MatrixFreeBackend` (``"scalable"``): pixels and matrix-free ``J``;
  Nyström-preconditioned CG, SLQ log-determinants, Matheron draws.
"""

from __future__ import annotations

import contextlib
import time

import gpytorch
import torch
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.operators import DenseLinearOperator

from ...operators.cg import conjugate_gradient
from .config import NumericalRecord
from .evidence import DataKernelOperator, ExactKernel, NystromPreconditioner, adjoint_rows, forward_rows
from .gp import LinearisedEvidence, LinearisedGP, MacKayMarginalLogLikelihood
from .sampling import (_kyy_cholesky, exact_posterior_covariance, exact_posterior_mean, exact_samples,
                       matheron_batches, posterior_cholesky)
from .subspace import jacobian_subspace

__all__ = ["LinearModelBackend", "ExactBackend", "SubspaceBackend", "MatrixFreeBackend", "BACKENDS"]


class LinearModelBackend:
    """The linearised model in one set of coordinates (base of the three backends).

    Parameters
    ----------
    jac : NetworkJacobian
        ``J`` of the fitted network at ``θ*`` (column scale already set for a g-prior);
        dense iff the class's ``dense_jacobian``.
    prior : MaternFilterPrior
    op : LinearOperator
        The forward model ``A``.
    y_rows : torch.Tensor
        ``(1, m)`` float64 data (complex stacked as ``[Re, Im]``).
    config : LaplaceConfig
    initial : tuple of torch.Tensor
        ``(log ℓ (L,), log σ² (G,))``, the initial hyperparameters (the prior the
        subspace sketch draws from).
    timings : dict
        Receives the seconds of the backend's setup steps.
    progress : bool

    Attributes
    ----------
    path : str
        ``"exact"``, ``"subspace"`` or ``"scalable"``.
    jac, op
        ``J`` and ``A`` in the backend's coordinates (``n`` "pixels", ``m`` data rows).
    y : torch.Tensor
        ``(1, m)`` data in those coordinates.
    x_star : torch.Tensor
        ``x* (n,)`` float64 (0 in subspace coordinates).
    residual : torch.Tensor
        ``y - A x* (m,)``.
    prior_mean : torch.Tensor
        ``m₀ (n,)``: ``x*`` ("fit") or ``x* - J θ*`` ("linearised").
    target : torch.Tensor or None
        ``t = y - A m₀ (m,)`` ("linearised"), None ("fit").
    grams : list of torch.Tensor
        ``Θ_bᵀΘ_b`` of ``θ*`` per group.
    kernel : ExactKernel or None
        Distance-class pieces (dense backends).
    subspace : JacobianSubspace or None
    image_basis : torch.Tensor or None
        ``Q (N, r)`` when coordinates are not pixels (images are ``x* + Q u``).
    outside : tuple of (float, int)
        ``(‖(I - U Uᵀ) r‖², count)``: data outside the coordinates, pure noise.
    residual_mean_square, data_mean_square : float
        Of the whole data ``y - A x*`` and ``y`` (the initial noise variance).
    model, mll, evidence_module
        :class:`~.gp.LinearisedGP`, its marginal log likelihood and
        :class:`~.gp.LinearisedEvidence` (set by :meth:`bind`).
    """

    path = ""
    dense_jacobian = False
    #: The evidence is stochastic (SLQ), so "auto" fits the "linearised" model by EM.
    prefers_em = False
    kernel = None
    subspace = None
    image_basis = None

    def __init__(self, jac, prior, op, y_rows, config, initial, timings, progress=False):
        f64 = torch.float64
        self.jac, self.prior, self.op, self.config = jac, prior, op, config
        self.timings, self.progress = timings, progress
        self.y, self.m, self.outside = y_rows, y_rows.shape[1], (0.0, 0)
        self.x_star = jac.output.detach().to(f64)
        self.residual = (self.y - forward_rows(op, self.x_star[None])).reshape(-1)
        self.residual_mean_square = float(self.residual.pow(2).mean())
        self.data_mean_square = float(self.y.pow(2).mean())
        theta = jac.linear_theta                                            # θ* in J's coordinates
        self.grams = prior.filter_grams(theta)
        self.prior_mean, self.target = self.x_star, None
        if config.expansion == "linearised":
            j_theta = jac.jvp(theta[None]).to(f64)                          # (1, n)
            self.prior_mean = self.x_star - j_theta.reshape(-1)
            self.target = self.residual + forward_rows(op, j_theta).reshape(-1)

    def bind(self, hyper, likelihood) -> None:
        """Build the GP, its MLL and the evidence module on ``hyper`` and ``likelihood``."""
        self.hyper, self.likelihood = hyper, likelihood
        mean = forward_rows(self.op, self.prior_mean[None]).reshape(-1)
        self.model = LinearisedGP(hyper, mean, self.data_covariance, self.prior, self.grams)
        linearised = self.config.expansion == "linearised"
        self.mll = (ExactMarginalLogLikelihood if linearised else MacKayMarginalLogLikelihood)(likelihood,
                                                                                            self.model)
        self.evidence_module = LinearisedEvidence(self.mll, self.y.reshape(-1), self.config.expansion,
                                                  self.outside)

    def _current(self):
        """Detached ``(log ℓ (L,), log σ² (G,), σ²)`` of the bound modules."""
        return (self.hyper.log_lengthscale.detach(), self.hyper.log_variance.detach(),
                self.likelihood.log_noise_variance.detach().exp())

    def _settings(self):
        """GPyTorch settings of the matrix-free numerics (CG, SLQ, probes, preconditioner)."""
        cfg, s = self.config, gpytorch.settings
        return [s.max_cholesky_size(0), s.cg_tolerance(cfg.cg_tolerance),
                s.max_cg_iterations(cfg.max_cg_iterations), s.num_trace_samples(cfg.num_probes),
                s.max_lanczos_quadrature_iterations(cfg.lanczos_iterations),
                s.max_preconditioner_size(cfg.preconditioner_rank)]

    def evaluate(self, raw=None, part: str = "all", priors=None) -> torch.Tensor:
        """``evidence_module(part, priors)`` (see :class:`~.gp.LinearisedEvidence`), 0-d.

        ``raw = (raw log ℓ (L,), log σ² (G,), log σ² noise (0-d or (1,)))`` replaces the
        modules' own parameters (None: use them). Runs with fixed SLQ probes (common
        random numbers, seeded by ``config.probe_seed``) and the config's settings.
        """
        dev = self.y.device
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []))
            torch.manual_seed(self.config.probe_seed)
            for setting in self._settings():
                stack.enter_context(setting)
            if raw is None:
                return self.evidence_module(part, priors)
            params = {"mll.model.hyper.raw_log_lengthscale": raw[0], "mll.model.hyper.raw_variance": raw[1],
                      "mll.likelihood.noise_covar.raw_noise": raw[2].reshape(1)}
            return torch.func.functional_call(self.evidence_module, params, (part, priors), strict=False)

    def lift(self, rows: torch.Tensor) -> torch.Tensor:
        """Coordinates ``(s, n)`` to images ``(s, N)`` (identity for pixel coordinates)."""
        return rows

    def subspace_summary(self) -> dict | None:
        """``{"rank", "missed_fraction"}`` of a subspace (None for pixel coordinates)."""
        return None

    # The interface every backend implements (shapes as in LinearisedLaplace's methods).
    def data_covariance(self, log_lengthscale, log_variance):
        """``A K Aᵀ`` ``(m, m)`` as a ``linear_operator``, differentiable in both ``(L,)``, ``(G,)``."""
        raise NotImplementedError

    def solve_kyy(self, rhs: torch.Tensor, record: NumericalRecord | None = None, x0=None,
                  preconditioner=None) -> torch.Tensor:
        """``K_yy⁻¹ R`` for ``R (k, m)``; ``x0`` and ``preconditioner`` serve iterative solves."""
        raise NotImplementedError

    def posterior_mean(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior mean ``m₀ + K Aᵀ K_yy⁻¹ t`` ``(N,)`` float64."""
        raise NotImplementedError

    def posterior_covariance(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior covariance ``(N, N)``: only where ``K`` is dense (``ValueError`` otherwise)."""
        raise ValueError("posterior_covariance needs path='exact' or 'subspace' (dense kernel); "
                         f"this model uses path={self.path!r}")

    def draw_batches(self, num_samples: int, generator: torch.Generator, record: NumericalRecord,
                     progress: bool = False):
        """Yield float64 batches ``(s, N)`` of posterior draws (``config.sample_batch_size`` each)."""
        raise NotImplementedError

    def draws(self, num_samples: int, generator: torch.Generator, record: NumericalRecord,
              progress: bool = False) -> torch.Tensor:
        """``(S, N)`` float64 posterior draws."""
        return torch.cat(list(self.draw_batches(num_samples, generator, record, progress)))


class ExactBackend(LinearModelBackend):
    """Pixels and a dense ``J``: distance-class kernel pieces, Cholesky solves, exact draws."""

    path, dense_jacobian = "exact", True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        t0 = time.perf_counter()
        self.kernel = ExactKernel(self.jac, self.prior, self.op, progress=self.progress)
        self.timings["kernel_pieces"] = time.perf_counter() - t0

    def data_covariance(self, log_lengthscale, log_variance):
        """``A K Aᵀ`` ``(m, m)`` as a dense ``linear_operator`` (differentiable in both)."""
        return DenseLinearOperator(self.kernel.data_kernel(log_lengthscale, log_variance))

    def lift_covariance(self, cov: torch.Tensor) -> torch.Tensor:
        """Covariance ``(n, n)`` in the coordinates to pixels ``(N, N)``."""
        return cov

    def solve_kyy(self, rhs: torch.Tensor, record: NumericalRecord | None = None, x0=None,
                  preconditioner=None) -> torch.Tensor:
        """``K_yy⁻¹ R`` for ``R (k, m)`` by Cholesky (``x0``, ``preconditioner``: unused by a direct solve)."""
        ls, var, nv = self._current()
        chol = _kyy_cholesky(self.kernel.data_kernel(ls, var), nv, record)
        return torch.cholesky_solve(rhs.T.contiguous(), chol).T

    def _kernels(self):
        ls, var, _ = self._current()
        return self.kernel.image_kernel(ls, var), self.kernel.data_kernel(ls, var)

    def _mean(self, record, kernels=None) -> torch.Tensor:
        """Posterior mean in the coordinates ``(n,)``."""
        if self.target is None:
            return self.prior_mean.clone()
        with torch.no_grad():
            k, kd = kernels if kernels is not None else self._kernels()
            return exact_posterior_mean(self.prior_mean, k, kd, self._current()[2], self.op, self.target, record)

    def _covariance(self, record, kernels=None) -> torch.Tensor:
        """Posterior covariance in the coordinates ``(n, n)``."""
        with torch.no_grad():
            k, kd = kernels if kernels is not None else self._kernels()
            return exact_posterior_covariance(k, kd, self._current()[2], self.op, record)

    def _moments(self, record):
        """``(mean, covariance)`` in the coordinates, the kernels built once."""
        with torch.no_grad():
            kernels = self._kernels()
            return self._mean(record, kernels), self._covariance(record, kernels)

    def posterior_mean(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior mean ``(N,)`` float64 (Cholesky; jitter recorded in ``record``)."""
        return self.lift(self._mean(record)[None])[0]

    def posterior_covariance(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior covariance ``K - K Aᵀ K_yy⁻¹ A K`` ``(N, N)`` float64."""
        return self.lift_covariance(self._covariance(record))

    def draws(self, num_samples, generator, record, progress=False) -> torch.Tensor:
        """``(S, N)`` float64 posterior draws with one factorisation."""
        return self.lift(exact_samples(*self._moments(record), num_samples, generator, record))

    def draw_batches(self, num_samples, generator, record, progress=False):
        """Batches ``(s, N)`` of posterior draws (``config.sample_batch_size``), one factorisation for all."""
        mean, cov = self._moments(record)
        chol = posterior_cholesky(cov, record)
        bs = self.config.sample_batch_size
        for start in range(0, num_samples, bs):
            yield self.lift(exact_samples(mean, cov, min(bs, num_samples - start), generator, record,
                                          cholesky=chol))


class SubspaceBackend(ExactBackend):
    """The exact numerics on the leading range ``Q`` of ``J`` (see :mod:`.subspace`).

    Takes the matrix-free ``J`` and the full ``A`` and ``y``; its own coordinates are
    ``u = Qᵀ (x - x*)`` with Jacobian ``W = Qᵀ J``, forward model ``H`` and data
    ``Uᵀ (y - A x*)``; the data outside ``span U`` enter the evidence as pure noise.
    """

    path, dense_jacobian = "subspace", False

    def __init__(self, jac, prior, op, y_rows, config, initial, timings, progress=False):
        t0 = time.perf_counter()
        sub = jacobian_subspace(jac, prior, op, y_rows, initial[0], initial[1], config.subspace_rank,
                                power_iterations=config.subspace_power_iterations,
                                test_probes=config.subspace_test_probes, tolerance=config.subspace_tolerance,
                                seed=config.probe_seed, progress=progress)
        timings["subspace"] = time.perf_counter() - t0
        super().__init__(sub.jacobian, prior, sub.operator, sub.reduced_data.reshape(1, -1), config, initial,
                         timings, progress)
        self.subspace, self.image_basis = sub, sub.basis
        self.outside = (sub.outside_sq, sub.outside_count)
        # σ² is initialised from the whole residual, not its projection.
        self.residual_mean_square = (float(sub.reduced_data.pow(2).sum()) + sub.outside_sq) / y_rows.shape[1]
        self.data_mean_square = float(y_rows.pow(2).mean())

    def lift(self, rows: torch.Tensor) -> torch.Tensor:
        return self.subspace.lift(rows)

    def subspace_summary(self) -> dict:
        return {"rank": self.subspace.rank, "missed_fraction": self.subspace.missed_fraction}

    def lift_covariance(self, cov: torch.Tensor) -> torch.Tensor:
        return self.subspace.lift_covariance(cov)


class MatrixFreeBackend(LinearModelBackend):
    """Pixels and matrix-free ``J``: Nyström-preconditioned CG, SLQ evidence, Matheron draws."""

    path, prefers_em = "scalable", True

    def data_covariance(self, log_lengthscale, log_variance) -> DataKernelOperator:
        """``A K Aᵀ`` ``(m, m)`` as a matrix-free ``linear_operator`` (differentiable in both)."""
        return DataKernelOperator(log_lengthscale, log_variance, jac=self.jac, prior=self.prior, op=self.op,
                                  size=self.m)

    def preconditioner(self, kop: DataKernelOperator | None = None):
        """Row-wise ``P⁻¹`` for :func:`conjugate_gradient` (None without a Nyström rank)."""
        if self.config.preconditioner_rank <= 0:
            return None
        ls, var, nv = self._current()
        kop = kop if kop is not None else self.data_covariance(ls, var)
        pre = NystromPreconditioner(kop.matmul, self.m, self.config.preconditioner_rank, nv,
                                    self.config.probe_seed, device=self.y.device)
        return lambda r: pre.solve(r.T).T

    def solve_kyy(self, rhs: torch.Tensor, record: NumericalRecord | None = None, x0=None,
                  preconditioner=None) -> torch.Tensor:
        """``K_yy⁻¹ R`` for ``R (k, m)`` by preconditioned CG from ``x0`` (its outcome goes to ``record``)."""
        ls, var, nv = self._current()
        kop = self.data_covariance(ls, var)
        pre = preconditioner if preconditioner is not None else self.preconditioner(kop)
        res = conjugate_gradient(lambda v: kop.matmul(v.T).T + nv * v, rhs, x0=x0,
                                 tol=self.config.cg_tolerance, max_iter=self.config.max_cg_iterations,
                                 preconditioner=pre)
        if record is not None:
            record.add_cg(res.converged, res.iterations, float(res.relative_residual.max()))
        return res.x

    def posterior_mean(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior mean ``m₀ + K Aᵀ K_yy⁻¹ t`` ``(N,)`` float64 by CG."""
        if self.target is None:
            return self.prior_mean.clone()
        with torch.no_grad():
            ls, var, _ = self._current()
            alpha = self.solve_kyy(self.target[None], record)
            g = self.jac.vjp(adjoint_rows(self.op, alpha.to(self.jac.dtype))).to(torch.float64)
            corr = self.jac.jvp(self.prior.apply(g, ls, var).to(self.jac.dtype)).to(torch.float64)
            return self.prior_mean + corr.reshape(-1)

    def draw_batches(self, num_samples, generator, record, progress=False):
        """Batches ``(s, N)`` of Matheron draws (one CG solve per ``config.sample_batch_size``)."""
        ls, var, nv = self._current()
        cfg = self.config
        yield from matheron_batches(self.prior_mean, self.jac, self.prior, self.op, ls, var, nv, num_samples,
                                    generator, self.preconditioner(), tol=cfg.cg_tolerance,
                                    max_iter=cfg.max_cg_iterations, batch_size=cfg.sample_batch_size,
                                    target=self.target, record=record, progress=progress)


#: The backend of each ``path``.
BACKENDS = {cls.path: cls for cls in (ExactBackend, SubspaceBackend, MatrixFreeBackend)}
