"""Linearised Laplace for a fitted deep image prior: type-II evidence and posterior samples.

The DIP ``x* = f_θ*(z)`` linearised in its conv filters is the Gaussian-linear
model ``x = x* + J (θ - θ*)``, ``θ ~ N(0, Σ_θ(φ))``, ``y = A x + N(0, σ_y² I)``
(a GP over images with kernel ``K = J Σ_θ Jᵀ``). Hyperparameters
``φ = (log ℓ_b, log σ_b², log σ_y²)`` are fitted by maximising the
Laplace/MacKay evidence at the fitted weights,

    log p(y | φ) ≈ -½ log|K_yy| - ½ (‖y - A x*‖² / σ_y² + θ*ᵀ Σ_θ⁻¹ θ*) - (m/2) log 2π,

optionally plus the TV-PredCP log-prior on the lengthscales ("TV-MAP"),
with L-BFGS (strong-Wolfe line search) on this deterministic objective.
"""

from __future__ import annotations

import math
import time
import warnings

import linear_operator
import numpy as np
import torch

from ..._validation import check_choice, check_int, check_positive
from ...operators.base import LinearOperator
from ..dip import DIPFit
from ..posterior import Posterior
from .config import EvidenceConvergenceWarning, EvidenceResult, LaplaceConfig
from .evidence import ExactKernel, data_kernel_operator, forward_rows
from .jacobian import NetworkJacobian, linearised_groups
from .linalg import robust_cholesky
from .optimise import lbfgs_maximise
from .predcp import TVPredCP
from .sampling import exact_posterior_covariance, exact_samples, matheron_samples
from .weight_prior import MaternFilterPrior

__all__ = ["LaplaceConfig", "EvidenceResult", "LinearisedLaplace", "EvidenceConvergenceWarning"]

LOG_2PI = math.log(2 * math.pi)


