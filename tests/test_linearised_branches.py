"""Linearised DIP: numerical-trouble reporting, the optimiser's verdict, the lengthscale bound,
and branches checked against independent dense computations (scalable evidence gradient,
matrix-free TV-PredCP, the Nyström preconditioner, a complex MRI operator).

All float64 unless stated, fixed seeds; each tolerance is stated with its reason.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from linear_operator.utils.warnings import NumericalWarning
from torch import nn

from bayes_recon.inference.dip import DIPFit
from bayes_recon.inference.linearised.config import LOG_LENGTHSCALE_BOUNDS
from bayes_recon.inference.linearised.evidence import NystromPreconditioner
from bayes_recon.inference.linearised.jacobian import NetworkJacobian, linearised_groups
from bayes_recon.inference.linearised.laplace import (EvidenceConvergenceWarning, LaplaceConfig,
                                                      LinearisedLaplace)
from bayes_recon.inference.linearised.linalg import CholeskyJitterWarning
from bayes_recon.inference.linearised.optimise import lbfgs_maximise
from bayes_recon.inference.linearised.predcp import TVPredCP
from bayes_recon.inference.linearised.weight_prior import MaternFilterPrior
from bayes_recon.operators import MRI, MatrixOperator, ParallelBeamCT, radial_mask
from linearised_fits import random_unet_fit, small_conv_fit


def _matern(ls, k=3):
    coords = list(itertools.product(range(k), range(k)))
    return torch.tensor([[math.exp(-math.dist(a, b) / ls) for b in coords] for a in coords],
                        dtype=torch.float64)


def _dense_weight_covariance(groups, lengthscales, variances):
    """``Σ_θ`` block-diagonal over filters, built from the prior's definition (float64)."""
    blocks = []
    for g, ls, var in zip(groups, lengthscales, variances):
        blocks += [var * _matern(ls, g.kernel_size)] * g.num_filters
    return torch.block_diag(*blocks)


def _dense_jacobian(fit, groups):
    """``∂f/∂θ (N, P)`` by reverse-mode autograd over the named conv weights."""
    params = dict(fit.network.named_parameters())
    names = [n for g in groups for n in g.param_names]
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])

    def f(flat):
        out, start = {}, 0
        for n in names:
            k = params[n].numel()
            out[n] = flat[start:start + k].reshape(params[n].shape)
            start += k
        full = {**{k: v.detach() for k, v in params.items()}, **out}
        return torch.func.functional_call(fit.network, full, (fit.input,)).reshape(-1)

    return torch.autograd.functional.jacobian(f, theta), theta


# ------------------------------------------------- numerical trouble is reported
def test_scalable_evidence_cg_short_of_tolerance_warns_and_is_recorded():
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op)
    # Two CG iterations against a rank-2 preconditioner cannot reach 1e-4 on m = 60.
    cfg = LaplaceConfig(path="scalable", max_cg_iterations=2, lanczos_iterations=2, preconditioner_rank=2,
                        num_probes=4)
    la = LinearisedLaplace(fit, op, config=cfg, progress=False)
    with pytest.warns(NumericalWarning, match="CG terminated"):
        value = la.log_evidence()
    assert np.isfinite(value)
    rec = la.last_numerics
    assert not rec.converged and rec.cg_failures >= 1 and rec.cg_iterations == 2
    assert rec.cg_residual > 1e-4 and rec.warning_count >= 1 and "CG terminated" in rec.warnings[0]
    with pytest.warns(EvidenceConvergenceWarning, match="max_iter"), \
            pytest.warns(NumericalWarning, match="CG terminated"):
        res = la.optimise_evidence(iterations=2, progress=False)
    assert res.converged is False and res.numerics.converged is False
    assert res.numerics.evaluations >= res.evaluations and res.numerics.cg_failures >= res.evaluations
    assert res.numerics.to_dict()["converged"] is False


