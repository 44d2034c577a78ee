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
Hyperparameters are fitted by L-BFGS on the deterministic evidence or by
sample-based EM (:mod:`.hyperfit`). Three computational paths (:mod:`.resources`
chooses one from a memory budget): ``exact`` (dense Jacobian, distance-class
pieces, Cholesky), ``subspace`` (the same on the leading range of ``J``,
:mod:`.subspace`) and ``scalable`` (matrix-free ``J``, preconditioned CG, SLQ,
Matheron samples).

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
from gpytorch.mlls import ExactMarginalLogLikelihood

from ..._validation import check_choice, check_int, check_positive
from ...operators.base import LinearOperator, adjointness_error
from ..dip import DIPFit
from .config import (AdjointMismatchWarning, EvidenceConvergenceWarning, EvidenceResult, LaplaceConfig,
                     NumericalRecord)
from .evidence import ExactKernel, adjoint_rows, forward_rows
from .gp import (LOG_2PI, LinearisedGaussianLikelihood, LinearisedGP, LinearisedHyperparameters,
                 MacKayMarginalLogLikelihood, TVPredCPPrior)
from .hyperfit import optimise_evidence
from .jacobian import NetworkJacobian, linearised_groups
from .hyperparameter_access import HyperparameterAccessMixin, check_lengthscale
from .linalg import recording_warnings
from .posterior_ops import PosteriorMixin
from .predcp import TVPredCP
from .resources import choose_path, default_budget, estimate_paths, network_cost
from .subspace import jacobian_subspace
from .weight_prior import MaternFilterPrior

__all__ = ["LaplaceConfig", "EvidenceResult", "LinearisedLaplace", "EvidenceConvergenceWarning",
           "NumericalRecord"]


class _Evidence(torch.nn.Module):
    """The evidence as a module, so ``torch.func.functional_call`` can evaluate it at any ``φ``.

    ``forward("mll")``: ``m ·`` MLL (evidence plus registered log-priors);
    ``forward("evidence")``: the evidence alone. ``outside = (s, c)``: ``c`` more
    measurements, pure noise with squared norm ``s`` (the subspace path's
    complement), add ``-½ (s / σ² + c log 2πσ²)``.
    """

    def __init__(self, mll, target, expansion, outside=(0.0, 0)):
        super().__init__()
        self.mll, self.target, self.expansion = mll, target, expansion
        self.outside_sq, self.outside_count = float(outside[0]), int(outside[1])

    def forward(self, kind: str = "mll"):
        f = self.mll.model()
        if kind == "mll":
            value = self.mll(f, self.target) * self.target.shape[-1]
        elif self.expansion == "linearised":
            value = self.mll.likelihood(f).log_prob(self.target)
        else:
            value = self.mll.log_evidence(f, self.target)
        if self.outside_count:
            nv = self.mll.likelihood.noise.reshape(())
            value = value - 0.5 * (self.outside_sq / nv + self.outside_count * (LOG_2PI + nv.log()))
        return value


