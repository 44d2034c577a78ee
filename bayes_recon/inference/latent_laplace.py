"""Laplace approximation of the collapsed posterior ``p(z | y)`` and its importance check.

The Hessian ``H`` of ``−log p(z | y)`` at the collapsed MAP ``ẑ`` gives
``q(z) = N(ẑ, H⁻¹)``: the Laplace draws, the dense NUTS mass matrix
(``M⁻¹ = H⁻¹``) and the NUTS starting points. Whether ``q`` is good enough is
measured by Pareto-smoothed importance sampling (Vehtari et al. 2024): the
log ratios ``log p(z | y) − log q(z)`` of the draws go to ArviZ's
``az.psislw``, whose shape estimate ``k̂`` says how heavy the tail of the
weights is (above :func:`psis_khat_threshold` of the number of draws —
``min(1 − 1/log₁₀ S, 0.7)`` — the importance estimate, and the Laplace
approximation, are unreliable; :class:`ImportanceSamplingWarning`).
"""

from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np
import torch

from ..models.marginal import choose_evidence_method, collapsed_log_posterior

__all__ = ["LaplaceWarning", "ImportanceSamplingWarning", "PSIS_KHAT_THRESHOLD", "PSIS_MIN_DRAWS", "latent_hessian",
           "laplace_fit", "laplace_draws", "laplace_log_density", "psis_weights", "psis_khat_threshold",
           "systematic_resample", "laplace_importance", "map_stationarity", "MAP_NEWTON_DECREMENT_LIMIT"]

#: ``gᵀH⁻¹g`` (twice the predicted decrease of ``−log p(z | y)``, nats) above which
#: the collapsed MAP counts as not stationary (:class:`LaplaceWarning`).
MAP_NEWTON_DECREMENT_LIMIT = 1.0

#: Largest ``k̂`` threshold (Vehtari et al. 2024, reached from about 2200 draws).
PSIS_KHAT_THRESHOLD = 0.7


