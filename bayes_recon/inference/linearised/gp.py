"""The linearised DIP in GPyTorch's terms: hyperparameter module, likelihood, marginal, MLLs.

The linear model ``x = m₀ + J θ``, ``θ ~ N(0, Σ_θ(φ))``, ``y = A x + N(0, σ² I)``
is a GP over the measurements: ``f = A x ~ N(A m₀, A J Σ_θ Jᵀ Aᵀ)``. Here

* :class:`LinearisedHyperparameters` is a ``gpytorch.Module`` holding ``log ℓ_b``
  (registered ``Interval`` constraint) and ``σ_b²`` (``Positive`` with an ``exp``
  transform, so the raw parameter is ``log σ_b²``), with optional ``gpytorch.priors``;
* :class:`TVPredCPPrior` is the TV-PredCP as a ``gpytorch.priors.Prior`` on
  ``(log ℓ, log σ²)``: register it, swap it for another prior, or drop it;
* :class:`LinearisedGP` (a ``gpytorch.models.GP``) returns the prior of ``f`` as a
  ``MultivariateNormal`` whose covariance is a lazy ``linear_operator``;
* :class:`LinearisedGaussianLikelihood` (a ``GaussianLikelihood``; noise fixed by
  freezing ``raw_noise``) adds ``σ² I`` with a Nyström preconditioner (matrix-free
  path) or a jitter-checked Cholesky (exact path);
* the "linearised" evidence is ``gpytorch.mlls.ExactMarginalLogLikelihood`` (the
  marginal's ``log_prob``; GPyTorch's CG/SLQ settings apply), the MacKay "fit"
  evidence is :class:`MacKayMarginalLogLikelihood`.

No ``ExactGP``: its inputs-to-kernel machinery and prediction caches assume a
kernel over input points, whereas here the covariance is a product of operators
and the posterior lives on another index set (pixels), computed in ``sampling``.
"""

from __future__ import annotations

import math

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.distributions import MultivariateNormal
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import MarginalLogLikelihood
from gpytorch.models import GP
from gpytorch.module import Module
from gpytorch.priors import Prior
from linear_operator.operators import CholLinearOperator, ConstantDiagLinearOperator, TriangularLinearOperator
from torch.distributions import constraints

from .config import LOG_LENGTHSCALE_BOUNDS
from .evidence import DataKernelOperator, PreconditionedAddedDiag, nystrom_preconditioner
from .linalg import robust_cholesky
from .predcp import TVPredCP

__all__ = ["LinearisedHyperparameters", "TVPredCPPrior", "LinearisedGP", "LinearisedGaussianLikelihood",
           "MacKayMarginalLogLikelihood", "LinearisedEvidence", "predcp_closure"]

LOG_2PI = math.log(2 * math.pi)