class LinearisedLaplace(HyperparameterAccessMixin, PosteriorMixin):
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
    hyper : LinearisedHyperparameters
        The ``gpytorch.Module`` of ``log ℓ_b`` and ``σ_b²``.
    likelihood : LinearisedGaussianLikelihood
    model : LinearisedGP
    mll : gpytorch.mlls.MarginalLogLikelihood
        ``ExactMarginalLogLikelihood`` ("linearised") or
        :class:`~.gp.MacKayMarginalLogLikelihood` ("fit").
    log_lengthscale, log_variance, log_noise_variance : torch.Tensor
        Current hyperparameters (detached float64 copies; set with
        :meth:`set_hyperparameters`).
    path : str
        ``"exact"``, ``"subspace"`` or ``"scalable"``; ``path_estimates`` has each
        path's predicted memory and time, ``memory_budget`` the budget used.
    subspace : JacobianSubspace or None
        The basis and reduced problem of the subspace path; there ``jac``,
        ``kernel_op``, ``y``, ``m``, ``prior_mean`` and ``target`` are in the
        subspace's coordinates (``u = Qᵀ (x - x*)``), and images are lifted by ``Q``.
    kernel_op : LinearOperator
        The forward model of the kernel's coordinates (``op`` itself off the
        subspace path).
    prior_mean : torch.Tensor
        ``m₀ (N,)`` float64: ``x*`` ("fit") or ``x* - J θ*`` ("linearised").
    target : torch.Tensor or None
        ``t = y - A m₀ (m,)`` for "linearised", None for "fit".
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
        self._choose_path(fit, op)
        t0 = time.perf_counter()
        self.jac = NetworkJacobian(fit.network, fit.input, self.groups, dense=self.path == "exact",
                                   chunk_size=cfg.jacobian_chunk, progress=progress)
        self.timings["jacobian"] = time.perf_counter() - t0
        f64, dev = torch.float64, self.jac.theta.device
        y = fit.y.to(f64) if not fit.y.is_complex() else fit.y.to(torch.complex128)
        y_rows = torch.cat([y.real, y.imag], 1) if y.is_complex() else y
        self.y = y_rows.reshape(1, -1).to(dev)
        self.m = self.y.shape[1]
        self.kernel_op, self.subspace = op, None
        if cfg.g_prior:
            t0 = time.perf_counter()
            self.jac.set_column_scale(self._g_prior_scale())
            self.timings["g_prior"] = time.perf_counter() - t0
        if self.path == "subspace":
            self._project()
        self.x_star = self.jac.output.detach().to(f64)                   # (N,); 0 in subspace coordinates
        self.residual = (self.y - forward_rows(self.kernel_op, self.x_star[None])).reshape(-1)
        theta_lin = self.jac.linear_theta                                   # θ* in J's coordinates
        self.grams = self.prior.filter_grams(theta_lin)
        self.prior_mean, self.target = self.x_star, None
        if cfg.expansion == "linearised":
            j_theta = self.jac.jvp(theta_lin[None]).to(f64)               # (1, N)
            self.prior_mean = self.x_star - j_theta.reshape(-1)
            self.offset_target = self.residual + forward_rows(self.kernel_op, j_theta).reshape(-1)
            self.target = self.offset_target
        self.kernel = None
        if self.path != "scalable":
            t0 = time.perf_counter()
            self.kernel = ExactKernel(self.jac, self.prior, self.kernel_op, progress=progress)
            self.timings["kernel_pieces"] = time.perf_counter() - t0
        self._build_model(noise_std)
        self._predcp: TVPredCP | None = None
        self.evidence_trace: np.ndarray | None = None
        self.evidence_result: EvidenceResult | None = None
        self.last_numerics: NumericalRecord | None = None
        self.predcp_scale = 0.0

    # ------------------------------------------------------------ setup
    def _choose_path(self, fit, op):
        cfg = self.config
        n, p, m = fit.x.numel(), sum(g.size for g in self.groups), op.range_size
        m = 2 * m if op.complex_range else m
        act, fwd = network_cost(fit.network, fit.input)
        sizes = [(g.size, len(c[0])) for g, c in zip(self.groups, self.prior.classes)]
        self.path_estimates = estimate_paths(n, p, m, sizes, act, fwd, fit.x.element_size(), cfg)
        self.memory_budget = float(cfg.memory_budget) if cfg.memory_budget is not None else default_budget()
        self.path = choose_path(cfg.path, self.path_estimates, self.memory_budget,
                                exact_allowed=n * p <= cfg.max_dense_entries)

    def _g_prior_scale(self) -> torch.Tensor:
        """``s_i = (d_i / mean_b d)^{-1/2}``, ``d_i ≈ ‖(A J)_{:, i}‖²`` from seeded Gaussian probes."""
        dev = self.jac.theta.device
        gen = torch.Generator(device=dev).manual_seed(self.config.probe_seed)
        d = torch.zeros(self.jac.num_params, dtype=torch.float64, device=dev)
        k = self.config.g_prior_probes
        for start in range(0, k, self.config.jacobian_chunk):
            u = torch.randn(min(self.config.jacobian_chunk, k - start), self.m, generator=gen,
                            dtype=torch.float64, device=dev)
            d += self.jac.vjp(adjoint_rows(self.kernel_op, u.to(self.jac.dtype))).to(torch.float64).pow(2).sum(0)
        d = d / k
        scale = torch.empty_like(d)
        for g in self.groups:
            db = d[g.slice]
            # Dead weights (zero sensitivity) keep scale 1 instead of an infinite prior.
            scale[g.slice] = (db.clamp_min(1e-12 * float(db.mean()) + 1e-300) / db.mean()).rsqrt()
        return scale

    def _initial_hyperparameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log ℓ (L,), σ² (G,))`` from the config (σ² default: the block's mean squared weight)."""
        cfg, f64, dev = self.config, torch.float64, self.jac.theta.device
        log_ls = torch.full((len(self.prior.matern_groups),), math.log(cfg.init_lengthscale), dtype=f64,
                            device=dev)
        if cfg.init_variance is not None:
            var = torch.full((len(self.groups),), float(cfg.init_variance), dtype=f64, device=dev)
        else:
            theta = self.jac.linear_theta.to(f64)
            var = torch.stack([theta[g.slice].pow(2).mean() for g in self.groups])
        var = var.clamp_min(1e-12)
        if cfg.min_log_variance is not None:
            # Start (and build the subspace sketch) on the floor's side the fit will keep.
            var = var.clamp_min(math.exp(cfg.min_log_variance))
        return log_ls, var

    def _project(self):
        """Swap in the reduced problem of the ``subspace`` path (see :mod:`.subspace`)."""
        cfg = self.config
        t0 = time.perf_counter()
        log_ls, var = self._initial_hyperparameters()
        full_y = self.y
        self.subspace = jacobian_subspace(self.jac, self.prior, self.op, full_y, log_ls, var.log(),
                                          cfg.subspace_rank, power_iterations=cfg.subspace_power_iterations,
                                          test_probes=cfg.subspace_test_probes,
                                          tolerance=cfg.subspace_tolerance, seed=cfg.probe_seed,
                                          progress=self.progress)
        self.timings["subspace"] = time.perf_counter() - t0
        sub = self.subspace
        self.jac, self.kernel_op = sub.jacobian, sub.operator
        self.y = sub.reduced_data.reshape(1, -1)
        self.m = self.y.shape[1]
        # Noise initialised (when σ is unknown) from the whole residual, not its projection.
        self._full_residual_mean_sq = (float(sub.reduced_data.pow(2).sum()) + sub.outside_sq) / full_y.shape[1]
        self._full_y_mean_sq = float(full_y.pow(2).mean())

    def _build_model(self, noise_std):
        cfg, dev = self.config, self.jac.theta.device
        log_ls, var = self._initial_hyperparameters()
        self.hyper = LinearisedHyperparameters(log_ls, var, min_log_variance=cfg.min_log_variance)
        if self.fixed_noise:
            nv = noise_std**2
        elif self.subspace is not None:
            nv = max(self._full_residual_mean_sq, 1e-6 * self._full_y_mean_sq, 1e-30)
        else:
            nv = max(float(self.residual.pow(2).mean()), 1e-6 * float(self.y.pow(2).mean()), 1e-30)
        self.likelihood = LinearisedGaussianLikelihood(nv, fixed=self.fixed_noise,
                                                       preconditioner_rank=cfg.preconditioner_rank,
                                                       seed=cfg.probe_seed, device=dev)
        mean = forward_rows(self.kernel_op, self.prior_mean[None]).reshape(-1)
        self.model = LinearisedGP(self.hyper, mean, self.kernel, self.jac, self.prior, self.kernel_op, self.grams)
        mll_cls = ExactMarginalLogLikelihood if cfg.expansion == "linearised" else MacKayMarginalLogLikelihood
        self.mll = mll_cls(self.likelihood, self.model)
        outside = (self.subspace.outside_sq, self.subspace.outside_count) if self.subspace else (0.0, 0)
        self._evidence_module = _Evidence(self.mll, self.y.reshape(-1), cfg.expansion, outside)

    @property
    def hyperparameters(self) -> dict:
        """As :attr:`HyperparameterAccessMixin.hyperparameters`; with a variance floor also
        ``min_log_variance`` and ``floored_blocks`` (names of the blocks on the floor)."""
        out = super().hyperparameters
        if self.config.min_log_variance is not None:
            out["min_log_variance"] = float(self.config.min_log_variance)
            out["floored_blocks"] = self.floored_blocks
        return out

    @property
    def floored_blocks(self) -> list[str]:
        """Names of the blocks whose ``log σ_b²`` is on ``config.min_log_variance`` (empty without one)."""
        return [g.name for g, f in zip(self.groups, self.hyper.floored().tolist()) if f]

    # ----------------------------------------------------------- evidence
    def _settings(self):
        """GPyTorch settings of the matrix-free path (CG, SLQ, probes, preconditioner)."""
        cfg, s = self.config, gpytorch.settings
        return [s.max_cholesky_size(0), s.cg_tolerance(cfg.cg_tolerance),
                s.max_cg_iterations(cfg.max_cg_iterations), s.num_trace_samples(cfg.num_probes),
                s.max_lanczos_quadrature_iterations(cfg.lanczos_iterations),
                s.max_preconditioner_size(cfg.preconditioner_rank)]

    def _run(self, fn):
        """``fn()`` with fixed SLQ probes (common random numbers) and the config's settings."""
        dev = self.y.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.config.probe_seed)
            ctx = self._settings()
            for c in ctx:
                c.__enter__()
            try:
                return fn()
            finally:
                for c in reversed(ctx):
                    c.__exit__(None, None, None)

    def _functional(self, kind: str, raw_ls=None, log_var=None, log_nv=None):
        """``_Evidence(kind)`` at the given raw parameters (None: the module's own)."""
        if raw_ls is None:
            return self._evidence_module(kind)
        params = {"mll.model.hyper.raw_log_lengthscale": raw_ls, "mll.model.hyper.raw_variance": log_var,
                  "mll.likelihood.noise_covar.raw_noise": log_nv.reshape(1)}
        return torch.func.functional_call(self._evidence_module, params, (kind,), strict=False)

    def log_evidence(self) -> float:
        """Log evidence at the current hyperparameters (see the module docstring).

        Numerical warnings are re-emitted and recorded in :attr:`last_numerics`.
        """
        record = NumericalRecord(evaluations=1)
        self.last_numerics = record
        with torch.no_grad(), recording_warnings(record):
            return float(self._run(lambda: self._functional("evidence")))

    def predcp(self) -> TVPredCP:
        """The TV-PredCP with fixed probes (built on first use)."""
        if self._predcp is None:
            basis = None if self.subspace is None else self.subspace.basis
            self._predcp = TVPredCP(self.jac, self.prior, tuple(self.fit.x.shape[1:]),
                                    self.config.predcp_samples, self.config.predcp_seed, basis=basis,
                                    normalisation=self.config.predcp_normalisation)
        return self._predcp

    def predcp_prior(self, scale: float) -> TVPredCPPrior:
        """The TV-PredCP with rate ``scale`` as a GPyTorch prior (pass it to :meth:`set_prior`)."""
        return TVPredCPPrior(self.predcp(), len(self.prior.matern_groups), scale)

    def objective(self, log_ls, log_var, log_nv, predcp_scale: float = 0.0,
                  record: NumericalRecord | None = None) -> torch.Tensor:
        """Log evidence plus (if ``predcp_scale > 0``) the TV-PredCP log prior; differentiable.

        ``log_ls (L,)``, ``log_var (G,)``, ``log_nv`` 0-d, float64 (registered
        priors are not included). ``record`` is accepted for compatibility (jitter is
        recorded by the caller's :func:`recording_warnings`).
        """
        raw = self.lengthscale_constraint.inverse_transform(log_ls)
        value = self._run(lambda: self._functional("evidence", raw, log_var, log_nv))
        if predcp_scale > 0:
            value = value + self.predcp().log_prob(log_ls, log_var, predcp_scale)
        return value

    def optimisation_objective(self, raw_ls, log_var, log_nv, predcp_scale: float = 0.0,
                               record: NumericalRecord | None = None) -> torch.Tensor:
        """:meth:`objective` at ``log ℓ = lengthscale_constraint.transform(raw_ls)``."""
        value = self._run(lambda: self._functional("evidence", raw_ls, log_var, log_nv))
        if predcp_scale > 0:
            value = value + self.predcp().log_prob(self.lengthscale_constraint.transform(raw_ls), log_var,
                                                   predcp_scale)
        return value

    def optimise_evidence(self, iterations: int | None = None, predcp_scale: float | None = None,
                          progress: bool | None = None, method: str | None = None) -> EvidenceResult:
        """Fit ``φ``: maximise the evidence plus registered priors (see :func:`.hyperfit.optimise_evidence`).

        ``predcp_scale``: None keeps the registered priors, 0 drops the TV-PredCP,
        ``κ > 0`` registers it with rate κ ("TV-MAP"). ``method``: ``"lbfgs"``,
        ``"em"``, or None for ``config.hyperparameter_method``.
        """
        return optimise_evidence(self, iterations, predcp_scale, progress, method)