def test_cholesky_jitter_in_the_exact_evidence_is_warned_and_recorded():
    gen = torch.Generator().manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False).double().requires_grad_(False)
    z = torch.randn(1, 1, 5, 5, generator=gen, dtype=torch.float64)
    op = MatrixOperator(torch.randn(20, 25, generator=gen, dtype=torch.float64), (1, 5, 5))
    y = op(torch.randn(1, 1, 5, 5, generator=gen, dtype=torch.float64))
    fit = DIPFit(net, z, net(z), np.zeros(1), y, 1.0, 0, 0.0)
    # A K Aᵀ has rank <= P = 9 < m = 20 and σ² = 1e-24: K_yy is singular in float64.
    la = LinearisedLaplace(fit, op, noise_std=1e-12, progress=False)
    with pytest.warns(CholeskyJitterWarning, match="jitter"):
        la.log_evidence()
    assert la.last_numerics.max_jitter > 0


# ------------------------------------------------------ the optimiser's verdict
def test_lbfgs_quadratic_converges_by_gradient():
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    res = lbfgs_maximise(lambda v: -(0.5 * v @ a @ v - b @ v), [x], 100, progress=False)
    assert res.converged and res.reason == "gradient" and res.gradient_max <= 1e-6
    # Closed form a⁻¹ b; L-BFGS on a 2-D quadratic is exact to rounding.
    assert torch.allclose(x.detach(), torch.linalg.solve(a, b), atol=1e-10)
    assert res.evaluations == len(res.trace)


def _kink(v):
    return -(v - 0.3).abs().sum()       # no point has a zero gradient: tolerance_grad is unreachable


def test_lbfgs_budget_stop_is_not_convergence():
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    # The line searches on |x| use > 1.5 evaluations per iteration: max_eval = 1.5·20 + 5 = 35
    # runs out long before max_iter = 20 (torch's LBFGS stops there and the old code said converged).
    res = lbfgs_maximise(_kink, [x], 20, progress=False)
    assert res.reason == "max_eval" and not res.converged
    assert res.evaluations <= 35 and res.iterations < 20


def test_lbfgs_stalled_line_search_is_not_convergence():
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    res = lbfgs_maximise(_kink, [x], 100, max_eval=1000, progress=False)
    assert res.reason == "line search stalled" and not res.converged and res.gradient_max == 1.0


def test_optimise_evidence_budget_stop_warns_and_is_not_converged():
    op = ParallelBeamCT(8, 5)
    la = LinearisedLaplace(random_unet_fit(op), op, progress=False)
    with pytest.warns(EvidenceConvergenceWarning, match="max_iter"):
        res = la.optimise_evidence(iterations=1, progress=False)
    assert not res.converged and not res.optimiser_converged and res.stop_reason == "max_iter"
    assert res.numerics.converged and res.iterations == 1


# ------------------------------------------------------- lengthscale bound
def test_lengthscale_outside_bounds_raises_naming_it():
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op)
    with pytest.raises(ValueError, match="config.init_lengthscale"):
        LinearisedLaplace(fit, op, config=LaplaceConfig(init_lengthscale=100.0), progress=False)
    la = LinearisedLaplace(fit, op, progress=False)
    with pytest.raises(ValueError, match=r"lengthscale\['inc'\]"):
        la.set_hyperparameters(lengthscale={"inc": 1e-3})
    with pytest.raises(ValueError, match=r"lengthscale\['inc'\]"):
        la.set_hyperparameters(lengthscale={"inc": math.exp(LOG_LENGTHSCALE_BOUNDS[1])})


