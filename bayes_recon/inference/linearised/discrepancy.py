"""An image-space model discrepancy for the linearised DIP, fitted on held-out measurements.

The linearised model ``x = x* + J (θ - θ*)`` can only put uncertainty in the range
of the network Jacobian, and its type-II evidence cannot see the DIP's own error:
``x*`` was fitted to the same data, so the residual ``y - A x*`` is about the noise.
On two 64² training crops, 21 % and 56 % of the squared error of ``x*`` lay outside
a rank-1024 basis of that range, and the evidence-fitted intervals covered 0.50 and
0.40 of the pixels at 90 % (docs/scaling.md, "An image-space discrepancy").

:class:`DiscrepancyModel` adds a discrepancy ``δ ~ N(0, τ² I)`` (a GP "nugget"):

    ``x = x* + F w + δ``,  ``w ~ N(0, I_k)``,  ``y = A x + ε``,  ``ε ~ N(0, σ² I)``,

with ``F Fᵀ = K`` the fitted Laplace's prior covariance (its eigen-factor, lifted
from the subspace on that path). The Laplace's mean stays ``x*`` (the mode).
``τ`` is fitted by the *conditional* evidence ``log p(y_held | y_fit, τ)`` of
measurements a second DIP fit did not see (:func:`fit_discrepancy`; the conditional
marginal likelihood of Lotfi et al., ICML 2022): unlike the evidence of the data
the DIP was fitted to, it measures how far the reconstruction is from new data.
One fold's evidence is a noisy function of ``τ`` (it depends on that fold's DIP
fit), so :func:`fit_discrepancy` maximises the sum over any number of folds
(:class:`HeldoutEvidence`, one per fold) and reports the likelihood-ratio
interval of ``τ``, by which the caller decides whether to fit another fold.

One approximation keeps every solve low-rank plus diagonal at any size: the
projected discrepancy ``A δ`` is treated as independent across measurements, with
its exact per-measurement variance ``τ² (A Aᵀ)_ii`` (:meth:`LinearOperator.gram_diagonal`);
so the data are not used to narrow ``δ`` in the posterior (conservative). Needs
the ``exact`` or ``subspace`` path and ``expansion="fit"``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import chi2

from ..._validation import check_int, check_positive, check_probability
from ...operators.base import LinearOperator
from ...posterior import Posterior
from .evidence import forward_rows

__all__ = ["DiscrepancyModel", "DiscrepancyFit", "HeldoutEvidence", "fit_discrepancy"]

LOG_2PI = math.log(2 * math.pi)


@dataclass
class DiscrepancyFit:
    """Result of :func:`fit_discrepancy`.

    Attributes
    ----------
    std : float
        Fitted ``τ`` (0 when the conditional evidence prefers no discrepancy).
    log_conditional_evidence : float
        ``log p(y_held | y_fit, τ)`` at ``std``.
    log_conditional_evidence_without : float
        The same at ``τ = 0`` (the Laplace as it is).
    num_heldout : int
        Held-out real measurements (over all folds).
    evaluations : int
        Evaluations of the summed evidence.
    seconds : float
    num_folds : int
        Folds whose conditional evidences were summed.
    interval : (float, float)
        Likelihood-ratio interval of ``τ`` at ``level``: where the summed
        evidence is within ``χ²₁(level)/2`` nats of its maximum (``0`` as lower
        end when ``τ = 0`` is inside; the search bounds when it reaches them).
    level : float
    fold_std : list of float
        Each fold's own maximiser (a spread of the estimate; not used for ``std``).
    maximiser : float
        The ``τ`` maximising the summed evidence (``std`` unless ``prefer_zero``
        set it to 0).
    """

    std: float
    log_conditional_evidence: float
    log_conditional_evidence_without: float
    num_heldout: int
    evaluations: int
    seconds: float
    num_folds: int = 1
    interval: tuple = (0.0, math.inf)
    level: float = 0.95
    fold_std: list = field(default_factory=list)
    maximiser: float = math.nan

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["interval"] = list(self.interval)
        out["fold_std"] = list(self.fold_std)
        return out


def _weight_cholesky(data_factor: torch.Tensor, gram_diagonal: torch.Tensor, noise_variance: float,
                     std: float) -> torch.Tensor:
    """Cholesky ``L`` of the posterior precision of ``w``: ``I + (AF)ᵀ D⁻¹ (AF)``, ``D = σ² + τ² diag(AAᵀ)``."""
    d = noise_variance + std**2 * gram_diagonal
    b = data_factor / d.sqrt()[:, None]
    precision = b.T @ b
    precision.diagonal().add_(1.0)
    return torch.linalg.cholesky(precision)


@dataclass
class HeldoutEvidence:
    """One fold's conditional evidence ``log p(y_held | y_fit, τ)`` as a function of ``τ``.

    Built by :meth:`DiscrepancyModel.heldout_evidence`; keeps only the
    ``O(m k)`` pieces the evidence needs (not the ``N x k`` prior factor), so
    several folds fit in memory together.

    Attributes
    ----------
    data_factor : torch.Tensor
        ``A F (m, k)`` of the fold's fitted measurements.
    gram_diagonal : torch.Tensor
        ``diag(A Aᵀ) (m,)``.
    noise_variance : float
    held_factor : torch.Tensor
        ``A_h F (m_h, k)``.
    held_gram_diagonal : torch.Tensor
        ``diag(A_h A_hᵀ) (m_h,)``.
    residual : torch.Tensor
        ``y_held - A_h x* (m_h,)``.
    scale : float
        ``rms(x*)`` of the fold's reconstruction (sets the default search bounds).
    excess_variance : float
        ``e``: the fold's discrepancy variance is taken as ``τ² + e`` (clipped at
        0), with ``τ`` the *full* fit's. 0 unless a full fit was given to
        :meth:`DiscrepancyModel.heldout_evidence` (then ``e`` is the nested-fit
        correction, see there).
    """

    data_factor: torch.Tensor
    gram_diagonal: torch.Tensor
    noise_variance: float
    held_factor: torch.Tensor
    held_gram_diagonal: torch.Tensor
    residual: torch.Tensor
    scale: float
    excess_variance: float = 0.0

    @property
    def num_heldout(self) -> int:
        return int(self.residual.numel())

    def log_prob(self, std: float) -> float:
        """``log p(y_held | y_fit, τ = std)``.

        ``N(A_h x*, A_h F P⁻¹ Fᵀ A_hᵀ + D_h)`` with ``D_h = σ² + τ_k² diag(A_h A_hᵀ)``,
        ``τ_k² = max(τ² + e, 0)`` (``e = excess_variance``), by the matrix
        determinant lemma and Woodbury (``O(m_h k²)``).
        """
        std = check_positive("std", std, allow_zero=True)
        std = math.sqrt(max(std**2 + self.excess_variance, 0.0))
        with torch.no_grad():
            chol = _weight_cholesky(self.data_factor, self.gram_diagonal, self.noise_variance, std)
            g = torch.linalg.solve_triangular(chol, self.held_factor.T, upper=False).T    # A_h F L⁻ᵀ (m_h, k)
            d = self.noise_variance + std**2 * self.held_gram_diagonal
            gd = g / d[:, None]
            inner = g.T @ gd
            inner.diagonal().add_(1.0)
            inner_chol = torch.linalg.cholesky(inner)
            r = self.residual
            u = torch.linalg.solve_triangular(inner_chol, (gd.T @ r)[:, None], upper=False)[:, 0]
            quad = float((r * r / d).sum() - u.pow(2).sum())
            logdet = float(d.log().sum() + 2 * inner_chol.diagonal().log().sum())
            return -0.5 * (quad + logdet + r.numel() * LOG_2PI)


class DiscrepancyModel:
    """A fitted :class:`~.laplace.LinearisedLaplace` with an image-space discrepancy ``N(0, τ² I)``.

    Parameters
    ----------
    laplace : LinearisedLaplace
        With fitted hyperparameters, ``path`` "exact" or "subspace" and
        ``config.expansion == "fit"``.
    eigen_floor : float
        Eigenvalues of the prior covariance below ``eigen_floor · λ_max`` are dropped
        (they carry no variance; keeping them only costs).

    Attributes
    ----------
    x_star : torch.Tensor
        ``(N,)`` float64, the DIP reconstruction (the posterior mean).
    factor : torch.Tensor
        ``F (N, k)`` float64 with ``F Fᵀ`` the Laplace's prior covariance.
    data_factor : torch.Tensor
        ``A F (m, k)``.
    gram_diagonal : torch.Tensor
        ``diag(A Aᵀ) (m,)``.
    noise_variance : float
        ``σ²`` of the Laplace.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity
    >>> from bayes_recon.models.unet import UNetConfig
    >>> from bayes_recon.inference.dip import fit_dip
    >>> from bayes_recon.inference.linearised import LinearisedLaplace
    >>> op = Identity((1, 8, 8))
    >>> y = torch.zeros(1, 1, 8, 8); y[..., 2:6, 2:6] = 1.0
    >>> fit = fit_dip(y, op, 1e-3, 30, progress=False,
    ...               network_config=UNetConfig(scales=2, channels=4, skip_channels=(0, 4)))
    >>> la = LinearisedLaplace(fit, op, noise_std=0.1, progress=False)
    >>> _ = la.optimise_evidence(progress=False)
    >>> model = DiscrepancyModel(la)
    >>> bool((model.variance(0.05) > model.variance(0.0)).all())
    True
    """

    def __init__(self, laplace, eigen_floor: float = 1e-10):
        if laplace.path not in ("exact", "subspace"):
            raise ValueError(f"laplace.path must be 'exact' or 'subspace' for a discrepancy (a dense prior "
                             f"factor), got {laplace.path!r}")
        if laplace.config.expansion != "fit":
            raise ValueError(f"laplace.config.expansion must be 'fit' for a discrepancy (the mean stays x*), "
                             f"got {laplace.config.expansion!r}")
        check_positive("eigen_floor", eigen_floor)
        self.laplace, self.op = laplace, laplace.op
        fit = laplace.fit
        with torch.no_grad():
            kernel = laplace.kernel.image_kernel(laplace.log_lengthscale, laplace.log_variance)
            evals, evecs = torch.linalg.eigh(0.5 * (kernel + kernel.T))
            keep = evals > eigen_floor * evals.max().clamp_min(1e-300)
            factor = evecs[:, keep] * evals[keep].sqrt()
            if laplace.subspace is not None:
                factor = laplace.subspace.basis @ factor.to(laplace.subspace.basis)
            self.factor = factor.to(torch.float64)
            dev = self.factor.device
            self.x_star = fit.x.detach().reshape(-1).to(device=dev, dtype=torch.float64)
            self.data_factor = self._project(self.op, self.factor)
            self.gram_diagonal = self.op.gram_diagonal(device=dev)
            self.noise_variance = float(laplace.log_noise_variance.exp())

    @staticmethod
    def _project(op: LinearOperator, factor: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """``A F (m, k)`` in chunks of columns (float64)."""
        cols = [forward_rows(op, factor[:, j:j + chunk].T.contiguous()).to(torch.float64)
                for j in range(0, factor.shape[1], chunk)]
        return torch.cat(cols, 0).T.contiguous()

    def _posterior_weights(self, std: float):
        return _weight_cholesky(self.data_factor, self.gram_diagonal, self.noise_variance, std)

    def variance(self, std: float) -> torch.Tensor:
        """Posterior variance per pixel ``(N,)``: ``diag(F P⁻¹ Fᵀ) + τ²``."""
        std = check_positive("std", std, allow_zero=True)
        with torch.no_grad():
            chol = self._posterior_weights(std)
            g = torch.linalg.solve_triangular(chol, self.factor.T, upper=False)    # L⁻¹ Fᵀ (k, N)
            return g.pow(2).sum(0) + std**2

    def sample(self, std: float, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """Posterior draws ``x* + F L⁻ᵀ ε + τ η`` ``(num_samples, N)`` float64."""
        std = check_positive("std", std, allow_zero=True)
        check_int("num_samples", num_samples, minimum=1)
        with torch.no_grad():
            chol = self._posterior_weights(std)
            k, n = self.factor.shape[1], self.factor.shape[0]
            eps = torch.randn(k, num_samples, generator=generator, dtype=torch.float64, device=self.factor.device)
            w = torch.linalg.solve_triangular(chol.T, eps, upper=True)                # (k, S)
            eta = torch.randn(num_samples, n, generator=generator, dtype=torch.float64, device=self.factor.device)
            return self.x_star[None] + (self.factor @ w).T + std * eta

    def mean_variance(self, std: float = 0.0) -> float:
        """Mean posterior variance per pixel, ``tr(F P⁻¹ Fᵀ) / N + τ²`` (``O(N k²)``, no ``N``-vector kept)."""
        std = check_positive("std", std, allow_zero=True)
        with torch.no_grad():
            chol = self._posterior_weights(std)
            gram = self.factor.T @ self.factor
            inv = torch.cholesky_inverse(chol)
            return float((inv * gram).sum()) / self.factor.shape[0] + std**2

    def heldout_evidence(self, held_op: LinearOperator, y_held: torch.Tensor,
                         full: "DiscrepancyModel | None" = None) -> HeldoutEvidence:
        """The conditional evidence of measurements ``y_held`` of ``held_op`` given this fit's data.

        Parameters
        ----------
        held_op : LinearOperator
            Forward model of the held-out measurements (same image domain).
        y_held : torch.Tensor
            ``(1, *held_op.range_shape)``.
        full : DiscrepancyModel, optional
            The fit to *all* measurements, whose ``τ`` is wanted. This fit (a
            fold) saw fewer data, so its reconstruction is further from the
            truth than the full one, and a ``τ`` fitted for the fold overstates
            the full fit's. Given ``full``, the evidence is parameterised by the
            full fit's ``τ``: the fold's discrepancy variance is ``τ² + e`` with

                ``e = mean((x*_fold − x*_full)²) − (v̄_fold − v̄_full)``,

            ``v̄`` each Laplace's mean posterior variance. Why: for estimates
            from nested data, the full estimate's error is orthogonal to the
            difference of the two (exact for posterior means), so
            ``E|x*_fold − x|² = E|x*_full − x|² + E|x*_fold − x*_full|²``;
            ``e`` is the part of the observed difference the Laplaces do not
            already predict.
        """
        if not isinstance(held_op, LinearOperator):
            raise TypeError(f"held_op must be a LinearOperator, got {type(held_op).__name__}")
        if held_op.domain_shape != self.op.domain_shape:
            raise ValueError(f"held_op.domain_shape must be {self.op.domain_shape}, got {held_op.domain_shape}")
        if not isinstance(y_held, torch.Tensor):
            raise TypeError(f"y_held must be a torch.Tensor, got {type(y_held).__name__}")
        if tuple(y_held.shape) != (1, *held_op.range_shape):
            raise ValueError(f"y_held must have shape (1, *held_op.range_shape) = {(1, *held_op.range_shape)}, "
                             f"got {tuple(y_held.shape)}")
        dev = self.factor.device
        with torch.no_grad():
            y = y_held.to(dev)
            y = torch.cat([y.real, y.imag], 1) if y.is_complex() else y
            r = y.reshape(-1).to(torch.float64) - forward_rows(held_op, self.x_star[None]).reshape(-1)
            excess = 0.0
            if full is not None:
                if not isinstance(full, DiscrepancyModel):
                    raise TypeError(f"full must be a DiscrepancyModel, got {type(full).__name__}")
                if full.x_star.shape != self.x_star.shape:
                    raise ValueError(f"full must be a fit of the same image, shape {tuple(self.x_star.shape)}, "
                                     f"got {tuple(full.x_star.shape)}")
                diff = float((self.x_star - full.x_star.to(self.x_star)).pow(2).mean())
                excess = diff - (self.mean_variance() - full.mean_variance())
            return HeldoutEvidence(self.data_factor, self.gram_diagonal, self.noise_variance,
                                   self._project(held_op, self.factor), held_op.gram_diagonal(device=dev), r,
                                   float(self.x_star.pow(2).mean().sqrt()), excess)

    def posterior(self, std: float, num_samples: int, seed: int = 0, base: Posterior | None = None,
                  fit: DiscrepancyFit | None = None) -> Posterior:
        """Draws as a :class:`~bayes_recon.posterior.Posterior` ``(1, S, C, H, W)``.

        ``base`` (the Laplace's own posterior) lends its provenance (evidence,
        hyperparameters, numerics); ``hyperparameters["discrepancy_std"] = τ`` and
        ``extras["discrepancy"]`` (``fit.to_dict()``) are added.
        """
        gen = torch.Generator(device=self.factor.device).manual_seed(int(seed))
        shape, dt = tuple(self.laplace.fit.x.shape[1:]), self.laplace.fit.x.dtype
        samples = self.sample(std, num_samples, gen).reshape(1, num_samples, *shape).to(dt)
        meta = {} if base is None else dict(base.extras)
        hyper = {} if base is None else dict(base.hyperparameters or {})
        hyper["discrepancy_std"] = float(std)
        meta["discrepancy"] = None if fit is None else fit.to_dict()
        return Posterior(samples, method="linearised-dip", operator=self.op,
                         noise_std=math.sqrt(self.noise_variance), seed=seed,
                         evidence_trace=None if base is None else base.evidence_trace,
                         hyperparameters=hyper, **meta)


def fit_discrepancy(evidence, bounds: tuple[float, float] | None = None, tolerance: float = 1e-3,
                    level: float = 0.95, prefer_zero: bool = False) -> DiscrepancyFit:
    """``τ`` maximising the summed conditional evidence ``Σ_k log p(y_k | y_-k, τ)`` of one or more folds.

    Parameters
    ----------
    evidence : HeldoutEvidence or list of HeldoutEvidence
        One per fold, each from a Laplace fitted without that fold's measurements
        (:meth:`DiscrepancyModel.heldout_evidence`).
    bounds : (float, float), optional
        Search interval of ``τ``; default ``(1e-4, 10) · rms(x*)`` (mean over folds).
    tolerance : float
        Absolute tolerance on ``log τ``.
    level : float
        Probability of the likelihood-ratio interval reported in ``interval``.
    prefer_zero : bool
        ``std = 0`` whenever ``τ = 0`` lies inside that interval, i.e. unless the
        held-out data reject the Laplace as it is by a likelihood-ratio test at
        ``1 - level`` (``maximiser`` keeps the maximiser).

    Returns
    -------
    DiscrepancyFit
        ``std = 0`` if ``τ = 0`` scores at least as well as the best ``τ`` found
        (or, with ``prefer_zero``, is not rejected).
    """
    t0 = time.perf_counter()
    if isinstance(evidence, HeldoutEvidence):
        folds = [evidence]
    elif isinstance(evidence, (list, tuple)):
        folds = list(evidence)
    else:
        folds = []
    if not folds or not all(isinstance(f, HeldoutEvidence) for f in folds):
        raise TypeError("evidence must be a HeldoutEvidence or a non-empty sequence of them")
    check_probability("level", level)
    if not isinstance(prefer_zero, bool):
        raise TypeError(f"prefer_zero must be a bool, got {type(prefer_zero).__name__}")
    if bounds is None:
        scale = sum(f.scale for f in folds) / len(folds) or 1.0
        bounds = (1e-4 * scale, 10 * scale)
    lo, hi = (check_positive("bounds[0]", bounds[0]), check_positive("bounds[1]", bounds[1]))
    if not lo < hi:
        raise ValueError(f"bounds must be increasing, got {bounds}")
    # Below sqrt(-e) for every fold the summed evidence is flat (each fold's τ_k is 0 there):
    # start the search above that plateau, where a bounded scalar search can see the slope.
    plateau = math.sqrt(max(0.0, -max(f.excess_variance for f in folds)))
    if plateau > 0:
        lo = min(max(lo, plateau * (1 + 1e-6)), hi * (1 - 1e-6))
    count = [0]

    def total(std):
        count[0] += 1
        return sum(f.log_prob(std) for f in folds)

    def maximise(fn):
        res = minimize_scalar(lambda t: -fn(math.exp(t)), bounds=(math.log(lo), math.log(hi)), method="bounded",
                              options={"xatol": tolerance})
        at_zero = fn(0.0)
        return (0.0, at_zero) if at_zero >= -float(res.fun) else (math.exp(res.x), -float(res.fun))

    best, value = maximise(total)
    without = total(0.0)
    threshold = value - 0.5 * float(chi2.ppf(level, 1))
    gap = lambda t: total(math.exp(t)) - threshold      # noqa: E731  (> 0 inside the interval)
    centre = math.log(best) if best > 0 else math.log(lo)
    if without >= threshold:
        lower = 0.0
    else:
        lower = lo if gap(math.log(lo)) >= 0 else math.exp(brentq(gap, math.log(lo), centre, xtol=tolerance))
    upper = hi if gap(math.log(hi)) >= 0 else math.exp(brentq(gap, centre, math.log(hi), xtol=tolerance))
    fold_std = [maximise(f.log_prob)[0] for f in folds] if len(folds) > 1 else [best]
    std, fitted = (0.0, without) if prefer_zero and lower == 0.0 else (best, value)
    return DiscrepancyFit(std=std, log_conditional_evidence=fitted, log_conditional_evidence_without=without,
                          num_heldout=sum(f.num_heldout for f in folds), evaluations=count[0],
                          seconds=time.perf_counter() - t0, num_folds=len(folds), interval=(lower, upper),
                          level=level, fold_std=fold_std, maximiser=best)