def _check_config(cfg: LaplaceConfig) -> None:
    check_choice("config.path", cfg.path, ("auto", "exact", "subspace", "scalable"))
    check_choice("config.expansion", cfg.expansion, ("fit", "linearised"))
    check_choice("config.hyperparameter_method", cfg.hyperparameter_method, ("auto", "lbfgs", "em"))
    check_positive("config.init_lengthscale", cfg.init_lengthscale)
    check_lengthscale("config.init_lengthscale", cfg.init_lengthscale)
    if cfg.init_variance is not None:
        check_positive("config.init_variance", cfg.init_variance)
    if cfg.memory_budget is not None:
        check_positive("config.memory_budget", cfg.memory_budget)
    for name in ("max_cg_iterations", "lanczos_iterations", "em_iterations", "em_samples",
                 "sample_batch_size", "g_prior_probes", "jacobian_chunk", "subspace_rank"):
        check_int(f"config.{name}", getattr(cfg, name), minimum=1)
    check_int("config.subspace_power_iterations", cfg.subspace_power_iterations, minimum=0)
    check_int("config.subspace_test_probes", cfg.subspace_test_probes, minimum=0)
    check_positive("config.subspace_tolerance", cfg.subspace_tolerance)
    check_positive("config.em_tolerance", cfg.em_tolerance)
    check_positive("config.em_lengthscale_step", cfg.em_lengthscale_step)
    check_choice("config.predcp_normalisation", cfg.predcp_normalisation, ("sum", "mean"))
    check_choice("config.adjoint_mismatch", cfg.adjoint_mismatch, ("raise", "warn"))
    if cfg.min_log_variance is not None:
        if isinstance(cfg.min_log_variance, bool) or not isinstance(cfg.min_log_variance, (int, float)):
            raise TypeError(f"config.min_log_variance must be a float or None, got "
                            f"{type(cfg.min_log_variance).__name__}")
        if not math.isfinite(cfg.min_log_variance):
            raise ValueError(f"config.min_log_variance must be finite (a log variance) or None, got "
                             f"{cfg.min_log_variance}")
    if cfg.lanczos_iterations > cfg.max_cg_iterations:
        # linear_operator builds the Lanczos tridiagonal matrices from the CG iterations.
        raise ValueError(f"config.lanczos_iterations must be <= config.max_cg_iterations = "
                         f"{cfg.max_cg_iterations}, got {cfg.lanczos_iterations}")