def test_bounded_lengthscale_gradient_near_the_bounds_matches_finite_differences():
    op = ParallelBeamCT(8, 5)
    la = LinearisedLaplace(random_unet_fit(op), op, progress=False)
    lo, hi = LOG_LENGTHSCALE_BOUNDS
    names = [la.groups[gi].name for gi in la.prior.matern_groups]
    # Alternate 0.1 inside the lower and the upper bound (the old clamp had zero gradient beyond).
    la.set_hyperparameters(lengthscale={n: math.exp(hi - 0.1 if i % 2 else lo + 0.1)
                                        for i, n in enumerate(names)})
    raw = la.raw_lengthscale.clone().requires_grad_(True)
    var, nv = la.log_variance, la.log_noise_variance
    la.optimisation_objective(raw, var, nv).backward()
    h = 1e-4
    for i in range(raw.numel()):
        e = torch.zeros_like(raw)
        e[i] = h
        with torch.no_grad():
            fd = float(la.optimisation_objective(raw + e, var, nv) - la.optimisation_objective(raw - e, var, nv))
        fd /= 2 * h
        g = float(raw.grad[i])
        # Central differences of a smooth float64 function: O(h²) ~ 1e-8 relative truncation.
        assert g == pytest.approx(fd, rel=1e-5, abs=1e-9)
        if i % 2:
            # Near the upper bound the model still depends on ℓ (δ/ℓ ~ 0.05): clearly non-zero.
            # (Near the lower one exp(-1/ℓ) ~ e⁻⁵⁰: the evidence itself is flat there.)
            assert abs(g) > 1e-6, (names[i], g)
    # After optimisation the lengthscales stay strictly inside the bounds.
    with pytest.warns(EvidenceConvergenceWarning):
        la.optimise_evidence(iterations=3, progress=False)
    assert bool(((la.log_lengthscale > lo) & (la.log_lengthscale < hi)).all())


# ----------------------------------------- scalable evidence gradient vs FD

def test_scalable_evidence_gradient_matches_finite_differences():
    op = ParallelBeamCT(8, 3)
    fit = small_conv_fit(op)
    probes = 128
    # Nyström rank 64 >= m makes the preconditioner exact: the forward value (log|P| plus SLQ
    # of P⁻¹K_yy = I, whatever the probes) is then exact, so its finite differences are the
    # exact gradient. The backward pass is linear_operator's Hutchinson estimate of
    # tr(K_yy⁻¹ ∂K_yy) with the fixed probes; few Lanczos steps suffice for the identity.
    common = dict(path="scalable", preconditioner_rank=64, cg_tolerance=1e-10, lanczos_iterations=5)
    la = LinearisedLaplace(fit, op, config=LaplaceConfig(num_probes=probes, **common), progress=False)
    la_fd = LinearisedLaplace(fit, op, config=LaplaceConfig(num_probes=1, **common), progress=False)
    exact = LinearisedLaplace(fit, op, progress=False)
    noise_std = 0.5 * la.hyperparameters["noise_std"]    # away from the evidence's stationary point
    for model in (la, la_fd, exact):
        model.set_hyperparameters(noise_std=noise_std)
    assert la.m <= 64
    params = [la.log_lengthscale.clone().requires_grad_(True), la.log_variance.clone().requires_grad_(True),
              la.log_noise_variance.clone().requires_grad_(True)]
    la.objective(*params).backward()
    base = [p.detach().clone() for p in params]
    eye = torch.eye(la.m, dtype=torch.float64)

    def dense_kyy(q):
        return exact.kernel.data_kernel(q[0], q[1]) + q[2].exp() * eye

    kinv = torch.linalg.inv(dense_kyy(base))
    h = 1e-5
    assert len(la.groups) == 2
    for k, i in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]:
        def shifted(delta):
            q = [t.clone() for t in base]
            q[k].reshape(-1)[i] += delta
            return q

        with torch.no_grad():
            fd = float(la_fd.objective(*shifted(h)) - la_fd.objective(*shifted(-h))) / (2 * h)
            dk = (dense_kyy(shifted(h)) - dense_kyy(shifted(-h))) / (2 * h)
        b = kinv @ dk
        # Hutchinson with z ~ N(0, K_yy): variance per probe 2 tr((K⁻¹∂K)²); the evidence has -½ of it.
        se = 0.5 * math.sqrt(2 * float((b @ b).diagonal().sum()) / probes)
        g = float(params[k].grad.reshape(-1)[i])
        # 5 standard errors of the stochastic trace, plus FD truncation (~1e-8 relative); the
        # gradient itself is many standard errors large, so a wrong sign or factor fails.
        assert abs(g - fd) <= 5 * se + 1e-6 * max(1.0, abs(fd)), (k, i, g, fd, se)
        assert abs(fd) > 10 * se, (k, i, fd, se)
    # Deterministic (fixed probes), and exact with the exact preconditioner (rounding only).
    assert la.log_evidence() == la.log_evidence()
    assert la.log_evidence() == pytest.approx(exact.log_evidence(), rel=1e-8)


