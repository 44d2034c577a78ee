"""The exact check of the SUPN posterior's matrix-free surrogate (evidence ``"preconditioned"``/``"slq"``).

:func:`preconditioned_fit` builds the dense reference factor at the collapsed
MAP (:class:`~bayes_recon.models.preconditioned.PrecisionReference`) on which
the samplers of :func:`~bayes_recon.inference.sample_posterior` run;
:func:`exact_x_samples` factorises ``P`` once per kept draw, giving its exact
``log p(z | y)`` and its ``x | z, y``; :func:`correct_surrogate_draws`
re-weights NUTS draws of the surrogate (probe seed :func:`chain_slq` per chain)
to the exact density by PSIS and resamples within chains (:func:`resample_chains`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.exact_conditional import GaussianImagePosterior
from ..models.marginal import (
    DENSE_MAX_PIXELS,
    SLQConfig,
    collapsed_log_posterior,
    decode64,
    dense_log_likelihood_and_factor,
    latent_log_prior,
)
from ..models.preconditioned import PrecisionReference
from .latent_laplace import psis_weights, systematic_resample, warn_khat
from .latent_map import collapsed_map, default_noise_guess

__all__ = ["chain_slq", "resample_chains", "preconditioned_fit", "exact_x_samples", "correct_surrogate_draws",
           "log_posterior_values", "merge_solve_records"]


def chain_slq(slq: SLQConfig, chain: int) -> SLQConfig:
    """The probe settings of NUTS chain ``chain``: seed ``slq.seed + chain``, the rest unchanged."""
    return replace(slq, seed=slq.seed + chain)


def log_posterior_values(z, y, op, prior, sigma, cfg, slq):
    """``log p(z | y)`` on ``cfg``'s evidence path (no gradient) for ``z`` ``(n, d)``: ``(n,)``."""
    with torch.no_grad():
        return torch.cat([collapsed_log_posterior(
            z[i:i + cfg.x_batch], y.expand(min(cfg.x_batch, z.shape[0] - i), *y.shape[1:]), op, prior,
            sigma, cfg.temperature, cfg.evidence, slq) for i in range(0, z.shape[0], cfg.x_batch)])


def resample_chains(log_weights: np.ndarray, seed: int):
    """PSIS weights pooled over chains, then systematic resampling within each chain.

    Parameters
    ----------
    log_weights : numpy.ndarray
        ``(chains, draws)`` log importance ratios (target over proposal).
    seed : int
        Seeds the one uniform offset per chain.

    Returns
    -------
    index : numpy.ndarray
        ``(chains, draws)`` sorted draw indices per chain (equal weights: the identity).
    weights : numpy.ndarray
        ``(chains, draws)`` PSIS-smoothed weights, normalised over all draws.
    khat : float
    num_nonfinite : int
    """
    chains, draws = log_weights.shape
    weights, khat, nonfinite = psis_weights(log_weights.reshape(-1))
    weights = weights.reshape(chains, draws)
    rng = np.random.default_rng(seed)
    index = np.stack([systematic_resample(weights[c], draws, rng.uniform()) for c in range(chains)])
    return index, weights, khat, nonfinite


def correct_surrogate_draws(z, x, log_exact, log_sur, seed, stats):
    """PSIS re-weighting of NUTS draws of the SLQ surrogate to the exact ``p(z | y)``.

    The chains target the surrogate ``p̃`` (a deterministic function of ``z``
    per chain seed), so ``log w = log p − log p̃`` at their draws are exact
    importance ratios. The smoothed weights are pooled for ``k̂``, then each
    chain is systematically resampled by its own normalised weights, order
    kept (equal weights: the chain unchanged), so R-hat and ESS stay per chain
    (:func:`resample_chains`).
    """
    chains, draws = z.shape[:2]
    log_w = (log_exact.reshape(chains, draws) - log_sur.reshape(chains, draws)).cpu().numpy()
    idx, weights, khat, nonfinite = resample_chains(log_w, seed + 4243)
    rows = torch.arange(chains)[:, None]
    cols = torch.as_tensor(idx)
    extras = {
        "psis_khat": khat, "psis_warning": warn_khat(khat, "nuts", chains * draws, proposal="surrogate"),
        "importance_ess": float(1.0 / np.square(weights.reshape(-1)).sum()),
        "num_nonfinite_log_ratios": nonfinite, "log_ratio": log_w,
        "surrogate_error_std": float(np.nanstd(log_w)),
        "surrogate_error_max": float(np.nanmax(np.abs(log_w - np.nanmean(log_w)))),
        "resampled_unique": int(sum(np.unique(r).size for r in idx)),
    }
    stats = {k: np.take_along_axis(v, idx, 1) for k, v in stats.items()}
    stats["importance_weight"] = weights
    return z[rows, cols.to(z.device)], x[rows, cols.to(x.device)], stats, extras


