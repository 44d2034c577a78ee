"""The exact Gaussian posterior of a Gaussian Markov random field (Tikhonov-type) prior.

The simplest honest Bayesian baseline: no network and no training data, every
quantity in closed form. Prior and likelihood on an image ``x`` of ``N = C·H·W``
pixels with ``m`` real measurements::

    x ~ N(m0 · 1, Q⁻¹),   Q = α (DᵀD + ε I)
    y ~ N(A x, σ² I)

``D`` is the forward-difference gradient with Neumann boundary of
:func:`bayes_recon.operators.image_gradient` (per channel), so ``DᵀD`` is the
4-neighbour graph Laplacian of the pixel grid. A complex-range operator (MRI) is
the real-linear map ``x ↦ [Re A x; Im A x]`` with ``σ`` on the real and imaginary
parts separately (``m = op.range_size``); ``op.adjoint`` is already its transpose.

**The ridge ε.** ``DᵀD`` annihilates the constant image of every channel, so
without ``ε`` the prior is improper and ``log|Q| = -∞`` (no evidence). The
default ``ε = 1e-3`` makes it proper and stays below the smallest non-zero
eigenvalue of ``DᵀD``, ``4 sin²(π / 2 max(H, W))`` (0.0126 at 28², 0.0024 at 64²):
it adds at most 8 % (28²) or 41 % (64²) to the prior precision of any
non-constant mode. The constant mode gets prior std ``1 / sqrt(α ε)``, which the
fitted mean ``m0`` takes over; ``DᵀD + ε I`` has condition number at most
``(8 + ε) / ε ≈ 8000``.

**Hyperparameters** by type-II maximum likelihood of
``log N(y; A m0 1, A Q⁻¹ Aᵀ + σ² I)``. The search runs on the Tikhonov weight
``β = α σ²`` (the posterior mean minimises
``½‖Ax − y‖² + ½β (x − m0 1)ᵀ(DᵀD + εI)(x − m0 1)``): with ``K = DᵀD + εI = R Rᵀ``
and ``R⁻¹ AᵀA R⁻ᵀ = U Λ Uᵀ`` (one dense eigendecomposition) the log evidence is a
sum over ``N`` eigenvalues for every ``β``, and ``m0`` (and ``σ²`` when it is
estimated) maximise it in closed form given ``β``. So the optimisation is always
one-dimensional, exact and cheap: a grid over the bounds (``points_per_decade``)
finds the global maximum, a bounded Brent search refines it to ``tolerance``. The
reported log evidence, posterior mean, marginal std and draws then come from the
Cholesky factor of the posterior precision ``P = AᵀA / σ² + Q = L Lᵀ`` at the
optimum (matrix determinant lemma
``log|A Q⁻¹ Aᵀ + σ² I| = log|P| − log|Q| + m log σ²``).

**Size.** Dense float64, ``N <= GMRFConfig.max_pixels`` (16384 = 128²): peak
memory about five ``N × N`` matrices, ``40 N²`` bytes (0.7 GB at 64², measured;
11 GB at 128²). Time is dominated by the ``N × N`` eigendecomposition, ``O(N³)``:
12 s for it at 64² on an idle 2-core CPU (the whole call about 1.3 times that),
so roughly 15 minutes at 128² (extrapolated).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from ..operators.base import LinearOperator
from ..posterior import Posterior
from .linearised.config import EvidenceConvergenceWarning
from .linearised.linalg import robust_cholesky

__all__ = ["GMRFConfig", "GMRFResult", "gmrf_posterior"]

_F64 = torch.float64


@dataclass(frozen=True)
class GMRFConfig:
    """Settings of :func:`gmrf_posterior`.

    Attributes
    ----------
    ridge : float
        ``ε`` of ``Q = α (DᵀD + ε I)``, > 0 (makes the prior proper; see the module notes).
    log10_weight_bounds : (float, float)
        Search interval of ``log10(β / β_ref)`` for the Tikhonov weight ``β = α σ²``, with
        ``β_ref = trace(AᵀA) / N`` (the mean squared column norm of ``A``, so the bounds mean
        the same on every problem). ``β`` far below ``β_ref`` is no regularisation at all,
        far above it a constant image; a maximum on a bound is reported as not converged.
    points_per_decade : int
        Grid density of the global search over the bounds, >= 1.
    iterations : int
        Maximum evaluations of the Brent refinement, >= 1.
    tolerance : float
        Absolute tolerance of the Brent refinement in ``log10 β`` (decades), > 0.
    max_pixels : int
        Largest ``N`` of the dense path (default 16384 = 128²; see the module notes for
        memory and time); larger images raise ``ValueError``.
    chunk_size : int
        Unit images per ``op.normal`` call when building ``AᵀA``, >= 1.
    """

    ridge: float = 1e-3
    log10_weight_bounds: tuple[float, float] = (-6.0, 6.0)
    points_per_decade: int = 8
    iterations: int = 100
    tolerance: float = 1e-5
    max_pixels: int = 16384
    chunk_size: int = 256

    def __post_init__(self):
        check_positive("ridge", self.ridge)
        b = self.log10_weight_bounds
        if (not isinstance(b, (tuple, list)) or len(b) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
                or not all(math.isfinite(v) for v in b) or not b[0] < b[1]):
            raise ValueError(f"log10_weight_bounds must be two finite numbers (low, high) with "
                             f"low < high, got {b!r}")
        check_int("points_per_decade", self.points_per_decade, minimum=1)
        check_int("iterations", self.iterations, minimum=1)
        check_positive("tolerance", self.tolerance)
        check_int("max_pixels", self.max_pixels, minimum=1)
        check_int("chunk_size", self.chunk_size, minimum=1)


@dataclass(frozen=True)
class GMRFResult:
    """Output of :func:`gmrf_posterior`.

    Attributes
    ----------
    posterior : Posterior
        Exact draws ``(1, num_samples, C, H, W)``, ``method="gmrf"``; ``hyperparameters``
        ``alpha``, ``prior_mean``, ``noise_std``; extras ``log_evidence``, ``converged``,
        ``stop_reason``, ``jitter``, ``prior_jitter``, ``ridge``, ``noise_estimated``.
    mean : torch.Tensor
        Exact posterior mean ``(1, C, H, W)``.
    std : torch.Tensor
        Exact marginal posterior std ``(1, C, H, W)`` (square root of ``diag P⁻¹``).
    log_evidence : float
        ``log N(y; A m0 1, A Q⁻¹ Aᵀ + σ² I)`` at the fitted hyperparameters (nats).
    alpha, prior_mean, noise_std : float
        The fitted ``α`` and ``m0``, and the ``σ`` used (given, or the evidence estimate).
    noise_estimated : bool
        Whether ``σ`` was estimated (``noise_std=None``).
    converged : bool
        The Brent refinement met ``tolerance`` and the maximum is inside the bounds.
    stop_reason : str
        ``"converged"``, ``"max_iterations"``, ``"lower_bound"`` or ``"upper_bound"``.
    iterations : int
        Evidence evaluations of the refinement (after the grid).
    jitter : float
        Absolute diagonal jitter added to ``P`` for its Cholesky factor (0.0 if none).
    seconds : float
        Wall time.
    """

    posterior: Posterior
    mean: torch.Tensor
    std: torch.Tensor
    log_evidence: float
    alpha: float
    prior_mean: float
    noise_std: float
    noise_estimated: bool
    converged: bool
    stop_reason: str
    iterations: int
    jitter: float
    seconds: float


def _add_gmrf_precision_(matrix: torch.Tensor, shape, scale: float, ridge: float) -> torch.Tensor:
    """``matrix += scale · (DᵀD + ridge · I)`` in place, ``D`` of :func:`image_gradient`.

    ``DᵀD`` is the sum over neighbouring pixel pairs ``(i, j)`` (vertical and horizontal,
    within a channel; Neumann: no pair across the border) of ``(e_i − e_j)(e_i − e_j)ᵀ``.
    Written entry by entry so that no second dense matrix is needed.
    """
    c, h, w = shape
    idx = torch.arange(c * h * w, device=matrix.device).reshape(c, h, w)
    diag = matrix.diagonal()
    diag += scale * ridge
    for i, j in ((idx[:, :-1, :], idx[:, 1:, :]), (idx[:, :, :-1], idx[:, :, 1:])):
        i, j = i.reshape(-1), j.reshape(-1)
        diag[i] += scale  # indices within one direction are distinct: no accumulation needed
        diag[j] += scale
        matrix[i, j] -= scale
        matrix[j, i] -= scale
    return matrix


def _normal_matrix(op: LinearOperator, device, chunk: int, progress: bool) -> torch.Tensor:
    """Dense ``AᵀA`` ``(N, N)`` in float64, from ``op.normal`` on batches of unit images.

    ``op.normal(e_i)`` is column ``i`` of the symmetric ``AᵀA``, stored here as row ``i``.
    """
    n = op.domain_size
    g = torch.empty(n, n, dtype=_F64, device=device)
    starts = range(0, n, chunk)
    for start in tqdm(starts, desc="gmrf: AᵀA", disable=not progress, leave=False):
        stop = min(n, start + chunk)
        rows = torch.arange(stop - start, device=device)
        unit = torch.zeros(stop - start, n, dtype=_F64, device=device)
        unit[rows, start + rows] = 1.0
        g[start:stop] = op.normal(unit.reshape(-1, *op.domain_shape)).reshape(stop - start, n)
    return g


def _real_dot(u: torch.Tensor, v: torch.Tensor) -> float:
    """``<u, v>`` of measurements as real vectors ``[Re; Im]``."""
    return float((u.conj() * v).real.sum()) if u.is_complex() else float((u * v).sum())


class _Spectrum:
    """The log evidence as a function of ``t = log10(β / β_ref)``, in the eigenbasis of ``K⁻¹AᵀA``.

    ``K = R Rᵀ``, ``R⁻¹ AᵀA R⁻ᵀ = U Λ Uᵀ``, ``d_i = λ_i + β``, ``w = Uᵀ R⁻¹ Aᵀ y`` and
    ``v = Uᵀ Rᵀ 1``. For ``C = A Q⁻¹ Aᵀ + σ² I = σ² (I + A K⁻¹ Aᵀ / β)`` and ``r = y − m0 A 1``:
    ``log|C| = Σ log d_i − N log β + m log σ²`` (Sylvester) and ``rᵀ C⁻¹ r = S(m0) / σ²`` with
    ``S(m0) = S_yy − 2 m0 S_ya + m0² S_aa`` (Woodbury), ``S_yy = ‖y‖² − Σ w_i² / d_i``,
    ``S_ya = β Σ v_i w_i / d_i``, ``S_aa = β Σ λ_i v_i² / d_i`` (the last two written without
    the cancellation of ``<a, y> − ...`` at small β, since ``a = A 1``). So ``m0 = S_ya / S_aa``
    and, if estimated, ``σ² = S(m0) / m``, both in closed form given β.
    """

    def __init__(self, lam, w, v, yy, beta_ref, m, noise_var, mean_identified):
        self.lam, self.w, self.v, self.yy = lam, w, v, yy
        self.beta_ref, self.m, self.noise_var = beta_ref, m, noise_var
        self.mean_identified = mean_identified

    def evaluate(self, t: torch.Tensor):
        """``(-log evidence, S, m0, β)`` for a 1-D float64 tensor of ``t``, each ``(k,)``."""
        beta = self.beta_ref * torch.pow(10.0, t)
        inv = 1.0 / (self.lam[None, :] + beta[:, None])
        s = self.yy - (self.w.square() * inv).sum(1)
        if self.mean_identified:
            m0 = (self.v * self.w * inv).sum(1) / (self.lam * self.v.square() * inv).sum(1)
            s = s - beta * m0 * (self.v * self.w * inv).sum(1)  # S_yy − S_ya² / S_aa
        else:
            m0 = torch.zeros_like(beta)
        logdet = -torch.log(inv).sum(1) - self.lam.numel() * torch.log(beta)
        const = self.m * math.log(2 * math.pi)
        if self.noise_var is not None:
            nll = 0.5 * (const + logdet + self.m * math.log(self.noise_var) + s / self.noise_var)
        else:
            # S <= 0 only by round-off at an exact fit; excluding it keeps σ² = S/m positive.
            safe = s.clamp_min(torch.finfo(_F64).tiny)
            nll = 0.5 * (const + logdet + self.m * torch.log(safe / self.m) + self.m)
            nll = torch.where(s > 0, nll, torch.full_like(nll, math.inf))
        return nll, s, m0, beta


def _search(spec: _Spectrum, cfg: GMRFConfig):
    """Global grid over the bounds, then bounded Brent around the best grid point."""
    lo, hi = (float(v) for v in cfg.log10_weight_bounds)
    device = spec.lam.device
    k = max(2, int(round((hi - lo) * cfg.points_per_decade)) + 1)
    grid = torch.linspace(lo, hi, k, dtype=_F64, device=device)
    values = spec.evaluate(grid)[0]
    if not bool(torch.isfinite(values).any()):
        raise FloatingPointError("the GMRF log evidence is not finite anywhere in "
                                 f"log10_weight_bounds={cfg.log10_weight_bounds}")
    best = int(torch.argmin(values))
    a, b = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, k - 1)])

    def objective(t: float) -> float:
        return float(spec.evaluate(torch.tensor([t], dtype=_F64, device=device))[0][0])

    res = minimize_scalar(objective, bounds=(a, b), method="bounded",
                          options={"xatol": cfg.tolerance, "maxiter": cfg.iterations})
    t, value = float(res.x), float(res.fun)
    # Bounded Brent never evaluates the end points themselves: compare with them directly.
    for edge in (lo, hi):
        if a <= edge <= b and float(values[0 if edge == lo else -1]) <= value:
            t, value = edge, float(values[0 if edge == lo else -1])
    margin = 2 * cfg.tolerance
    if t <= lo + margin:
        reason = "lower_bound"
    elif t >= hi - margin:
        reason = "upper_bound"
    elif res.status != 0:
        reason = "max_iterations"
    else:
        reason = "converged"
    return t, reason, int(res.nfev)


def gmrf_posterior(y: torch.Tensor, op: LinearOperator, noise_std: float | None = None,
                   config: GMRFConfig | None = None, num_samples: int = 1000, seed: int = 0,
                   progress: bool = True) -> GMRFResult:
    """Exact posterior of a GMRF prior with evidence-fitted hyperparameters.

    Prior ``x ~ N(m0 · 1, Q⁻¹)``, ``Q = α (DᵀD + ε I)`` (``D`` the Neumann forward-difference
    gradient of :func:`bayes_recon.operators.image_gradient`); likelihood
    ``y ~ N(A x, σ² I)``. ``α``, ``m0`` (and ``σ`` when ``noise_std is None``) maximise the
    evidence ``log N(y; A m0 1, A Q⁻¹ Aᵀ + σ² I)``; see :mod:`bayes_recon.inference.gmrf` for
    the algorithm, the ridge and the size limit.

    Parameters
    ----------
    y : torch.Tensor
        ``(1, *op.range_shape)``, real, or complex for a complex-range operator; finite.
    op : LinearOperator
        Forward model on images ``(C, H, W)`` with ``N = C·H·W <= config.max_pixels``.
    noise_std : float or None
        ``σ`` (> 0, finite) of the noise on each real measurement (on the real and the
        imaginary part each, for complex ``y``); None estimates it by the evidence.
    config : GMRFConfig, optional
    num_samples : int
        Exact posterior draws, >= 1.
    seed : int
        Seeds the draws (a ``torch.Generator`` on ``y``'s device; global RNG untouched).
    progress : bool
        Show a bar while ``AᵀA`` is built.

    Returns
    -------
    GMRFResult
        Samples, mean and std in ``y``'s real dtype on ``y``'s device (computed in float64).

    Raises
    ------
    TypeError
        ``op`` not a LinearOperator, ``y`` not a tensor or of the wrong kind (real/complex),
        ``config`` not a GMRFConfig.
    ValueError
        ``y`` of the wrong shape or non-finite, ``noise_std`` not > 0 and finite, more than
        ``config.max_pixels`` pixels, an operator that maps everything to zero, or
        ``y = 0`` with ``noise_std=None``.

    Warns
    -----
    EvidenceConvergenceWarning
        The evidence maximum lies on a bound of ``log10_weight_bounds`` or Brent ran out of
        iterations (``converged`` is False, ``stop_reason`` says which).
    CholeskyJitterWarning
        ``P`` (or ``DᵀD + εI``) needed diagonal jitter (recorded in ``jitter``).

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.data import shepp_logan, simulate
    >>> from bayes_recon.operators import Blur, gaussian_kernel
    >>> x = shepp_logan(16)
    >>> op = Blur(16, gaussian_kernel(1.0, 5))
    >>> meas = simulate(op, x, relative_noise=0.05, seed=0)
    >>> res = gmrf_posterior(meas.y, op, meas.noise_std, num_samples=200, progress=False)
    >>> res.posterior.samples.shape, res.mean.shape, res.converged
    (torch.Size([1, 200, 1, 16, 16]), torch.Size([1, 1, 16, 16]), True)
    >>> bool((res.std > 0).all()), res.posterior.hyperparameters["noise_std"] == meas.noise_std
    (True, True)
    >>> est = gmrf_posterior(meas.y, op, None, num_samples=10, progress=False)  # σ by the evidence
    >>> est.noise_estimated, est.log_evidence >= res.log_evidence
    (True, True)
    """
    t_start = time.perf_counter()
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    if len(op.domain_shape) != 3:
        raise ValueError(f"op.domain_shape must be an image shape (C, H, W), got {op.domain_shape}")
    cfg = GMRFConfig() if config is None else config
    if not isinstance(cfg, GMRFConfig):
        raise TypeError(f"config must be a GMRFConfig or None, got {type(config).__name__}")
    y = check_tensor("y", y, shape=(1, *op.range_shape), allow_complex=op.complex_range)
    if op.complex_range and not y.is_complex():
        raise TypeError(f"y must be complex for {type(op).__name__} (complex range), got {y.dtype}")
    if not op.complex_range and y.is_complex():
        raise TypeError(f"y must be real for {type(op).__name__}, got {y.dtype}")
    given_std = None if noise_std is None else check_positive("noise_std", noise_std)
    noise_var = None if given_std is None else given_std**2
    check_int("num_samples", num_samples, minimum=1)
    check_int("seed", seed, minimum=0)
    n, m = op.domain_size, op.range_size
    if n > cfg.max_pixels:
        raise ValueError(f"op.domain_shape {op.domain_shape} has N = {n} pixels, above the dense "
                         f"limit GMRFConfig.max_pixels = {cfg.max_pixels} (memory ~40 N² bytes = "
                         f"{40 * n * n / 1e9:.1f} GB); raise max_pixels if that fits")
    device = y.device
    out_dtype = y.real.dtype if y.is_complex() else y.dtype
    shape = op.domain_shape

    with torch.no_grad():
        y64 = y.detach().to(torch.complex128 if y.is_complex() else _F64)
        a = op(torch.ones(1, *shape, dtype=_F64, device=device))  # A 1: the prior mean's image
        b_y = op.adjoint(y64).reshape(n)
        b_a = op.adjoint(a).reshape(n)
        yy, ya, aa = _real_dot(y64, y64), _real_dot(a, y64), _real_dot(a, a)
        gram = _normal_matrix(op, device, cfg.chunk_size, progress)
        trace = float(gram.diagonal().sum())
        if not trace > 0:
            raise ValueError(f"op maps every image to zero (trace(AᵀA) = {trace}); nothing to fit")
        if noise_var is None and yy == 0.0:
            raise ValueError("y is identically zero: the noise level cannot be estimated; "
                             "pass noise_std")
        beta_ref = trace / n
        # A 1 ≈ 0: the data say nothing about m0 (evidence flat in it); take m0 = 0.
        mean_identified = aa > 1e-20 * n * trace

        # K = DᵀD + εI = R Rᵀ; the eigenbasis of R⁻¹ AᵀA R⁻ᵀ makes the evidence a cheap sum.
        k_mat = _add_gmrf_precision_(torch.zeros(n, n, dtype=_F64, device=device), shape, 1.0,
                                     cfg.ridge)
        r_fac, prior_jitter = robust_cholesky(k_mat, "DᵀD + εI", return_jitter=True)
        del k_mat
        logdet_k = 2.0 * float(torch.log(r_fac.diagonal()).sum())
        half = torch.linalg.solve_triangular(r_fac, gram, upper=False)            # R⁻¹ G
        whitened = torch.linalg.solve_triangular(r_fac, half.mT, upper=False)     # R⁻¹ G R⁻ᵀ
        del half
        # R⁻¹ Aᵀ y and Rᵀ 1 (R lower triangular: Rᵀ 1 is R's column sums).
        z = torch.stack([torch.linalg.solve_triangular(r_fac, b_y[:, None], upper=False)[:, 0],
                         r_fac.sum(0)], 1)
        del r_fac
        lam, vecs = torch.linalg.eigh(whitened)  # reads the lower triangle
        del whitened
        z = vecs.mT @ z
        del vecs
        # Eigenvalues of a PSD matrix: negatives are round-off.
        spec = _Spectrum(lam.clamp_min(0.0), z[:, 0], z[:, 1], yy, beta_ref, m, noise_var,
                         mean_identified)
        t_opt, reason, nfev = _search(spec, cfg)
        _, s_opt, m0_opt, beta_opt = spec.evaluate(torch.tensor([t_opt], dtype=_F64, device=device))
        beta, m0 = float(beta_opt[0]), float(m0_opt[0])
        var = noise_var if noise_var is not None else float(s_opt[0]) / m
        sigma = given_std if given_std is not None else math.sqrt(var)
        alpha = beta / var
        converged = reason == "converged"
        if not converged:
            hint = ("widen GMRFConfig.log10_weight_bounds" if reason.endswith("bound")
                    else "raise GMRFConfig.iterations")
            warnings.warn(f"gmrf evidence maximisation stopped at {reason} (log10(β/β_ref) = "
                          f"{t_opt:.4g}, bounds {cfg.log10_weight_bounds}); {hint}",
                          EvidenceConvergenceWarning, stacklevel=2)

        # Posterior precision P = G / σ² + α K, built in the Gram matrix's storage.
        prec = gram.div_(var)
        del gram
        _add_gmrf_precision_(prec, shape, alpha, cfg.ridge)
        chol, jitter = robust_cholesky(prec, "posterior precision P", return_jitter=True)
        del prec
        b = (b_y - m0 * b_a)[:, None]                   # Aᵀ(y − A m0 1)
        pinv_b = torch.cholesky_solve(b, chol)
        mean = m0 + pinv_b[:, 0] / var
        rr = yy - 2 * m0 * ya + m0 * m0 * aa              # ‖y − A m0 1‖²
        quad = (rr - float((b * pinv_b).sum()) / var) / var
        logdet_p = 2.0 * float(torch.log(chol.diagonal()).sum())
        logdet_c = logdet_p - (n * math.log(alpha) + logdet_k) + m * math.log(var)
        log_evidence = -0.5 * (m * math.log(2 * math.pi) + logdet_c + quad)

        # diag(P⁻¹) = column norms² of L⁻¹, by blocks of unit vectors to keep memory at N × chunk.
        variance = torch.empty(n, dtype=_F64, device=device)
        for start in range(0, n, cfg.chunk_size):
            stop = min(n, start + cfg.chunk_size)
            rows = torch.arange(stop - start, device=device)
            unit = torch.zeros(n, stop - start, dtype=_F64, device=device)
            unit[start + rows, rows] = 1.0
            block = torch.linalg.solve_triangular(chol, unit, upper=False)
            variance[start:stop] = block.square().sum(0)

        # Exact draws: L⁻ᵀ ξ has covariance (L Lᵀ)⁻¹ = P⁻¹.
        gen = torch.Generator(device=device).manual_seed(seed)
        xi = torch.randn(n, num_samples, generator=gen, dtype=_F64, device=device)
        draws = mean[:, None] + torch.linalg.solve_triangular(chol.mT, xi, upper=True)
        samples = draws.mT.reshape(1, num_samples, *shape).to(out_dtype)

    hyper = {"alpha": alpha, "prior_mean": m0, "noise_std": sigma}
    post = Posterior(samples, method="gmrf", operator=op, noise_std=sigma, seed=seed,
                     hyperparameters=hyper, log_evidence=log_evidence, converged=converged,
                     stop_reason=reason, jitter=jitter, prior_jitter=prior_jitter,
                     ridge=cfg.ridge, noise_estimated=noise_std is None,
                     prior_mean_identified=bool(mean_identified))
    return GMRFResult(posterior=post, mean=mean.reshape(1, *shape).to(out_dtype),
                      std=variance.sqrt().reshape(1, *shape).to(out_dtype),
                      log_evidence=log_evidence, alpha=alpha, prior_mean=m0, noise_std=sigma,
                      noise_estimated=noise_std is None, converged=converged, stop_reason=reason,
                      iterations=nfev, jitter=jitter, seconds=time.perf_counter() - t_start)
