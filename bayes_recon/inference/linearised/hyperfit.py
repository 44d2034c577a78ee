"""Fitting the hyperparameters of :class:`~.laplace.LinearisedLaplace`: L-BFGS or sample-based EM.

``lbfgs``: the module's raw parameters maximise
:meth:`~.laplace.LinearisedLaplace.optimisation_objective` (evidence plus every
registered prior, e.g. the TV-PredCP) with :func:`~.optimise.lbfgs_maximise`.
With ``config.min_log_variance`` the objective is evaluated at
``max(log σ_b², floor)`` (flat below the floor) and the floored values are
stored at the end.

``em`` (Antorán et al., ICLR 2023, adapted to the filter prior): each iteration
solves ``K_yy [α, v_1..v_S] = [t, w_1..w_S]`` with ``w_s = A J Σ^{1/2} ε_s + σ e_s``
(the data part of a Matheron sample, so ``v_s ~ N(0, K_yy⁻¹)``; fixed ``ε, e`` and
warm-started CG across iterations). In weight space ``g = Jᵀ Aᵀ α`` and
``h_s = Jᵀ Aᵀ v_s`` give per group the ``k² x k²`` statistics ``R_b = Σ_f g_f g_fᵀ``,
``G_b = mean_s Σ_f h_{s,f} h_{s,f}ᵀ``, so with ``Σ̃_b = σ_b² C(ℓ_b)``:

* ``q_b = tr(Σ̃_b R_b) = μ_bᵀ Σ_b⁻¹ μ_b`` and the effective dimension
  ``γ_b = tr(Σ̃_b G_b)`` (an unbiased estimate of ``tr(K_b K_yy⁻¹) = P_b - tr(Σ_b⁻¹ H⁻¹_bb)``);
  MacKay's update ``σ_b² ← σ_b² q_b / γ_b``;
  (then clamped to ``config.min_log_variance`` when a floor is set);
* noise: ``σ² ← σ² ‖α‖² / mean_s ‖v_s‖²`` (``= ‖y - A μ‖² / (m - γ)``);
* lengthscales: a Fisher-scaled step along the unbiased evidence gradient
  ``½ tr(∂Σ̃_b/∂log ℓ_b (R_b - G_b))`` (plus registered priors), at most
  ``config.em_lengthscale_step``.

All three are fixed points exactly where the evidence gradient vanishes, so EM
converges to the type-II optimum up to Monte-Carlo error; the returned values
average the last iterates. All products with ``J`` are matrix-free on the
scalable path.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from ..._validation import check_choice, check_int, check_positive
from .config import EvidenceConvergenceWarning, EvidenceResult, NumericalRecord
from .evidence import adjoint_rows, forward_rows
from .linalg import recording_warnings, reemit_summary
from .optimise import lbfgs_maximise

__all__ = ["optimise_evidence", "em_statistics"]


def _resolve(la, iterations, predcp_scale, method):
    method = method or la.config.hyperparameter_method
    check_choice("method", method, ("auto", "lbfgs", "em"))
    if method == "auto":
        method = "em" if la.backend.prefers_em and la.config.expansion == "linearised" else "lbfgs"
    if method == "em" and la.config.expansion != "linearised":
        raise ValueError("method='em' needs config.expansion='linearised' (EM fits the exact linear "
                         f"model), got config.expansion={la.config.expansion!r}")
    if iterations is None:
        iterations = 200 if method == "lbfgs" else la.config.em_iterations
    check_int("iterations", iterations, minimum=1)
    if predcp_scale is not None:
        predcp_scale = check_positive("predcp_scale", predcp_scale, allow_zero=True)
        la.set_prior(la.predcp_prior(predcp_scale) if predcp_scale > 0 else None)
        la.predcp_scale = predcp_scale
    return method, iterations


def optimise_evidence(la, iterations=None, predcp_scale=None, progress=None, method=None) -> EvidenceResult:
    """Maximise the evidence (MLL) or evidence + registered priors (e.g. TV-MAP) over ``φ``.

    Parameters
    ----------
    la : LinearisedLaplace
    iterations : int, optional
        L-BFGS iterations (default 200) or EM iterations (``config.em_iterations``).
    predcp_scale : float, optional
        None keeps the registered priors; 0 drops the TV-PredCP; ``κ > 0`` registers it.
    progress : bool, optional
    method : {"lbfgs", "em", "auto"}, optional
        Default ``config.hyperparameter_method``.

    Returns
    -------
    EvidenceResult
        ``stop_reason`` says why it stopped; a stop before the tolerance warns
        :class:`EvidenceConvergenceWarning`.
    """
    method, iterations = _resolve(la, iterations, predcp_scale, method)
    progress = la.progress if progress is None else progress
    if method == "em":
        return _em(la, iterations, progress)
    raw_ls, raw_var = la.hyper.raw_log_lengthscale, la.hyper.raw_variance
    raw_noise = la.likelihood.noise_covar.raw_noise
    params = [raw_ls, raw_var] if la.fixed_noise else [raw_ls, raw_var, raw_noise]
    record, caught = NumericalRecord(), []

    def objective(*_):
        record.evaluations += 1
        with recording_warnings(record, reemit=False, collect=caught):
            # The registered priors (predcp_scale=None): the function the gradient tests check.
            return la.optimisation_objective(raw_ls, raw_var, raw_noise)

    t0 = time.perf_counter()
    try:
        run = lbfgs_maximise(objective, params, iterations, scale=float(la.m), progress=progress,
                             desc="evidence (L-BFGS)")
    finally:
        # One warning per kind instead of one per evaluation; all are counted in `record`.
        reemit_summary(caught, "the evidence optimisation")
    for p in params:
        p.grad = None
    if la.config.min_log_variance is not None:
        # The objective saw max(raw, floor); store that value so raw = log σ² again.
        la.hyper.set(log_variance=la.hyper.log_variance.detach())
    return _finish(la, run.trace, run.objective, run.iterations, run.evaluations, run.converged, run.reason,
                   run.gradient_max, time.perf_counter() - t0, record)


def _finish(la, trace, objective, iterations, evaluations, converged, reason, gmax, seconds, record,
            history=None):
    la.evidence_trace = np.asarray(trace)
    if not converged:
        warnings.warn(f"evidence optimisation stopped ({reason}) after {iterations} iterations "
                      f"and {evaluations} evaluations with gradient max {gmax:.3g} > tolerance; "
                      "pass a larger iterations or check the numerics", EvidenceConvergenceWarning, stacklevel=3)
    log_ev = la.log_evidence()
    record.merge(la.last_numerics)
    la.evidence_result = EvidenceResult(
        trace=np.asarray(trace), log_evidence=log_ev, objective=objective if objective is not None else log_ev,
        iterations=iterations, evaluations=evaluations, converged=converged and record.converged,
        seconds=seconds, hyperparameters=la.hyperparameters, optimiser_converged=converged,
        stop_reason=reason, gradient_max=gmax, numerics=record, history=history or [],
        min_log_variance=la.config.min_log_variance, floored_blocks=la.floored_blocks)
    return la.evidence_result


def _filter_stats(prior, rows: torch.Tensor, gi: int) -> torch.Tensor:
    """``Σ_{s,f} r_{s,f} r_{s,f}ᵀ`` over rows ``(s, P)`` for group ``gi``: ``(k², k²)``."""
    t = prior._split(rows, gi)
    return torch.einsum("sfi,sfj->ij", t, t)


def em_statistics(la, solutions: torch.Tensor):
    """Per-group ``(R_b, G_b)`` from ``[α; v_1..v_S] (S+1, m)`` (see the module docstring)."""
    g = la.jac.vjp(adjoint_rows(la.kernel_op, solutions.to(la.jac.dtype))).to(torch.float64)
    s = solutions.shape[0] - 1
    return [(_filter_stats(la.prior, g[:1], gi), _filter_stats(la.prior, g[1:], gi) / s)
            for gi in range(len(la.groups))]


def _prior_gradient(la) -> torch.Tensor:
    """``∂ Σ log p(φ) / ∂ log ℓ`` of the registered priors (zeros without any).

    The log priors are :meth:`~.laplace.LinearisedLaplace.log_prior`, the prior part of
    the objective L-BFGS maximises.
    """
    raw = la.raw_lengthscale
    if not list(la.mll.named_priors()):
        return torch.zeros_like(raw)
    raw.requires_grad_(True)
    with torch.enable_grad():
        (g_raw,) = torch.autograd.grad(la.log_prior(raw, la.log_variance), raw, allow_unused=True)
        (dl,) = torch.autograd.grad(la.lengthscale_constraint.transform(raw).sum(), raw)
    return torch.zeros_like(raw.detach()) if g_raw is None else g_raw / dl


def _lengthscale_step(la, gi, j, log_ls, log_var, r, g, gamma, max_step):
    """Fisher-scaled ascent step of ``log ℓ`` of group ``gi`` along the sample-based evidence gradient."""
    ls = log_ls.clone().requires_grad_(True)
    with torch.enable_grad():
        cov = la.prior.filter_covariance(gi, ls, log_var)
        val = 0.5 * (cov * (r - g)).sum()
        (grad,) = torch.autograd.grad(val, ls)
        jac_c = torch.autograd.functional.jacobian(
            lambda x: la.prior.filter_covariance(gi, x, log_var), log_ls)[..., j]
    c = la.prior.filter_covariance(gi, log_ls, log_var)
    b = torch.linalg.solve(c, jac_c)
    k2 = c.shape[0]
    # Fisher information of log ℓ (scale profiled out) for γ_b/k² effectively observed filters.
    info = 0.5 * (gamma / k2) * float((b @ b).diagonal().sum() - b.diagonal().sum() ** 2 / k2)
    return float(grad[j]), max(-max_step, min(max_step, float(grad[j]) / max(info, 1e-6)))


def _em(la, iterations, progress) -> EvidenceResult:
    cfg, dev = la.config, la.y.device
    s_count, record, caught = cfg.em_samples, NumericalRecord(), []
    gen = torch.Generator(device=dev).manual_seed(cfg.probe_seed)
    eps = torch.randn(s_count, la.jac.num_params, generator=gen, dtype=torch.float64, device=dev)
    e = torch.randn(s_count, la.m, generator=gen, dtype=torch.float64, device=dev)
    sol, history, calm, reason = None, [], 0, "max_iter"
    t0 = time.perf_counter()
    bar = tqdm(range(iterations), desc="evidence (EM)", disable=not progress, leave=False)
    step = float("nan")
    try:
        for it in bar:
            with torch.no_grad(), recording_warnings(record, reemit=False, collect=caught):
                record.evaluations += 1
                log_ls, log_var = la.log_lengthscale, la.log_variance
                log_nv = la.log_noise_variance
                theta0 = la.prior.apply_sqrt(eps, log_ls, log_var)
                w = forward_rows(la.kernel_op, la.jac.jvp(theta0.to(la.jac.dtype)).to(torch.float64))
                rhs = torch.cat([la.target[None], w + log_nv.mul(0.5).exp() * e])
                sol = la.solve_kyy(rhs, record, x0=sol)    # warm start (used by CG only)
                stats = em_statistics(la, sol)
            prior_grad = _prior_gradient(la)
            new_ls, new_var = log_ls.clone(), log_var.clone()
            gammas = []
            for gi, (r, g) in enumerate(stats):
                cov = la.prior.filter_covariance(gi, log_ls, log_var)
                q, gamma = float((cov * r).sum()), float((cov * g).sum())
                gammas.append(gamma)
                new_var[gi] = log_var[gi] + max(-3.0, min(3.0, math.log(max(q, 1e-300) / max(gamma, 1e-300))))
                if cfg.min_log_variance is not None:
                    new_var[gi] = max(float(new_var[gi]), cfg.min_log_variance)
                if gi in la.prior.matern_groups:
                    j = la.prior.matern_groups.index(gi)
                    grad, d = _lengthscale_step(la, gi, j, log_ls, log_var, r, g, gamma, cfg.em_lengthscale_step)
                    if float(prior_grad[j]) != 0.0:
                        d = max(-cfg.em_lengthscale_step, min(cfg.em_lengthscale_step,
                                                              d + float(prior_grad[j]) / max(gamma, 1.0)))
                    new_ls[j] = log_ls[j] + d
            lo, hi = la.lengthscale_constraint.lower_bound, la.lengthscale_constraint.upper_bound
            new_ls = new_ls.clamp(float(lo) + 1e-3, float(hi) - 1e-3)
            deltas = [float((new_ls - log_ls).abs().max()) if new_ls.numel() else 0.0,
                      float((new_var - log_var).abs().max())]
            new_nv = log_nv
            if not la.fixed_noise:
                ratio = float(sol[0].pow(2).sum() / sol[1:].pow(2).sum(1).mean())
                new_nv = log_nv + max(-3.0, min(3.0, math.log(ratio)))
                deltas.append(abs(float(new_nv - log_nv)))
            la.hyper.set(new_ls, new_var)
            if not la.fixed_noise:
                la.likelihood.noise = new_nv.exp().reshape(1)
            step = max(deltas)
            history.append({"iteration": it, "step": step, "gamma": sum(gammas),
                            "log_lengthscale": new_ls.tolist(), "log_variance": new_var.tolist(),
                            "log_noise_variance": float(new_nv)})
            bar.set_postfix(step=f"{step:.3g}", gamma=f"{sum(gammas):.1f}")
            calm = calm + 1 if step < cfg.em_tolerance else 0
            if calm >= 2:
                reason = "change"
                break
    finally:
        bar.close()
        reemit_summary(caught, "the EM hyperparameter fit")
    _average_tail(la, history)
    return _finish(la, [], None, len(history), len(history), reason == "change", reason, step,
                   time.perf_counter() - t0, record, history)


def _average_tail(la, history, tail: int = 5):
    """Average the last iterates in log space (reduces the Monte-Carlo jitter of the fixed points)."""
    last = history[-min(tail, max(1, len(history) // 2)):]
    ls = torch.tensor([h["log_lengthscale"] for h in last], dtype=torch.float64).mean(0)
    var = torch.tensor([h["log_variance"] for h in last], dtype=torch.float64).mean(0)
    la.hyper.set(ls.to(la.y.device), var.to(la.y.device))
    if not la.fixed_noise:
        nv = sum(h["log_noise_variance"] for h in last) / len(last)
        la.likelihood.noise = torch.tensor([math.exp(nv)], dtype=torch.float64, device=la.y.device)