# --------------------------------------------------- matrix-free TV-PredCP
def _anisotropic_tv(x):
    """``sum |x[i+1, j] - x[i, j]| + |x[i, j+1] - x[i, j]|`` per image (the DIP-CT papers' TV)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return dy + dx


def test_matrix_free_tv_predcp_equals_dense_and_a_direct_computation():
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op)
    groups = linearised_groups(fit.network)
    prior = MaternFilterPrior(groups)
    dense = NetworkJacobian(fit.network, fit.input, groups, dense=True)
    free = NetworkJacobian(fit.network, fit.input, groups, dense=False, chunk_size=16)
    s, seed = 4, 3
    pd = TVPredCP(dense, prior, (1, 8, 8), s, seed)
    pf = TVPredCP(free, prior, (1, 8, 8), s, seed)
    gen = torch.Generator().manual_seed(1)
    ls = (0.5 * torch.randn(len(prior.matern_groups), generator=gen, dtype=torch.float64)).requires_grad_(True)
    var = (torch.randn(len(groups), generator=gen, dtype=torch.float64) - 2).requires_grad_(True)
    vd = pd.log_prob(ls, var, 0.3)
    gd = torch.autograd.grad(vd, (ls, var))
    vf = pf.log_prob(ls, var, 0.3)
    gf = torch.autograd.grad(vf, (ls, var))
    vd, vf = vd.detach(), vf.detach()
    # Same float64 products summed in another order: 1e-10 relative.
    assert float(vf) == pytest.approx(float(vd), rel=1e-10)
    for a, b in zip(gf, gd):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10 * float(b.abs().max()))
    # Direct: E_b = mean_s TV(J_b θ_s), θ_f = σ_b L(ℓ_b) ε_f with the same documented probes
    # (torch.randn(S, F, k²) per Matérn group in order from Generator().manual_seed(seed)),
    # J_b θ by torch.func.jvp of the network, L(ℓ) the Cholesky factor of the Matérn matrix.
    j, theta = _dense_jacobian(fit, groups)
    gen = torch.Generator().manual_seed(seed)
    for jdx, gi in enumerate(prior.matern_groups):
        g = groups[gi]
        eps = torch.randn(s, g.num_filters, 9, generator=gen, dtype=torch.float64)
        ell, v = float(ls[jdx].detach().exp()), float(var[gi].detach().exp())
        chol = torch.linalg.cholesky(_matern(ell))
        tang = torch.zeros(s, theta.numel(), dtype=torch.float64)
        tang[:, g.slice] = (math.sqrt(v) * eps @ chol.T).reshape(s, -1)
        x = tang @ j.T
        direct = float(_anisotropic_tv(x.reshape(s, 1, 8, 8)).mean())
        got = float(pf.expected_tv(gi, ls[jdx].exp().detach(), var[gi].exp().detach()))
        assert got == pytest.approx(direct, rel=1e-10)


# ------------------------------------------------------ Nyström preconditioner
def test_nystrom_preconditioner_exact_at_full_rank_and_improves_conditioning():
    gen = torch.Generator().manual_seed(0)
    m, noise = 30, 1e-2
    q, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    lam = 10.0 ** (-0.25 * torch.arange(m, dtype=torch.float64))          # decaying spectrum
    lam[12:] = 0.0                                                         # rank 12
    k = (q * lam) @ q.T
    kyy = k + noise * torch.eye(m, dtype=torch.float64)
    v = torch.randn(m, 3, generator=gen, dtype=torch.float64)
    ref = torch.linalg.solve(kyy, v)
    for rank in (m, 12):                     # rank >= size, and rank >= rank(K): both exact
        pre = NystromPreconditioner(lambda w: k @ w, m, rank, noise, seed=1)
        # 1e-12 relative sketch shift, amplified by cond(K_yy) ~ 1e2: 1e-8 relative.
        assert torch.allclose(pre.solve(v), ref, rtol=0, atol=1e-8 * float(ref.abs().max()))
        assert torch.allclose(pre.solve(v[:, 0]), ref[:, 0], rtol=0, atol=1e-8 * float(ref.abs().max()))
        assert float(pre.logdet) == pytest.approx(float(torch.logdet(kyy)), rel=1e-9)
        assert torch.allclose(pre.operator().to_dense(), kyy, atol=1e-10)
    pre = NystromPreconditioner(lambda w: k @ w, m, 6, noise, seed=1)
    # Rank 6 < rank(K): P ≼ K_yy (Nyström underestimates K), so eig(P⁻¹ K_yy) >= 1, and the
    # condition number drops from 1/noise-scale to about λ₇/σ² + 1.
    pk = pre.solve(kyy)
    ev = torch.linalg.eigvals(pk).real
    assert float(ev.min()) >= 1 - 1e-8
    cond_before = float(torch.linalg.cond(kyy))
    cond_after = float(ev.max() / ev.min())
    assert cond_after < 0.2 * cond_before, (cond_before, cond_after)


# ------------------------------------------------------- complex MRI operator
@pytest.mark.parametrize("path", ["exact", "scalable"])
def test_mri_evidence_and_kernel_equal_dense_computation(path):
    size = 8
    op = MRI(size, radial_mask(size, 3))
    fit = random_unet_fit(op, size=size)
    assert fit.y.is_complex()
    cfg = LaplaceConfig(path=path, preconditioner_rank=256, num_probes=4, cg_tolerance=1e-10)
    la = LinearisedLaplace(fit, op, noise_std=0.05, config=cfg, progress=False)
    names = [la.groups[gi].name for gi in la.prior.matern_groups]
    la.set_hyperparameters(lengthscale={n: 0.5 + 0.3 * i for i, n in enumerate(names)},
                           variance={g.name: 0.1 * (i + 1) for i, g in enumerate(la.groups)})
    # Dense reference: A from the operator applied to the pixel basis, stacked [Re; Im].
    n = size * size
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, size, size)
    a_c = op(basis).reshape(n, -1).T                                       # (m_c, N) complex
    a = torch.cat([a_c.real, a_c.imag], 0)                                 # (2 m_c, N)
    groups = la.groups
    j, theta = _dense_jacobian(fit, groups)
    hp = la.hyperparameters
    sigma = _dense_weight_covariance(groups, [hp[f"lengthscale/{g.name}"] for g in groups],
                                     [hp[f"variance/{g.name}"] for g in groups])
    k = j @ sigma @ j.T
    m = a.shape[0]
    kyy = a @ k @ a.T + 0.05**2 * torch.eye(m, dtype=torch.float64)
    y = torch.cat([fit.y.reshape(-1).real, fit.y.reshape(-1).imag])
    r = y - a @ fit.x.reshape(-1)
    ev = -0.5 * (torch.logdet(kyy) + r @ r / 0.05**2 + theta @ torch.linalg.solve(sigma, theta)
                 + m * math.log(2 * math.pi))
    # Exact: float64 identities, 1e-9 relative; scalable: exact Nyström (rank >= m), CG 1e-10.
    assert la.log_evidence() == pytest.approx(float(ev), rel=1e-8)
    if path == "exact":
        ls_t, var_t = la.log_lengthscale, la.log_variance
        kd = la.kernel.data_kernel(ls_t, var_t)
        assert (kd - a @ k @ a.T).abs().max() <= 1e-10 * kd.abs().max()
        assert (la.kernel.image_kernel(ls_t, var_t) - k).abs().max() <= 1e-10 * k.abs().max()