class LinearisedHyperparameters(Module):
    """``log ℓ_b`` (one per 3x3 group) and ``σ_b²`` (one per group) as a ``gpytorch.Module``.

    Parameters
    ----------
    log_lengthscale : torch.Tensor
        ``(L,)`` initial ``log ℓ``, strictly inside ``LOG_LENGTHSCALE_BOUNDS``.
    variance : torch.Tensor
        ``(G,)`` initial ``σ² > 0``.
    min_log_variance : float, optional
        Floor on ``log σ²``: :attr:`log_variance` is ``max(raw_variance, floor)``, so
        every evaluation (and its gradient, zero below the floor) sees the floored
        value; :meth:`set` stores floored values. None: no floor.

    Attributes
    ----------
    raw_log_lengthscale, raw_variance : torch.nn.Parameter
        Unconstrained; ``raw_variance`` is ``log σ²`` (before the floor, if any).

    Examples
    --------
    >>> import torch
    >>> h = LinearisedHyperparameters(torch.zeros(2, dtype=torch.float64),
    ...                               torch.tensor([0.5, 2.0], dtype=torch.float64))
    >>> h.variance
    tensor([0.5000, 2.0000], dtype=torch.float64, grad_fn=<ExpBackward0>)
    >>> [name for name, _ in h.named_constraints()]
    ['raw_log_lengthscale_constraint', 'raw_variance_constraint']
    """

    def __init__(self, log_lengthscale: torch.Tensor, variance: torch.Tensor,
                 min_log_variance: float | None = None):
        super().__init__()
        self.min_log_variance = None if min_log_variance is None else float(min_log_variance)
        ls_c = Interval(*LOG_LENGTHSCALE_BOUNDS)
        var_c = Positive(transform=torch.exp, inv_transform=torch.log)
        self.register_parameter("raw_log_lengthscale", torch.nn.Parameter(ls_c.inverse_transform(log_lengthscale)))
        self.register_constraint("raw_log_lengthscale", ls_c)
        self.register_parameter("raw_variance", torch.nn.Parameter(var_c.inverse_transform(variance)))
        self.register_constraint("raw_variance", var_c)

    @property
    def log_lengthscale(self) -> torch.Tensor:
        return self.raw_log_lengthscale_constraint.transform(self.raw_log_lengthscale)

    @property
    def variance(self) -> torch.Tensor:
        if self.min_log_variance is None:
            return self.raw_variance_constraint.transform(self.raw_variance)
        return self.log_variance.exp()

    @property
    def log_variance(self) -> torch.Tensor:
        # The exp transform makes raw = log σ². A hard clamp (not a smooth bound) keeps
        # raw = log σ² above the floor, so functional calls that pass log σ² as the raw
        # parameter and the EM updates mean the same thing as the L-BFGS objective.
        if self.min_log_variance is None:
            return self.raw_variance
        return self.raw_variance.clamp_min(self.min_log_variance)

    def floored(self) -> torch.Tensor:
        """``(G,)`` bool: blocks whose ``log σ²`` is on the floor (all False without one)."""
        if self.min_log_variance is None:
            return torch.zeros_like(self.raw_variance, dtype=torch.bool)
        return self.raw_variance.detach() <= self.min_log_variance

    def set(self, log_lengthscale=None, log_variance=None) -> None:
        """Write new values (``ValueError`` naming the bound if a lengthscale is outside it).

        Log variances below ``min_log_variance`` are stored as the floor.
        """
        with torch.no_grad():
            if log_lengthscale is not None:
                lo, hi = LOG_LENGTHSCALE_BOUNDS
                v = torch.as_tensor(log_lengthscale, dtype=self.raw_log_lengthscale.dtype)
                if not bool(((v > lo) & (v < hi)).all()):
                    raise ValueError(f"log lengthscales must lie in LOG_LENGTHSCALE_BOUNDS = ({lo}, {hi}), "
                                     f"got {v.tolist()}")
                self.raw_log_lengthscale.copy_(self.raw_log_lengthscale_constraint.inverse_transform(v))
            if log_variance is not None:
                v = torch.as_tensor(log_variance, dtype=self.raw_variance.dtype)
                if self.min_log_variance is not None:
                    v = v.clamp_min(self.min_log_variance)
                self.raw_variance.copy_(v)