def _dense_batch(x_batch: int, num_pixels: int) -> int:
    """Draws factorised together: ``x_batch`` at 32², fewer above (memory ~ batch·N², one at 64²)."""
    return max(1, min(x_batch, x_batch * DENSE_MAX_PIXELS ** 2 // num_pixels ** 2))


def exact_x_samples(z, y, op, prior, sigma, seed, cfg, progress, exact_log_density=False):
    """One exact ``x | z, y`` per draw: ``z`` ``(chains, draws, d)`` → ``(chains, draws, C, H, W)``.

    With ``exact_log_density`` every batch is factorised densely once
    (:func:`~bayes_recon.models.marginal.dense_log_likelihood_and_factor`):
    the factor gives the exact ``log p(z | y)`` of each draw (returned,
    ``(chains·draws,)``, else None) and, with solver ``"auto"``/``"cholesky"``,
    its ``x``. Also returns the solve record: ``x_solver``, ``x_converged``
    (every CG solve reached ``cg_tol``), ``x_cg_iterations`` /
    ``x_cg_residuals`` (one entry per CG solve; empty for Cholesky),
    ``x_cg_max_iterations`` and ``x_cg_max_residual`` (NaN / 0 without CG).
    """
    chains, draws, d = z.shape
    flat = z.reshape(-1, d)
    gen = torch.Generator(device=y.device).manual_seed(seed + 7919)
    out, logs, converged, iters, resid, solver = [], [], True, [], [], None
    batch = _dense_batch(cfg.x_batch, op.domain_size) if exact_log_density else cfg.x_batch
    steps = range(0, flat.shape[0], batch)
    for start in tqdm(steps, desc="exact x | z, y", disable=not progress, leave=False):
        zb = flat[start:start + batch]
        with torch.no_grad():
            dist = decode64(prior, zb)
        yb = y.expand(zb.shape[0], *y.shape[1:])
        chol = None
        if exact_log_density:
            ll, chol = dense_log_likelihood_and_factor(dist, yb, op, sigma)
            logs.append(ll + latent_log_prior(zb, cfg.temperature))
        post = GaussianImagePosterior(dist, yb, op, sigma, cfg.x_solver, cholesky=chol)
        out.append(post.sample(1, generator=gen)[0])
        converged = converged and post.converged
        iters += post.cg_iterations
        resid += post.cg_residuals
        solver = post.solver
    x = torch.cat(out).reshape(chains, draws, *op.domain_shape)
    record = merge_solve_records([{"x_solver": solver, "x_converged": bool(converged),
                                   "x_cg_iterations": iters, "x_cg_residuals": resid}])
    return x, (torch.cat(logs) if exact_log_density else None), record


def merge_solve_records(records: list) -> dict:
    """One ``x | z, y`` solve record from several (batches, chains).

    Each has ``x_solver``, ``x_converged`` and per-solve ``x_cg_iterations`` /
    ``x_cg_residuals``; the result adds ``x_cg_max_iterations`` and
    ``x_cg_max_residual`` (0 / NaN without CG).
    """
    iters = np.concatenate([np.asarray(r["x_cg_iterations"], dtype=np.int64) for r in records])
    resid = np.concatenate([np.asarray(r["x_cg_residuals"], dtype=np.float64) for r in records])
    return {
        "x_solver": records[-1]["x_solver"],
        "x_converged": all(r["x_converged"] for r in records),
        "x_cg_iterations": iters,
        "x_cg_residuals": resid,
        "x_cg_max_iterations": int(iters.max(initial=0)),
        "x_cg_max_residual": float(resid.max()) if resid.size else float("nan"),
    }


def preconditioned_fit(y, op, prior, noise_std, z0, cfg, need_map):
    """The reference factor for ``evidence="preconditioned"``, and the collapsed MAP on it.

    Round 1: reference at the encoder's latent ``z0``, MAP on that surrogate;
    round 2: reference at that MAP, MAP again from it; the returned reference
    is built at the final MAP (where the whitened matrix is the identity, so
    the gradient and the Hessian's centre are exact). Without ``need_map`` (σ
    given, no Laplace and no MAP start) one reference at ``z0``.
    """
    sigma = None if noise_std is None else float(noise_std)
    ref = PrecisionReference.from_distribution(decode64(prior, z0), op,
                                               sigma if sigma is not None else default_noise_guess(y))
    if not need_map:
        return None, ref
    z, fit = z0, None
    for _ in range(2):
        fit = collapsed_map(y, op, prior, noise_std, z0=z, temperature=cfg.temperature, method="slq",
                            slq=replace(cfg.slq, preconditioner=ref), steps=cfg.map_steps)
        z = fit.z
        ref = PrecisionReference.from_distribution(decode64(prior, z), op, fit.noise_std)
    return fit, ref
