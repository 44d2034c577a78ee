"""The subspace path of the linearised DIP against dense references.

Full rank (``r >= N``): it is the exact path (evidence, gradients, posterior) up to
rounding. Truncated rank: it is exactly the linear model with ``J`` replaced by
``Q Qᵀ J`` (checked against dense ``torch.distributions.MultivariateNormal``), and
its missed-variance estimate matches the dense value.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from bayes_recon.inference.linearised.laplace import LaplaceConfig, LinearisedLaplace
from bayes_recon.inference.linearised.resources import choose_path, estimate_paths
from bayes_recon.inference.linearised.subspace import SubspaceTruncationWarning
from bayes_recon.operators import MRI, ParallelBeamCT, radial_mask
from linearised_fits import random_unet_fit


def _pair(op, size, expansion, rank, **kw):
    fit = random_unet_fit(op, size)
    exact = LinearisedLaplace(fit, op, config=LaplaceConfig(path="exact", expansion=expansion), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubspaceTruncationWarning)
        sub = LinearisedLaplace(fit, op, config=LaplaceConfig(path="subspace", expansion=expansion,
                                                              subspace_rank=rank, **kw), progress=False)
    return exact, sub


@pytest.mark.parametrize("expansion", ["fit", "linearised"])
@pytest.mark.parametrize("kind", ["ct", "mri"])
def test_full_rank_subspace_is_the_exact_path(expansion, kind):
    size = 8
    op = ParallelBeamCT(size, 5) if kind == "ct" else MRI(size, radial_mask(size, 3))
    exact, sub = _pair(op, size, expansion, rank=size * size)
    assert sub.path == "subspace" and sub.subspace.rank == size * size
    assert sub.subspace.missed_fraction < 1e-20
    # Complement of A Q: m - N measurements of pure noise enter only through σ².
    assert sub.subspace.outside_count == exact.m - sub.m
    assert sub.log_evidence() == pytest.approx(exact.log_evidence(), rel=1e-9)
    params = [exact.log_lengthscale, exact.log_variance, exact.log_noise_variance]
    grads = []
    for la in (exact, sub):
        p = [t.clone().requires_grad_(True) for t in params]
        la.objective(*p, predcp_scale=5.0).backward()
        grads.append(torch.cat([t.grad.reshape(-1) for t in p]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sub.posterior_mean(), exact.posterior_mean(), rtol=0, atol=1e-8)
    ce = exact.posterior_covariance()
    torch.testing.assert_close(sub.posterior_covariance(), ce, rtol=0, atol=1e-8 * float(ce.abs().max()))


@pytest.mark.parametrize("expansion", ["fit", "linearised"])
def test_truncated_subspace_is_the_linear_model_with_projected_jacobian(expansion):
    size, rank = 8, 12
    op = ParallelBeamCT(size, 5)
    fit = random_unet_fit(op, size)
    exact = LinearisedLaplace(fit, op, config=LaplaceConfig(path="exact", expansion=expansion), progress=False)
    with pytest.warns(SubspaceTruncationWarning, match="config.subspace_rank"):
        sub = LinearisedLaplace(fit, op, config=LaplaceConfig(path="subspace", expansion=expansion,
                                                              subspace_rank=rank), progress=False)
    q = sub.subspace.basis
    assert q.shape == (size * size, rank)
    torch.testing.assert_close(q.T @ q, torch.eye(rank, dtype=torch.float64), rtol=0, atol=1e-10)
    # Dense reference: J_r = Q Qᵀ J, the linear model x = m₀ + J_r θ, θ ~ N(0, Σ), y = A x + e.
    j = exact.jac.matrix.to(torch.float64)
    jr = q @ (q.T @ j)
    ls, var, nv = exact.log_lengthscale, exact.log_variance, float(exact.log_noise_variance.exp())
    k = jr @ exact.prior.apply(jr, ls, var).T
    a = op.to_dense(torch.float64)
    kyy = a @ k @ a.T + nv * torch.eye(a.shape[0], dtype=torch.float64)
    y = exact.y.reshape(-1)
    x_star = exact.x_star
    if expansion == "linearised":
        m0 = x_star - jr @ exact.jac.linear_theta.to(torch.float64)
        ref = torch.distributions.MultivariateNormal(a @ m0, kyy).log_prob(y)
    else:   # MacKay: -½ log|K_yy| - ½ (‖y - A x*‖²/σ² + θ*ᵀΣ⁻¹θ*) - (m/2) log 2π
        m0 = x_star
        resid = y - a @ x_star
        ref = -0.5 * (torch.logdet(kyy) + resid.pow(2).sum() / nv
                      + exact.model.weight_inv_quad().detach() + y.numel() * math.log(2 * math.pi))
    assert sub.log_evidence() == pytest.approx(float(ref), rel=1e-9)
    cov = k - k @ a.T @ torch.linalg.solve(kyy, a @ k)
    ce = sub.posterior_covariance()
    torch.testing.assert_close(ce, 0.5 * (cov + cov.T), rtol=0, atol=1e-8 * float(cov.abs().max()))
    mean = m0 + k @ a.T @ torch.linalg.solve(kyy, y - a @ m0) if expansion == "linearised" else x_star
    torch.testing.assert_close(sub.posterior_mean(), mean, rtol=0, atol=1e-8)
    # Missed prior variance at the sketch's prior, dense: tr((I - QQᵀ) J Σ₀ Jᵀ) / tr(J Σ₀ Jᵀ).
    ls0, var0 = sub._initial_hyperparameters()
    k0 = j @ exact.prior.apply(j, ls0, var0.log()).T
    true_missed = float(torch.trace(k0 - q @ (q.T @ k0)) / torch.trace(k0))
    # 16 fresh draws: a ratio of chi-square-like sums; within a factor of 2 (seed 0).
    assert 0.5 * true_missed < sub.subspace.missed_fraction < 2.0 * true_missed
    assert sub.posterior_covariance().shape == (size * size, size * size)


def test_subspace_samples_follow_the_subspace_posterior():
    size = 8
    op = ParallelBeamCT(size, 5)
    exact, sub = _pair(op, size, "fit", rank=size * size)
    post = sub.sample(4000, seed=1)
    assert post.extras["subspace"] == {"rank": 64, "missed_fraction": sub.subspace.missed_fraction}
    flat = post.samples.reshape(4000, -1).double()
    cov = exact.posterior_covariance()
    # Whitened draws: mean 0, covariance I, each entry within 5/sqrt(S) (fixed seed).
    chol = torch.linalg.cholesky(cov + 1e-12 * cov.diagonal().mean() * torch.eye(64, dtype=torch.float64))
    w = torch.linalg.solve_triangular(chol, (flat - exact.x_star).T, upper=False).T
    assert float(w.mean(0).abs().max()) < 5 / math.sqrt(4000)
    assert float((w.T @ w / 4000 - torch.eye(64, dtype=torch.float64)).abs().max()) < 5 / math.sqrt(4000) * 1.5


def test_auto_chooses_subspace_when_exact_does_not_fit():
    # A 64²-like problem: N = 4096, P = 76k, m = 5460, six distance classes per group.
    groups = [(18_000, 6)] * 4 + [(288, 6)]
    est = estimate_paths(4096, 72_288, 5_460, groups, 7e6, 0.01, 4, LaplaceConfig())
    assert set(est) == {"exact", "subspace", "scalable"}
    assert est["subspace"].bytes < est["exact"].bytes
    assert est["subspace"].seconds < min(est["exact"].seconds, est["scalable"].seconds)
    assert choose_path("auto", est, 0.5 * (est["subspace"].bytes + est["exact"].bytes)) == "subspace"
    # The estimates grow with the rank.
    small = estimate_paths(4096, 72_288, 5_460, groups, 7e6, 0.01, 4, LaplaceConfig(subspace_rank=256))
    assert small["subspace"].seconds < est["subspace"].seconds
    assert small["subspace"].bytes < est["subspace"].bytes
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op, 8)
    with pytest.raises(ValueError, match="config.memory_budget"):
        LinearisedLaplace(fit, op, config=LaplaceConfig(path="subspace", memory_budget=1e3), progress=False)


@pytest.mark.parametrize("name,value,error", [("subspace_rank", 0, ValueError),
                                              ("subspace_rank", 2.5, TypeError),
                                              ("subspace_test_probes", -1, ValueError),
                                              ("subspace_tolerance", 0.0, ValueError)])
def test_bad_subspace_settings_name_the_setting(name, value, error):
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op, 8)
    with pytest.raises(error, match=f"config.{name}"):
        LinearisedLaplace(fit, op, config=LaplaceConfig(path="subspace", **{name: value}), progress=False)


def test_projected_jacobian_has_no_network():
    op = ParallelBeamCT(8, 5)
    fit = random_unet_fit(op, 8)
    la = LinearisedLaplace(fit, op, config=LaplaceConfig(path="subspace", subspace_rank=64), progress=False)
    with pytest.raises(TypeError, match="no network"):
        la.jac(la.jac.theta)