class TVPredCPPrior(Prior):
    """The TV-PredCP (:class:`~.predcp.TVPredCP`) as a GPyTorch prior on ``(log ℓ, log σ²)``.

    ``log_prob(v)`` takes ``v = cat([log ℓ (L,), log σ² (G,)])`` and returns
    ``Σ_b log p(ℓ_b)`` (variances enter only through the expected TV).

    Parameters
    ----------
    predcp : TVPredCP
        Fixed probes and tap products.
    num_lengthscales : int
    scale : float
        Rate ``κ > 0`` of the exponential prior on the expected TV.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, predcp: TVPredCP, num_lengthscales: int, scale: float):
        torch.nn.Module.__init__(self)           # gpytorch's Prior is a torch Module + Distribution
        torch.distributions.Distribution.__init__(
            self, torch.Size(), torch.Size([num_lengthscales + len(predcp.prior.groups)]), validate_args=False)
        if not scale > 0:
            raise ValueError(f"scale (the TV-PredCP rate κ) must be > 0, got {scale}")
        self.predcp, self.num_lengthscales, self.scale = predcp, int(num_lengthscales), float(scale)
        self._transform = None

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        n = self.num_lengthscales
        return self.predcp.log_prob(value[..., :n], value[..., n:], self.scale)


def predcp_closure(module: LinearisedHyperparameters) -> torch.Tensor:
    """What :class:`TVPredCPPrior` is evaluated at: ``cat([log ℓ, log σ²])``."""
    return torch.cat([module.log_lengthscale, module.log_variance])


class LinearisedGP(GP):
    """Prior of the noise-free measurements ``f = A x ~ N(A m₀, A J Σ_θ Jᵀ Aᵀ)`` (float64, ``(m,)``).

    Parameters
    ----------
    hyper : LinearisedHyperparameters
    mean : torch.Tensor
        ``A m₀ (m,)``.
    covariance : callable
        ``(log ℓ (L,), log σ² (G,)) -> A K Aᵀ`` as an ``(m, m)`` ``linear_operator``: a
        backend's ``data_covariance`` (dense from distance-class pieces, or the
        matrix-free :class:`~.evidence.DataKernelOperator`).
    weight_prior : MaternFilterPrior
    weight_grams : list of torch.Tensor
        ``Θ_bᵀΘ_b`` of the expansion point (for the MacKay term ``θ*ᵀ Σ_θ⁻¹ θ*``).
    """

    def __init__(self, hyper: LinearisedHyperparameters, mean: torch.Tensor, covariance, weight_prior,
                 weight_grams):
        super().__init__()
        self.hyper = hyper
        self.register_buffer("data_mean", mean)
        self.covariance, self.weight_prior, self.weight_grams = covariance, weight_prior, weight_grams

    def forward(self) -> MultivariateNormal:
        return MultivariateNormal(self.data_mean, self.covariance(self.hyper.log_lengthscale,
                                                                  self.hyper.log_variance))

    def __call__(self, *args, **kwargs):
        return self.forward()

    def weight_inv_quad(self) -> torch.Tensor:
        """``θ*ᵀ Σ_θ⁻¹ θ*`` at the current hyperparameters (0-d)."""
        return self.weight_prior.inv_quad(self.weight_grams, self.hyper.log_lengthscale, self.hyper.log_variance)


class LinearisedGaussianLikelihood(GaussianLikelihood):
    """``GaussianLikelihood`` whose raw noise is ``log σ²``, with a preconditioned marginal.

    Parameters
    ----------
    noise_variance : float
        Initial ``σ²``.
    fixed : bool
        Freeze ``raw_noise`` (``σ`` known).
    preconditioner_rank, seed : int
        Nyström preconditioner of the matrix-free marginal (0: none).

    Examples
    --------
    >>> lik = LinearisedGaussianLikelihood(0.01, fixed=True)
    >>> round(float(lik.noise), 12), lik.raw_noise.requires_grad
    (0.01, False)
    """

    def __init__(self, noise_variance: float, fixed: bool = False, preconditioner_rank: int = 64, seed: int = 0,
                 device=None):
        super().__init__(noise_constraint=Positive(transform=torch.exp, inv_transform=torch.log))
        self.to(device=device, dtype=torch.float64)
        self.noise = torch.tensor(float(noise_variance), dtype=torch.float64, device=device)
        self.raw_noise.requires_grad_(not fixed)
        self.fixed, self.preconditioner_rank, self.seed = fixed, int(preconditioner_rank), int(seed)

    @property
    def log_noise_variance(self) -> torch.Tensor:
        return self.noise_covar.raw_noise.reshape(())

    def marginal(self, function_dist: MultivariateNormal, *args, **kwargs) -> MultivariateNormal:
        """``N(mean, K + σ² I)``: preconditioned lazy sum, or a Cholesky factor (dense ``K``)."""
        covar = function_dist.lazy_covariance_matrix
        m = covar.shape[-1]
        nv = self.noise.reshape(1)
        if isinstance(covar, DataKernelOperator):
            override = (nystrom_preconditioner(covar, nv.detach(), self.preconditioner_rank, self.seed)
                        if self.preconditioner_rank > 0 else None)
            kyy = PreconditionedAddedDiag(covar, ConstantDiagLinearOperator(nv, diag_shape=m),
                                          preconditioner_override=override)
        else:
            dense = covar.to_dense()
            dense = dense + nv * torch.eye(m, dtype=dense.dtype, device=dense.device)
            # Our own jitter escalation: warned (CholeskyJitterWarning) and recorded by the caller.
            kyy = CholLinearOperator(TriangularLinearOperator(robust_cholesky(dense, "K_yy")))
        return MultivariateNormal(function_dist.mean, kyy)


class MacKayMarginalLogLikelihood(MarginalLogLikelihood):
    """MacKay's Laplace evidence at the expansion point ``θ*`` ("fit" expansion), per datum.

    ``[-½ log|K_yy| - ½ (‖y - A x*‖²/σ² + θ*ᵀ Σ_θ⁻¹ θ*) - (m/2) log 2π + Σ log priors] / m``
    (divided by ``m`` like ``ExactMarginalLogLikelihood``).
    """

    def log_evidence(self, function_dist: MultivariateNormal, target: torch.Tensor) -> torch.Tensor:
        """The MacKay evidence itself (not divided by ``m``, no priors)."""
        marginal = self.likelihood(function_dist)
        _, logdet = marginal.lazy_covariance_matrix.inv_quad_logdet(logdet=True)
        resid = target - function_dist.mean
        fit = resid.pow(2).sum() / self.likelihood.noise.reshape(()) + self.model.weight_inv_quad()
        return -0.5 * (logdet + fit + target.shape[-1] * LOG_2PI)

    def forward(self, function_dist: MultivariateNormal, target: torch.Tensor, **kwargs) -> torch.Tensor:
        res = self.log_evidence(function_dist, target)
        for _, module, prior, closure, _ in self.named_priors():
            res = res + prior.log_prob(closure(module)).sum()
        return res / target.shape[-1]


class LinearisedEvidence(torch.nn.Module):
    """Log evidence plus log priors as one module, so ``torch.func.functional_call`` evaluates it at any ``φ``.

    ``forward(part, priors)`` returns, as a 0-d tensor:

    * ``part="evidence"``: the log evidence alone (``expansion="linearised"``: the
      marginal's ``log_prob``; ``"fit"``: :meth:`MacKayMarginalLogLikelihood.log_evidence`);
    * ``part="prior"``: ``Σ log p(φ)`` of the priors alone;
    * ``part="all"``: their sum, the function the hyperparameters maximise.

    ``priors``: None for the priors registered on the MLL's modules (e.g. the
    TV-PredCP via ``set_prior``), else a list of ``(prior, closure)`` evaluated as
    ``prior.log_prob(closure(hyper))``. ``outside = (s, c)``: ``c`` more measurements,
    pure noise with squared norm ``s`` (the subspace backend's complement), add
    ``-½ (s / σ² + c log 2πσ²)`` to the evidence.
    """

    def __init__(self, mll: MarginalLogLikelihood, target: torch.Tensor, expansion: str, outside=(0.0, 0)):
        super().__init__()
        self.mll, self.target, self.expansion = mll, target, expansion
        self.outside_sq, self.outside_count = float(outside[0]), int(outside[1])

    def evidence(self) -> torch.Tensor:
        f = self.mll.model()
        if self.expansion == "linearised":
            value = self.mll.likelihood(f).log_prob(self.target)
        else:
            value = self.mll.log_evidence(f, self.target)
        if self.outside_count:
            nv = self.mll.likelihood.noise.reshape(())
            value = value - 0.5 * (self.outside_sq / nv + self.outside_count * (LOG_2PI + nv.log()))
        return value

    def log_prior(self, priors=None) -> torch.Tensor:
        if priors is None:
            terms = [(prior, closure(module)) for _, module, prior, closure, _ in self.mll.named_priors()]
        else:
            terms = [(prior, closure(self.mll.model.hyper)) for prior, closure in priors]
        total = self.target.new_zeros(())
        for prior, value in terms:
            total = total + prior.log_prob(value).sum()
        return total

    def forward(self, part: str = "all", priors=None) -> torch.Tensor:
        if part == "evidence":
            return self.evidence()
        if part == "prior":
            return self.log_prior(priors)
        return self.evidence() + self.log_prior(priors)