class LinearisedLaplace:
    """Linearised Laplace approximation of a fitted DIP.

    Parameters
    ----------
    fit : DIPFit
        From :func:`bayes_recon.inference.dip.fit_dip` (or any ``DIPFit`` whose
        network has 3x3 convs).
    op : LinearOperator
        The forward model of the fit.
    noise_std : float, optional
        Fix ``σ_y`` (not optimised). None: ``σ_y²`` is a hyperparameter,
        initialised at the mean squared residual.
    config : LaplaceConfig, optional
    progress : bool

    Attributes
    ----------
    log_lengthscale, log_variance, log_noise_variance : torch.Tensor
        Current hyperparameters (float64; one lengthscale per Matérn group,
        one variance per group).
    timings : dict
        Seconds spent on the Jacobian and the kernel pieces.

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
        check_choice("config.path", cfg.path, ("auto", "exact", "scalable"))
        check_choice("config.expansion", cfg.expansion, ("fit", "linearised"))
        check_positive("config.init_lengthscale", cfg.init_lengthscale)
        if cfg.init_variance is not None:
            check_positive("config.init_variance", cfg.init_variance)
        self.fixed_noise = noise_std is not None
        if self.fixed_noise:
            noise_std = check_positive("noise_std", noise_std)
        self.config, self.op, self.fit, self.progress = cfg, op, fit, progress
        self.groups = linearised_groups(fit.network, cfg.include_1x1)
        self.prior = MaternFilterPrior(self.groups)
        n_params = sum(g.size for g in self.groups)
        n_pix = fit.x.numel()
        self.path = cfg.path if cfg.path != "auto" else (
            "exact" if n_pix * n_params <= cfg.max_dense_entries else "scalable")
        self.timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.jac = NetworkJacobian(fit.network, fit.input, self.groups, dense=self.path == "exact",
                                   chunk_size=cfg.jacobian_chunk, progress=progress)
        self.timings["jacobian"] = time.perf_counter() - t0
        f64 = torch.float64
        self.x_star = self.jac.output.detach().to(f64)                   # (N,)
        y = fit.y.to(f64) if not fit.y.is_complex() else fit.y.to(torch.complex128)
        y_rows = torch.cat([y.real, y.imag], 1) if y.is_complex() else y
        self.y = y_rows.reshape(1, -1)
        self.m = self.y.shape[1]
        self.residual = (self.y - forward_rows(op, self.x_star[None])).reshape(-1)
        self.grams = self.prior.filter_grams(self.jac.theta)
        if cfg.expansion == "linearised":
            j_theta = self.jac.jvp(self.jac.theta[None]).to(f64)
            self.offset_target = self.residual + forward_rows(op, j_theta).reshape(-1)
        # Hyperparameters (float64 logs).
        n_ls = len(self.prior.matern_groups)
        self.log_lengthscale = torch.full((n_ls,), math.log(cfg.init_lengthscale), dtype=f64)
        if cfg.init_variance is not None:
            var = torch.full((len(self.groups),), float(cfg.init_variance), dtype=f64)
        else:
            var = torch.stack([self.jac.theta[g.slice].to(f64).pow(2).mean() for g in self.groups])
        self.log_variance = var.clamp_min(1e-12).log()
        if self.fixed_noise:
            nv = noise_std**2
        else:
            nv = max(float(self.residual.pow(2).mean()), 1e-6 * float(self.y.pow(2).mean()), 1e-30)
        self.log_noise_variance = torch.tensor(math.log(nv), dtype=f64)
        self.kernel = None
        if self.path == "exact":
            t0 = time.perf_counter()
            self.kernel = ExactKernel(self.jac, self.prior, op, progress=progress)
            self.timings["kernel_pieces"] = time.perf_counter() - t0
        self._predcp: TVPredCP | None = None
        self.evidence_trace: np.ndarray | None = None
        self.predcp_scale = 0.0

    # ------------------------------------------------------------ helpers
    @property
    def block_names(self) -> list[str]:
        """Names of the prior groups (``"inc"``, ``"down_0"``, ..., ``"skip_0:1x1"``)."""
        return self.prior.names

    @property
    def hyperparameters(self) -> dict:
        """Current ``lengthscale/<block>``, ``variance/<block>`` and ``noise_std`` as floats."""
        out = {}
        for j, gi in enumerate(self.prior.matern_groups):
            out[f"lengthscale/{self.groups[gi].name}"] = float(self.log_lengthscale[j].exp())
        for gi, g in enumerate(self.groups):
            out[f"variance/{g.name}"] = float(self.log_variance[gi].exp())
        out["noise_std"] = float(self.log_noise_variance.exp().sqrt())
        return out

    def set_hyperparameters(self, lengthscale: dict | None = None, variance: dict | None = None,
                            noise_std: float | None = None) -> None:
        """Set hyperparameters by block name (``ValueError`` for an unknown block)."""
        for name, v in (lengthscale or {}).items():
            gi = self.prior.check_block(name)
            if gi not in self.prior.matern_groups:
                raise ValueError(f"block {name!r} is a 1x1 group and has no lengthscale")
            self.log_lengthscale[self.prior.matern_groups.index(gi)] = math.log(
                check_positive(f"lengthscale[{name!r}]", v))
        for name, v in (variance or {}).items():
            self.log_variance[self.prior.check_block(name)] = math.log(check_positive(f"variance[{name!r}]", v))
        if noise_std is not None:
            self.log_noise_variance = torch.tensor(2 * math.log(check_positive("noise_std", noise_std)),
                                                   dtype=torch.float64)

    # ----------------------------------------------------------- evidence
    def _log_evidence(self, log_ls, log_var, log_nv) -> torch.Tensor:
        nv = log_nv.exp()
        if self.path == "exact":
            kyy = self.kernel.data_kernel(log_ls, log_var)
            kyy = kyy + nv * torch.eye(self.m, dtype=kyy.dtype)
            chol = robust_cholesky(kyy, "K_yy")
            logdet = 2 * chol.diagonal().log().sum()
            if self.config.expansion == "linearised":
                t = self.offset_target[:, None]
                fit_term = (t * torch.cholesky_solve(t, chol)).sum()
        else:
            logdet, quad = self._scalable_terms(log_ls, log_var, log_nv)
            if self.config.expansion == "linearised":
                fit_term = quad
        if self.config.expansion == "fit":
            fit_term = self.residual.pow(2).sum() / nv + self.prior.inv_quad(self.grams, log_ls, log_var)
        return -0.5 * (logdet + fit_term + self.m * LOG_2PI)

    def _scalable_terms(self, log_ls, log_var, log_nv):
        cfg = self.config
        kyy = data_kernel_operator(self.jac, self.prior, self.op, log_ls, log_var, log_nv.reshape(1),
                                   cfg.preconditioner_rank, cfg.probe_seed)
        rhs = self.offset_target[:, None] if cfg.expansion == "linearised" else None
        ls = linear_operator.settings
        # Same probes at every evaluation (common random numbers): a deterministic objective.
        with torch.random.fork_rng(devices=[]), ls.max_cholesky_size(0), \
                ls.cg_tolerance(cfg.cg_tolerance), ls.max_cg_iterations(cfg.max_cg_iterations), \
                ls.num_trace_samples(cfg.num_probes), \
                ls.max_lanczos_quadrature_iterations(cfg.lanczos_iterations), \
                ls.max_preconditioner_size(cfg.preconditioner_rank), warnings.catch_warnings():
            torch.manual_seed(cfg.probe_seed)
            warnings.simplefilter("ignore", linear_operator.utils.warnings.NumericalWarning)
            quad, logdet = kyy.inv_quad_logdet(inv_quad_rhs=rhs, logdet=True)
        return logdet, quad

    def log_evidence(self) -> float:
        """Log evidence at the current hyperparameters (see the module docstring)."""
        with torch.no_grad():
            return float(self._log_evidence(self.log_lengthscale, self.log_variance,
                                            self.log_noise_variance))

    def predcp(self) -> TVPredCP:
        """The TV-PredCP with fixed probes (built on first use)."""
        if self._predcp is None:
            self._predcp = TVPredCP(self.jac, self.prior, tuple(self.fit.x.shape[1:]),
                                    self.config.predcp_samples, self.config.predcp_seed)
        return self._predcp

    def objective(self, log_ls, log_var, log_nv, predcp_scale: float = 0.0) -> torch.Tensor:
        """Log evidence plus (if ``predcp_scale > 0``) the TV-PredCP log prior; differentiable."""
        value = self._log_evidence(log_ls, log_var, log_nv)
        if predcp_scale > 0:
            value = value + self.predcp().log_prob(log_ls, log_var, predcp_scale)
        return value

    # ------------------------------------------------------- optimisation
    def optimise_evidence(self, iterations: int | None = None, predcp_scale: float = 0.0,
                          progress: bool | None = None) -> EvidenceResult:
        """Maximise the evidence (MLL) or evidence + TV-PredCP (TV-MAP) over ``φ``.

        L-BFGS with a strong-Wolfe line search on the log-hyperparameters
        (``σ_y`` stays fixed if it was given). The objective is deterministic
        (fixed probes on the scalable path and for the PredCP), so it converges
        in tens of iterations.

        Parameters
        ----------
        iterations : int, optional
            Maximum L-BFGS iterations (default 200); stops earlier when the
            gradient or the change falls below tolerance.
        predcp_scale : float
            Rate ``κ >= 0`` of the TV-PredCP; 0 gives plain MLL.
        progress : bool, optional
            Defaults to the constructor's setting.

        Returns
        -------
        EvidenceResult
        """
        if iterations is None:
            iterations = 200
        check_int("iterations", iterations, minimum=1)
        predcp_scale = check_positive("predcp_scale", predcp_scale, allow_zero=True)
        progress = self.progress if progress is None else progress
        params = [self.log_lengthscale.clone().requires_grad_(True),
                  self.log_variance.clone().requires_grad_(True)]
        if not self.fixed_noise:
            params.append(self.log_noise_variance.clone().requires_grad_(True))
        fixed_nv = self.log_noise_variance

        def objective(ls, var, nv=None):
            # Keep the lengthscales in a range where the 9x9 filter covariances stay well conditioned.
            ls = ls.clamp(-4.0, 4.0)
            return self.objective(ls, var, fixed_nv if nv is None else nv, predcp_scale)

        if predcp_scale > 0:
            self.predcp()  # build the fixed probes outside the timed loop's first evaluation
        t0 = time.perf_counter()
        trace, iters, evals, converged = lbfgs_maximise(
            objective, params, iterations, scale=float(self.m), progress=progress,
            desc="evidence (TV-MAP)" if predcp_scale > 0 else "evidence (MLL)")
        seconds = time.perf_counter() - t0
        self.log_lengthscale = params[0].detach().clamp(-4.0, 4.0)
        self.log_variance = params[1].detach()
        if not self.fixed_noise:
            self.log_noise_variance = params[2].detach()
        self.evidence_trace = trace
        self.predcp_scale = predcp_scale
        if not converged:
            warnings.warn(f"evidence optimisation stopped at iterations={iterations} before its "
                          "tolerance; pass a larger iterations", EvidenceConvergenceWarning,
                          stacklevel=2)
        return EvidenceResult(trace=trace, log_evidence=self.log_evidence(), objective=float(trace[-1]),
                              iterations=iters, evaluations=evals, converged=converged,
                              seconds=seconds, hyperparameters=self.hyperparameters)

    # ------------------------------------------------------------ posterior
    def posterior_covariance(self) -> torch.Tensor:
        """Exact image posterior covariance ``(N, N)`` float64 (exact path only)."""
        if self.path != "exact":
            raise ValueError("posterior_covariance needs path='exact' (dense Jacobian); "
                             f"this model uses path={self.path!r}")
        with torch.no_grad():
            k = self.kernel.image_kernel(self.log_lengthscale, self.log_variance)
            kd = self.kernel.data_kernel(self.log_lengthscale, self.log_variance)
            return exact_posterior_covariance(k, kd, self.log_noise_variance.exp(), self.op)

    def sample(self, num_samples: int, seed: int = 0, num_chains: int = 1) -> Posterior:
        """Posterior image draws: exact Cholesky (exact path) or Matheron + CG (scalable path).

        Parameters
        ----------
        num_samples : int
            Total draws, divisible by ``num_chains``.
        seed : int
        num_chains : int
            Independent draws are split into this many "chains" (for ArviZ).

        Returns
        -------
        Posterior
            ``method="linearised-dip"``, samples ``(chains, draws, C, H, W)`` in the
            fit's dtype; ``extras``: ``log_evidence``, ``predcp_scale``, ``path``,
            ``map_estimate`` (the DIP output ``x*``, the posterior mean).
        """
        check_int("num_samples", num_samples, minimum=1)
        check_int("seed", seed, minimum=0)
        check_int("num_chains", num_chains, minimum=1)
        if num_samples % num_chains:
            raise ValueError(f"num_samples={num_samples} must be divisible by num_chains={num_chains}")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            nv = self.log_noise_variance.exp()
            if self.path == "exact":
                flat = exact_samples(self.x_star, self.posterior_covariance(), num_samples, gen)
            else:
                kyy = data_kernel_operator(self.jac, self.prior, self.op, self.log_lengthscale,
                                           self.log_variance, self.log_noise_variance.reshape(1),
                                           self.config.preconditioner_rank, self.config.probe_seed)
                solve = kyy._preconditioner()[0] if self.config.preconditioner_rank > 0 else None
                precond = (lambda r: solve(r.T).T) if solve is not None else None
                flat = matheron_samples(self.x_star, self.jac, self.prior, self.op,
                                        self.log_lengthscale, self.log_variance, nv, num_samples,
                                        gen, precond, tol=self.config.cg_tolerance,
                                        max_iter=self.config.max_cg_iterations)
        shape = tuple(self.fit.x.shape[1:])
        samples = flat.to(self.fit.x.dtype).reshape(num_chains, num_samples // num_chains, *shape)
        trace = self.evidence_trace if self.evidence_trace is not None else np.array([self.log_evidence()])
        return Posterior(samples, method="linearised-dip", operator=self.op,
                         noise_std=float(nv.sqrt()), seed=seed, evidence_trace=trace,
                         hyperparameters=self.hyperparameters, log_evidence=self.log_evidence(),
                         predcp_scale=self.predcp_scale, path=self.path,
                         map_estimate=self.fit.x.detach().clone())