def psis_khat_threshold(num_draws: int) -> float:
    """``min(1 − 1/log₁₀ S, 0.7)``: the ``k̂`` above which ``S`` PSIS draws are unreliable.

    Vehtari et al. (2024), section 3.2: with fewer draws the Pareto tail is
    estimated from fewer points and a smaller ``k̂`` is already too heavy
    (0.5 at 100 draws, 0.6 at 316).

    Examples
    --------
    >>> round(psis_khat_threshold(100), 3), psis_khat_threshold(10_000)
    (0.5, 0.7)
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2, got {num_draws}")
    return float(min(1.0 - 1.0 / math.log10(num_draws), PSIS_KHAT_THRESHOLD))


def systematic_resample(weights: np.ndarray, num: int, u: float) -> np.ndarray:
    """Systematic resampling: ``num`` sorted indices with multiplicities ``≈ num·weights``.

    With equal weights every index comes out exactly once (no resampling noise,
    unlike multinomial draws); ``u`` in ``[0, 1)`` is the one uniform offset.
    """
    w = np.asarray(weights, dtype=np.float64)
    edges = np.cumsum(w / w.sum())
    edges[-1] = 1.0
    return np.searchsorted(edges, (u + np.arange(num)) / num, side="right").clip(max=w.size - 1)
#: Fewer finite draws leave ArviZ a Pareto tail of ≤ 4 points: ``k̂`` is not estimated (NaN).
PSIS_MIN_DRAWS = 30


class LaplaceWarning(RuntimeWarning):
    """The Hessian at the latent MAP was not positive definite and was repaired."""


class ImportanceSamplingWarning(RuntimeWarning):
    """PSIS ``k̂`` above 0.7: the Laplace approximation of ``p(z | y)`` is unreliable."""


def _fd_hessian(neg, z: torch.Tensor, eps: float) -> torch.Tensor:
    """Central differences of the autograd gradient of scalar ``neg`` at ``z`` ``(d,)``: ``(d, d)``.

    Column ``i`` is ``(∇neg(z + εe_i) − ∇neg(z − εe_i)) / 2ε``; not symmetrised.
    """
    def grad(v):
        v = v.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(neg(v), v)
        return g

    cols = []
    for i in range(z.numel()):
        e = torch.zeros_like(z)
        e[i] = eps
        cols.append((grad(z + e) - grad(z - e)) / (2 * eps))
    return torch.stack(cols, 1)


def latent_hessian(z: torch.Tensor, y, op, prior, noise_std, cfg, return_info: bool = False):
    """Hessian of ``−log p(z | y)`` (collapsed) at ``z`` ``(1, d)``: ``(d, d)`` float64, symmetric.

    Exact (autograd) on the dense path. On the SLQ path (whose backward pass
    is not twice differentiable) column ``i`` is a finite-difference
    Hessian-vector product ``(∇(ẑ + εe_i) − ∇(ẑ − εe_i))/2ε`` with
    ``ε = cfg.hessian_step``: ``2d`` gradients, each cheap once the SLQ is
    preconditioned by a reference factor at ``ẑ`` (at ``ẑ`` itself the
    whitened matrix is the identity and the gradient is exact).

    Parameters
    ----------
    z : torch.Tensor
        ``(1, d)``.
    y, op, prior, noise_std
        As in :func:`~bayes_recon.inference.sample_posterior`.
    cfg : SamplingConfig
        Reads ``evidence``, ``slq``, ``temperature`` and ``hessian_step``.
    return_info : bool
        Also return ``{"hessian_method": "autograd" | "finite_difference",
        "hessian_asymmetry": ‖H − Hᵀ‖_F / ‖H‖_F}`` (before symmetrisation; the
        asymmetry measures the finite-difference error).

    Returns
    -------
    torch.Tensor or (torch.Tensor, dict)
    """
    method = choose_evidence_method(cfg.evidence, op.domain_size)
    z = z.detach().to(torch.float64).reshape(-1)

    def neg(v):
        return -collapsed_log_posterior(v.reshape(1, -1), y, op, prior, noise_std,
                                        cfg.temperature, method, cfg.slq, exact_hessian=True)[0]

    if method == "dense":
        h, how = torch.autograd.functional.hessian(neg, z), "autograd"
    else:
        h, how = _fd_hessian(neg, z, cfg.hessian_step), "finite_difference"
    asym = float((h - h.T).norm() / h.norm().clamp_min(torch.finfo(h.dtype).tiny))
    h = 0.5 * (h + h.T)
    return (h, {"hessian_method": how, "hessian_asymmetry": asym}) if return_info else h


def laplace_fit(z_map, y, op, prior, sigma, cfg):
    """``H`` at ``ẑ``, repaired if not positive definite; ``(H, R, info)`` with ``R Rᵀ = H⁻¹``.

    Eigenvalues below ``1e-6·max|λ|`` are clipped to that floor and
    :class:`LaplaceWarning` is raised; ``info`` records what was done
    (``hessian_min_eigenvalue``, ``hessian_eigenvalue_floor``,
    ``hessian_num_clipped``, ``hessian_repaired``, ``hessian_method``,
    ``hessian_asymmetry``) and ``log_det_cov`` (``log|H⁻¹|`` after repair).
    """
    h, info = latent_hessian(z_map, y, op, prior, sigma, cfg, return_info=True)
    evals, evecs = torch.linalg.eigh(h)
    floor = 1e-6 * float(evals.abs().max())
    clipped = evals <= floor
    info.update(hessian_min_eigenvalue=float(evals.min()), hessian_eigenvalue_floor=floor,
                hessian_num_clipped=int(clipped.sum()), hessian_repaired=bool(clipped.any()))
    if info["hessian_repaired"]:
        warnings.warn(
            f"the Hessian of −log p(z|y) at the MAP has eigenvalues down to {float(evals.min()):.3g}; "
            f"{int(clipped.sum())} clipped to {floor:.3g} (the MAP may be a saddle point or not "
            "converged); recorded in the posterior's extras (hessian_repaired, hessian_num_clipped)",
            LaplaceWarning, stacklevel=4,
        )
        evals = evals.clamp_min(floor)
    info["log_det_cov"] = float(-evals.log().sum())
    return h, evecs * evals.rsqrt(), info  # Σ = V diag(1/λ) Vᵀ = R Rᵀ


def laplace_draws(z_map, cov_root, num_samples: int, num_chains: int, seed: int) -> torch.Tensor:
    """``z ~ N(ẑ, R Rᵀ)``: ``(chains, draws, d)`` float64, chain ``c`` seeded with ``seed + c``."""
    draws = []
    for chain in range(num_chains):
        gen = torch.Generator(device=z_map.device).manual_seed(seed + chain)
        eps = torch.randn(num_samples, cov_root.shape[0], generator=gen, dtype=torch.float64,
                          device=z_map.device)
        draws.append(z_map.reshape(1, -1).to(torch.float64) + eps @ cov_root.T)
    return torch.stack(draws)


def laplace_log_density(z: torch.Tensor, z_map: torch.Tensor, cov_root: torch.Tensor,
                        log_det_cov: float) -> torch.Tensor:
    """``log N(z; ẑ, R Rᵀ)`` for ``z`` ``(n, d)``: ``(n,)`` float64."""
    d = z.shape[-1]
    white = torch.linalg.solve(cov_root, (z - z_map.reshape(1, -1)).T).T  # R⁻¹(z − ẑ)
    return -0.5 * (white.square().sum(-1) + log_det_cov + d * math.log(2 * math.pi))


def psis_weights(log_ratio: np.ndarray):
    """PSIS-smoothed normalised importance weights and ``k̂`` from ``log p − log q`` ``(n,)``.

    Non-finite ratios (NaN, ±inf: a failed likelihood evaluation) get weight
    zero and are counted. A ratio that is constant to ``1e-9`` nats (the
    proposal is the target) gives equal weights and ``k̂ = −inf``. With fewer
    than :data:`PSIS_MIN_DRAWS` finite ratios ``k̂`` is NaN (not estimated)
    and the weights are the raw normalised ratios.

    Returns
    -------
    weights : numpy.ndarray
        ``(n,)``, non-negative, summing to one.
    khat : float
    num_nonfinite : int

    Raises
    ------
    ValueError
        No finite log ratio: the importance weights are all zero or NaN.
    """
    log_ratio = np.asarray(log_ratio, dtype=np.float64)
    finite = np.isfinite(log_ratio)
    if not finite.any():
        raise ValueError(
            f"importance weights are all zero or NaN: none of the {log_ratio.size} log ratios "
            "log p(z|y) − log q(z) is finite (the collapsed likelihood failed at every draw); "
            "use method='nuts'"
        )
    weights = np.zeros_like(log_ratio)
    lr = log_ratio[finite]
    if np.ptp(lr) <= 1e-9:
        weights[finite], khat = 1.0 / finite.sum(), float("-inf")
    elif lr.size < PSIS_MIN_DRAWS:
        weights[finite], khat = np.exp(lr - lr.max()), float("nan")
        weights /= weights.sum()
    else:
        lw, khat = az.psislw(lr - lr.max())
        weights[finite] = np.exp(lw - lw.max())
        weights /= weights.sum()
        khat = float(khat)
    return weights, khat, int((~finite).sum())


def warn_khat(khat: float, method: str, num_draws: int, proposal: str = "laplace") -> bool:
    """Warn :class:`ImportanceSamplingWarning` when ``k̂ > psis_khat_threshold(num_draws)``.

    ``proposal`` names what the draws came from: ``"laplace"`` (the Laplace
    approximation) or ``"surrogate"`` (NUTS on the preconditioned-SLQ
    surrogate of ``p(z | y)``). Returns whether it warned.
    """
    limit = psis_khat_threshold(num_draws)
    if not khat > limit:
        return False
    if proposal == "surrogate":
        what = ("the NUTS draws of the stochastic-Lanczos surrogate of p(z|y), re-weighted to the exact "
                "density: the surrogate's error is large, so the corrected draws are unreliable; rebuild "
                "the reference nearer the draws or raise slq.num_probes")
    else:
        what = ("the Laplace approximation of p(z|y): its importance weights have a heavy tail, so the "
                "Laplace draws" + (" and their resampling" if method == "laplace-is" else "")
                + " are unreliable; use method='nuts'")
    warnings.warn(
        f"PSIS k̂ = {khat:.2f} > {limit:.2f} (the threshold for {num_draws} draws) for {what} "
        f"(method={method!r}). Recorded in the posterior's extras (psis_khat)",
        ImportanceSamplingWarning, stacklevel=4,
    )
    return True


def laplace_importance(z, log_p, z_map, cov_root, info, seed, method):
    """PSIS check of Laplace draws ``z`` ``(chains, draws, d)`` against ``log_p`` ``(chains·draws,)``.

    Returns ``sample_stats`` (``importance_weight`` for ``"laplace"``), the
    resampling indices into the flat draws (``laplace-is``; else None) and
    extras: ``psis_khat``, ``psis_warning``, ``importance_ess`` (``1/Σw²`` of
    the smoothed weights), ``num_nonfinite_log_ratios``, ``log_ratio``
    ``(chains, draws)``.
    """
    flat = z.reshape(-1, z.shape[-1])
    log_q = laplace_log_density(flat, z_map.to(torch.float64), cov_root, info["log_det_cov"])
    log_ratio = (log_p - log_q).cpu().numpy()
    weights, khat, nonfinite = psis_weights(log_ratio)
    extras = {"psis_khat": khat, "psis_warning": warn_khat(khat, method, flat.shape[0]),
              "importance_ess": float(1.0 / np.square(weights).sum()),
              "num_nonfinite_log_ratios": nonfinite, "log_ratio": log_ratio.reshape(z.shape[:2])}
    if method == "laplace":
        return {"importance_weight": weights.reshape(z.shape[:2])}, None, extras
    # Multinomial resampling by the smoothed weights, seeded on the draws' device.
    gen = torch.Generator(device=z.device).manual_seed(seed + 4242)
    w = torch.as_tensor(weights, dtype=torch.float64, device=z.device)
    idx = torch.multinomial(w, flat.shape[0], replacement=True, generator=gen)
    extras["resampled_unique"] = int(idx.unique().numel())
    return None, idx, extras


def map_stationarity(z, y, op, prior, sigma, cfg, hessian):
    """``‖∇‖`` and ``gᵀH⁻¹g`` of ``−log p(z | y)`` at the MAP ``z`` ``(1, d)`` (warns if not stationary)."""
    v = z.detach().to(torch.float64).clone().requires_grad_(True)
    lp = collapsed_log_posterior(v, y, op, prior, sigma, cfg.temperature, cfg.evidence, cfg.slq)
    (g,) = torch.autograd.grad(-lp.sum(), v)
    g = g.reshape(-1)
    decrement = float(g @ torch.linalg.solve(hessian, g))
    if not decrement <= MAP_NEWTON_DECREMENT_LIMIT:
        warnings.warn(
            f"the collapsed MAP is not stationary: gᵀH⁻¹g = {decrement:.3g} > {MAP_NEWTON_DECREMENT_LIMIT} "
            f"(‖∇‖ = {float(g.norm()):.3g}); the Laplace approximation is centred off the mode. Raise "
            "map_steps. Recorded in the posterior's extras (map_newton_decrement)",
            LaplaceWarning, stacklevel=3,
        )
    return {"map_gradient_norm": float(g.norm()), "map_newton_decrement": decrement}
