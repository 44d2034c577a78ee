"""Linearised Laplace for a fitted deep image prior: type-II evidence and posterior samples.

The DIP ``x* = f_θ*(z)`` linearised in its conv filters is the Gaussian-linear
model ``x = x* + J (θ - θ*)``, ``θ ~ N(0, Σ_θ(φ))``, ``y = A x + N(0, σ_y² I)``
(a GP over images with kernel ``K = J Σ_θ Jᵀ``), written in GPyTorch's terms in
:mod:`.gp`: hyperparameters ``φ = (log ℓ_b, σ_b², σ_y²)`` live in a
``gpytorch.Module`` with registered constraints (and optional priors, e.g. the
TV-PredCP), the noise in a ``GaussianLikelihood`` and the marginal of ``y`` is a
``MultivariateNormal`` with a lazy covariance ``A J Σ_θ Jᵀ Aᵀ + σ_y² I``.

Two evidences: ``expansion="linearised"``, the exact evidence of the
linear model (the marginal's ``log_prob``); ``expansion="fit"`` (default), MacKay's
Laplace evidence at the fitted weights,
``-½ log|K_yy| - ½ (‖y - A x*‖² / σ_y² + θ*ᵀ Σ_θ⁻¹ θ*) - (m/2) log 2π``.
Hyperparameters maximise :meth:`LinearisedLaplace.optimisation_objective` (evidence
plus registered log priors; the function the gradient tests check) by L-BFGS, or
are fitted by sample-based EM (:mod:`.hyperfit`).

The numerics live in one backend per computational path (:mod:`.backends`;
:mod:`.resources` chooses the path from a memory budget): ``exact``
(:class:`~.backends.ExactBackend`: dense Jacobian, distance-class pieces,
Cholesky), ``subspace`` (:class:`~.backends.SubspaceBackend`: the same on the
leading range of ``J``, :mod:`.subspace`) and ``scalable``
(:class:`~.backends.MatrixFreeBackend`: matrix-free ``J``, preconditioned CG, SLQ,
Matheron samples). :class:`LinearisedLaplace` builds the Jacobian, the prior and
the hyperparameters, and delegates everything path-specific to its backend.

Numerical trouble (CG short of tolerance, Cholesky jitter) is warned and
recorded in a :class:`NumericalRecord` on the results.
"""

from __future__ import annotations

import math
import time
import warnings

import gpytorch
import numpy as np
import torch

from ..._validation import check_int, check_positive
from ...operators.base import LinearOperator, adjointness_error
from ...posterior import Posterior
from ..dip import DIPFit
from .backends import BACKENDS, LinearModelBackend
from .config import (AdjointMismatchWarning, EvidenceConvergenceWarning, EvidenceResult, LaplaceConfig,
                     NumericalRecord, _check_config, check_lengthscale)
from .evidence import adjoint_rows
from .gp import LinearisedGaussianLikelihood, LinearisedHyperparameters, TVPredCPPrior, predcp_closure
from .hyperfit import optimise_evidence
from .jacobian import NetworkJacobian, g_prior_column_scale, linearised_groups
from .linalg import recording_warnings
from .predcp import TVPredCP
from .resources import plan_path
from .sampling import RunningMoments
from .weight_prior import MaternFilterPrior

__all__ = ["LaplaceConfig", "EvidenceResult", "LinearisedLaplace", "EvidenceConvergenceWarning",
           "NumericalRecord"]


def _backend_attribute(name: str, doc: str) -> property:
    """A read-only view of the backend's attribute ``name`` (the backend's coordinates)."""
    return property(lambda self: getattr(self.backend, name), doc=doc)


class LinearisedLaplace:
    """Linearised Laplace approximation of a fitted DIP.

    Parameters
    ----------
    fit : DIPFit
        From :func:`bayes_recon.inference.dip.fit_dip` (or any ``DIPFit`` whose
        network has 3x3 convs).
    op : LinearOperator
        The forward model of the fit; ``adjointness_error(op) <=
        config.adjoint_tolerance``, or ``config.adjoint_mismatch="warn"``.
    noise_std : float, optional
        Fix ``σ_y`` (the likelihood's noise is frozen). None: ``σ_y²`` is a
        hyperparameter, initialised at the mean squared residual.
    config : LaplaceConfig, optional
    progress : bool

    Attributes
    ----------
    backend : LinearModelBackend
        The path's numerics and coordinates (:mod:`.backends`).
    path : str
        ``"exact"``, ``"subspace"`` or ``"scalable"``; ``path_estimates`` has each
        path's predicted memory and time, ``memory_budget`` the budget used.
    hyper : LinearisedHyperparameters
        The ``gpytorch.Module`` of ``log ℓ_b`` and ``σ_b²``.
    likelihood : LinearisedGaussianLikelihood
    log_lengthscale, log_variance, log_noise_variance : torch.Tensor
        Current hyperparameters (detached float64 copies; set with
        :meth:`set_hyperparameters`).
    model, mll, subspace, jac, kernel_op, y, m, x_star, prior_mean, target, kernel
        Read-only views of the backend's (see :class:`~.backends.LinearModelBackend`):
        on the subspace path ``jac``, ``kernel_op``, ``y``, ``m``, ``x_star``,
        ``prior_mean`` and ``target`` are in the subspace's coordinates
        (``u = Qᵀ (x - x*)``); ``subspace`` is None off it.
    adjointness_error : float
        The operator's, measured at construction.
    evidence_result : EvidenceResult or None
    last_numerics : NumericalRecord or None
    timings : dict

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity
    >>> from bayes_recon.models.unet import UNetConfig
    >>> from bayes_recon.inference.dip import fit_dip
    >>> op = Identity((1, 8, 8))
    >>> y = torch.zeros(1, 1, 8, 8); y[..., 2:6, 2:6] = 1.0
    >>> fit = fit_dip(y, op, 1e-3, 30, progress=False,
    ...               network_config=UNetConfig(scales=2, channels=4, skip_channels=(0, 4)))
    >>> la = LinearisedLaplace(fit, op, progress=False)
    >>> res = la.optimise_evidence(progress=False)
    >>> post = la.sample(100, seed=0)
    >>> post.samples.shape
    torch.Size([1, 100, 1, 8, 8])
    """

    model = _backend_attribute("model", ":class:`~.gp.LinearisedGP` of the backend.")
    mll = _backend_attribute("mll", "The GP's MLL: exact (\"linearised\") or MacKay's (\"fit\"), per datum.")
    subspace = _backend_attribute("subspace", "``JacobianSubspace`` of the subspace path, else None.")
    jac = _backend_attribute("jac", "``J`` in the backend's coordinates (``W = Qᵀ J`` on the subspace path).")
    kernel_op = _backend_attribute("op", "The forward model in the backend's coordinates (``op`` or ``H``).")
    y = _backend_attribute("y", "``(1, m)`` float64 data in the backend's coordinates.")
    m = _backend_attribute("m", "Number of data rows in the backend's coordinates.")
    x_star = _backend_attribute("x_star", "``x* (n,)`` float64 in the backend's coordinates.")
    prior_mean = _backend_attribute("prior_mean", "``m₀ (n,)``: ``x*`` (\"fit\") or ``x* - J θ*``.")
    target = _backend_attribute("target", "``t = y - A m₀ (m,)`` (\"linearised\") or None (\"fit\").")
    kernel = _backend_attribute("kernel", "``ExactKernel`` (exact and subspace paths) or None.")

    def __init__(self, fit: DIPFit, op: LinearOperator, noise_std: float | None = None,
                 config: LaplaceConfig | None = None, progress: bool = True):
        if not isinstance(fit, DIPFit):
            raise TypeError(f"fit must be a DIPFit, got {type(fit).__name__}")
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
        if tuple(fit.x.shape[1:]) != tuple(op.domain_shape):
            raise ValueError(f"op.domain_shape must match the fitted image shape "
                             f"{tuple(fit.x.shape[1:])}, got {op.domain_shape}")
        if tuple(fit.y.shape) != (1, *op.range_shape):
            raise ValueError(f"fit.y must have shape (1, *op.range_shape) = {(1, *op.range_shape)}, "
                             f"got {tuple(fit.y.shape)}")
        cfg = config or LaplaceConfig()
        if not isinstance(cfg, LaplaceConfig):
            raise TypeError(f"config must be a LaplaceConfig, got {type(cfg).__name__}")
        _check_config(cfg)
        self.fixed_noise = noise_std is not None
        if self.fixed_noise:
            noise_std = check_positive("noise_std", noise_std)
        adj = adjointness_error(op, trials=3)
        self.adjointness_error = float(adj)
        if not adj <= cfg.adjoint_tolerance:
            text = (f"op fails the adjointness check: adjointness_error(op) = {adj:.3g} > "
                    f"config.adjoint_tolerance = {cfg.adjoint_tolerance:g}; the evidence and "
                    "the posterior need Aᵀ to be the exact adjoint of A")
            if cfg.adjoint_mismatch == "raise":
                raise ValueError(text + " (config.adjoint_mismatch='warn' runs anyway)")
            warnings.warn(text + ": running with the given adjoint (config.adjoint_mismatch='warn')",
                          AdjointMismatchWarning, stacklevel=2)
        self.config, self.op, self.fit, self.progress = cfg, op, fit, progress
        self.groups = linearised_groups(fit.network, cfg.include_1x1)
        self.prior = MaternFilterPrior(self.groups)
        self.timings: dict[str, float] = {}
        self.path_estimates, self.memory_budget, self.path = plan_path(fit, op, self.prior, cfg)
        backend_cls = BACKENDS[self.path]
        t0 = time.perf_counter()
        jac = NetworkJacobian(fit.network, fit.input, self.groups, dense=backend_cls.dense_jacobian,
                              chunk_size=cfg.jacobian_chunk, progress=progress)
        self.timings["jacobian"] = time.perf_counter() - t0
        y = fit.y.to(torch.float64) if not fit.y.is_complex() else fit.y.to(torch.complex128)
        y_rows = (torch.cat([y.real, y.imag], 1) if y.is_complex() else y).reshape(1, -1).to(jac.theta.device)
        if cfg.g_prior:
            t0 = time.perf_counter()
            jac.set_column_scale(g_prior_column_scale(jac, lambda u: adjoint_rows(op, u), y_rows.shape[1],
                                                      cfg.g_prior_probes, cfg.probe_seed))
            self.timings["g_prior"] = time.perf_counter() - t0
        self._initial = self.prior.initial_hyperparameters(jac.linear_theta, cfg.init_lengthscale,
                                                           cfg.init_variance, cfg.min_log_variance)
        self.backend: LinearModelBackend = backend_cls(jac, self.prior, op, y_rows, cfg,
                                                       (self._initial[0], self._initial[1].log()),
                                                       self.timings, progress)
        self._build_hyperparameters(noise_std)
        self._predcp: TVPredCP | None = None
        self.evidence_trace: np.ndarray | None = None
        self.evidence_result: EvidenceResult | None = None
        self.last_numerics: NumericalRecord | None = None
        self.predcp_scale = 0.0

    # ------------------------------------------------------------ setup
    def _initial_hyperparameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log ℓ (L,), σ² (G,))`` the fit starts from (:meth:`.MaternFilterPrior.initial_hyperparameters`)."""
        return self._initial[0].clone(), self._initial[1].clone()

    def _build_hyperparameters(self, noise_std):
        cfg, b = self.config, self.backend
        log_ls, var = self._initial_hyperparameters()
        self.hyper = LinearisedHyperparameters(log_ls, var, min_log_variance=cfg.min_log_variance)
        if self.fixed_noise:
            nv = noise_std**2
        else:
            nv = max(b.residual_mean_square, 1e-6 * b.data_mean_square, 1e-30)
        self.likelihood = LinearisedGaussianLikelihood(nv, fixed=self.fixed_noise,
                                                       preconditioner_rank=cfg.preconditioner_rank,
                                                       seed=cfg.probe_seed, device=b.y.device)
        b.bind(self.hyper, self.likelihood)

    # --------------------------------------------------- hyperparameters
    @property
    def block_names(self) -> list[str]:
        """Names of the prior groups (``"inc"``, ``"down_0"``, ..., ``"skip_0:1x1"``)."""
        return self.prior.names

    @property
    def log_lengthscale(self) -> torch.Tensor:
        return self.hyper.log_lengthscale.detach().clone()

    @property
    def log_variance(self) -> torch.Tensor:
        return self.hyper.log_variance.detach().clone()

    @property
    def log_noise_variance(self) -> torch.Tensor:
        return self.likelihood.log_noise_variance.detach().clone()

    @property
    def lengthscale_constraint(self):
        """The registered ``gpytorch.constraints.Interval`` on ``log ℓ``."""
        return self.hyper.raw_log_lengthscale_constraint

    @property
    def raw_lengthscale(self) -> torch.Tensor:
        """Unconstrained lengthscales ``(L,)``: ``log_lengthscale = lengthscale_constraint.transform(raw)``."""
        return self.hyper.raw_log_lengthscale.detach().clone()

    @property
    def hyperparameters(self) -> dict:
        """Current ``lengthscale/<block>``, ``variance/<block>`` and ``noise_std`` as floats; with a
        variance floor also ``min_log_variance`` and ``floored_blocks`` (the blocks on the floor)."""
        out = {}
        log_ls, log_var = self.log_lengthscale, self.log_variance
        for j, gi in enumerate(self.prior.matern_groups):
            out[f"lengthscale/{self.groups[gi].name}"] = float(log_ls[j].exp())
        for gi, g in enumerate(self.groups):
            out[f"variance/{g.name}"] = float(log_var[gi].exp())
        out["noise_std"] = float(self.log_noise_variance.exp().sqrt())
        if self.config.min_log_variance is not None:
            out["min_log_variance"] = float(self.config.min_log_variance)
            out["floored_blocks"] = self.floored_blocks
        return out

    @property
    def floored_blocks(self) -> list[str]:
        """Names of the blocks whose ``log σ_b²`` is on ``config.min_log_variance`` (empty without one)."""
        return [g.name for g, f in zip(self.groups, self.hyper.floored().tolist()) if f]

    def set_hyperparameters(self, lengthscale: dict | None = None, variance: dict | None = None,
                            noise_std: float | None = None) -> None:
        """Set hyperparameters by block name.

        ``ValueError`` for an unknown block, a non-positive value or a
        lengthscale outside ``exp(LOG_LENGTHSCALE_BOUNDS)`` (naming it).
        """
        log_ls, log_var = self.log_lengthscale, self.log_variance
        for name, v in (lengthscale or {}).items():
            gi = self.prior.check_block(name)
            if gi not in self.prior.matern_groups:
                raise ValueError(f"block {name!r} is a 1x1 group and has no lengthscale")
            v = check_positive(f"lengthscale[{name!r}]", v)
            check_lengthscale(f"lengthscale[{name!r}]", v)
            log_ls[self.prior.matern_groups.index(gi)] = math.log(v)
        for name, v in (variance or {}).items():
            log_var[self.prior.check_block(name)] = math.log(check_positive(f"variance[{name!r}]", v))
        self.hyper.set(log_ls, log_var)
        if noise_std is not None:
            self.likelihood.noise = torch.tensor(check_positive("noise_std", noise_std)**2, dtype=torch.float64,
                                                 device=self.y.device)

    def set_prior(self, prior: "gpytorch.priors.Prior | None", closure=predcp_closure,
                  name: str = "hyper_prior") -> None:
        """Register (or with None drop) a prior on the hyperparameter module.

        ``closure(hyper)`` gives the prior's argument (default ``cat([log ℓ, log σ²])``,
        what :class:`~.gp.TVPredCPPrior` expects). Registered priors enter
        :meth:`optimisation_objective` (so L-BFGS) and the EM lengthscale steps.
        """
        if name in self.hyper._priors:
            del self.hyper._priors[name]
            delattr(self.hyper, name)
        if prior is not None:
            self.hyper.register_prior(name, prior, closure)

    # ----------------------------------------------------------- evidence
    def log_evidence(self) -> float:
        """Log evidence at the current hyperparameters (see the module docstring).

        Numerical warnings are re-emitted and recorded in :attr:`last_numerics`.
        """
        record = NumericalRecord(evaluations=1)
        self.last_numerics = record
        with torch.no_grad(), recording_warnings(record):
            return float(self.backend.evaluate(part="evidence"))

    def predcp(self) -> TVPredCP:
        """The TV-PredCP with fixed probes (built on first use)."""
        if self._predcp is None:
            self._predcp = TVPredCP(self.jac, self.prior, tuple(self.fit.x.shape[1:]),
                                    self.config.predcp_samples, self.config.predcp_seed,
                                    basis=self.backend.image_basis, normalisation=self.config.predcp_normalisation)
        return self._predcp

    def predcp_prior(self, scale: float) -> TVPredCPPrior:
        """The TV-PredCP with rate ``scale`` as a GPyTorch prior (pass it to :meth:`set_prior`)."""
        return TVPredCPPrior(self.predcp(), len(self.prior.matern_groups), scale)

    def _priors(self, predcp_scale: float | None):
        """None (the registered priors) or the explicit ``[(prior, closure)]`` of a TV-PredCP rate."""
        if predcp_scale is None:
            return None
        predcp_scale = check_positive("predcp_scale", predcp_scale, allow_zero=True)
        return [(self.predcp_prior(predcp_scale), predcp_closure)] if predcp_scale > 0 else []

    def optimisation_objective(self, raw_ls, log_var, log_nv, predcp_scale: float | None = None,
                               record: NumericalRecord | None = None) -> torch.Tensor:
        """Log evidence plus log priors (0-d, differentiable): exactly what L-BFGS maximises.

        ``raw_ls (L,)`` raw lengthscales (``log ℓ = lengthscale_constraint.transform(raw_ls)``),
        ``log_var (G,)`` (used as ``max(log σ_b², config.min_log_variance)``), ``log_nv``
        0-d or ``(1,)``, float64. ``predcp_scale``: None (as L-BFGS) the priors registered
        with :meth:`set_prior`; 0 none; ``κ > 0`` the TV-PredCP with rate ``κ`` instead.
        ``record`` is accepted for compatibility (the caller's :func:`~.linalg.recording_warnings`
        records jitter and CG).
        """
        return self.backend.evaluate((raw_ls, log_var, log_nv), "all", self._priors(predcp_scale))

    def objective(self, log_ls, log_var, log_nv, predcp_scale: float | None = None,
                  record: NumericalRecord | None = None) -> torch.Tensor:
        """:meth:`optimisation_objective` at ``raw_ls = lengthscale_constraint.inverse_transform(log_ls)``.

        ``log_ls (L,)``, ``log_var (G,)``, ``log_nv`` 0-d, float64.
        """
        raw = self.lengthscale_constraint.inverse_transform(log_ls)
        return self.optimisation_objective(raw, log_var, log_nv, predcp_scale, record)

    def log_prior(self, raw_ls, log_var, predcp_scale: float | None = None) -> torch.Tensor:
        """The log-prior part of :meth:`optimisation_objective` (same arguments; 0-d)."""
        raw = (raw_ls, log_var, self.likelihood.noise_covar.raw_noise)
        return self.backend.evaluate(raw, "prior", self._priors(predcp_scale))

    def optimise_evidence(self, iterations: int | None = None, predcp_scale: float | None = None,
                          progress: bool | None = None, method: str | None = None) -> EvidenceResult:
        """Fit ``φ``: maximise the evidence plus registered priors (see :func:`.hyperfit.optimise_evidence`).

        ``predcp_scale``: None keeps the registered priors, 0 drops the TV-PredCP,
        ``κ > 0`` registers it with rate κ ("TV-MAP"). ``method``: ``"lbfgs"``,
        ``"em"``, or None for ``config.hyperparameter_method``.
        """
        return optimise_evidence(self, iterations, predcp_scale, progress, method)

    # ---------------------------------------------------------- posterior
    @property
    def subspace_summary(self) -> dict | None:
        """``{"rank", "missed_fraction"}`` of the subspace path (None on the other paths)."""
        return self.backend.subspace_summary()

    def posterior_mean(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior mean ``m₀ + K Aᵀ K_yy⁻¹ t`` ``(N,)`` float64.

        ``x*`` for ``expansion="fit"``; for ``"linearised"`` the mean of the
        linear model, by Cholesky (exact and subspace paths) or preconditioned CG
        (scalable path; its outcome goes to ``record``, a short solve warns).
        """
        return self.backend.posterior_mean(record)

    def posterior_covariance(self, record: NumericalRecord | None = None) -> torch.Tensor:
        """Image posterior covariance ``K - K Aᵀ K_yy⁻¹ A K`` ``(N, N)`` float64 (exact and subspace paths).

        The same for both expansions (on the subspace path ``Q C Qᵀ`` with ``C`` the
        subspace posterior covariance); a Cholesky jitter is warned and added to
        ``record`` if given. ``ValueError`` on the scalable path.
        """
        return self.backend.posterior_covariance(record)

    def solve_kyy(self, rhs: torch.Tensor, record: NumericalRecord | None = None, x0=None,
                  preconditioner=None) -> torch.Tensor:
        """``K_yy⁻¹ R`` row-wise for ``R (k, m)`` float64: Cholesky (dense kernel) or preconditioned CG.

        ``x0`` (a warm start) and ``preconditioner`` are used by CG only. CG short of
        ``config.cg_tolerance`` warns ``CGConvergenceWarning`` and is added to ``record``.
        """
        return self.backend.solve_kyy(rhs, record, x0=x0, preconditioner=preconditioner)

    def sample(self, num_samples: int, seed: int = 0, num_chains: int = 1,
               progress: bool | None = None) -> Posterior:
        """Posterior image draws: exact Cholesky (exact, subspace paths) or Matheron + CG (scalable path).

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
            flat = self.backend.draws(num_samples, gen, record, progress)
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
            for batch in self.backend.draw_batches(num_samples, gen, record, progress):
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
