"""Issue 21: the linearised DIP's model options (per-pixel TV-PredCP, log-variance floor, EM recipe).

References: an explicit Monte-Carlo TV of dense prior draws (the PredCP's expectation),
the closed-form relation between the summed and the per-pixel expected TV, an evidence
evaluated by a model without the floor at the same hyperparameters, and, for the size
invariance, the same digit at two resolutions with data of equal information per unit
area. Tolerances are stated with their reason.
"""

from __future__ import annotations

import math

import pytest
import torch

from bayes_recon.data import digits, simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised.laplace import LaplaceConfig, LinearisedLaplace, _check_config
from bayes_recon.inference.linearised.predcp import TVPredCP
from bayes_recon.models.unet import UNetConfig
from bayes_recon.operators import ParallelBeamCT, total_variation

TINY = UNetConfig(channels=4, skip_channels=(0, 4, 4))


def _digit_fit(size=28, angles=20, iterations=300, seed=0):
    x = digits("train", 28)[:1]
    if size != 28:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    op = ParallelBeamCT(size, angles)
    meas = simulate(op, x, 0.05, seed=seed)
    fit = fit_dip(meas.y, op, 3 * meas.noise_std, iterations, seed=seed, network_config=TINY, progress=False)
    return fit, op, meas.noise_std


@pytest.fixture(scope="module")
def digit28():
    return _digit_fit()


def _mean_prior_std(la) -> float:
    """Mean over pixels of ``sqrt(diag(J Σ_θ Jᵀ))`` from the dense Jacobian blocks (exact path)."""
    ls, lv = la.log_lengthscale, la.log_variance
    diag = 0.0
    for gi, g in enumerate(la.groups):
        jb = la.jac.block(g, torch.float64)                                  # (N, F, k²)
        diag = diag + torch.einsum("nfi,ij,nfj->n", jb, la.prior.filter_covariance(gi, ls, lv), jb)
    return float(diag.sqrt().mean())


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field,value,exc", [("predcp_normalisation", "median", ValueError),
                                             ("min_log_variance", float("nan"), ValueError),
                                             ("min_log_variance", float("-inf"), ValueError),
                                             ("min_log_variance", "low", TypeError)])
def test_bad_options_are_refused_naming_the_field(field, value, exc):
    with pytest.raises(exc, match=f"config.{field}"):
        _check_config(LaplaceConfig(**{field: value}))


# ------------------------------------------------------------------ TV-PredCP
def test_predcp_mean_is_sum_over_pixels_value_gradient_and_log_prob(digit28):
    fit, op, sigma = digit28
    la = LinearisedLaplace(fit, op, noise_std=sigma, config=LaplaceConfig(path="exact"), progress=False)
    shape, n = tuple(fit.x.shape[1:]), fit.x[0].numel()
    pc_sum = TVPredCP(la.jac, la.prior, shape, 16, seed=3)
    pc_mean = TVPredCP(la.jac, la.prior, shape, 16, seed=3, normalisation="mean")
    gi = la.prior.matern_groups[1]
    ell = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    var = torch.tensor(2e-3, dtype=torch.float64, requires_grad=True)
    e_sum = pc_sum.expected_tv(gi, ell, var)
    e_mean = pc_mean.expected_tv(gi, ell, var)
    g_sum = torch.autograd.grad(e_sum, (ell, var))
    g_mean = torch.autograd.grad(e_mean, (ell, var))
    # Reference for the summed expectation: explicit dense prior draws of block gi with the
    # same probes (seeded generator in the same order), TV by the library's one TV.
    gen = torch.Generator().manual_seed(3)
    eps = None
    for gj in la.prior.matern_groups:
        g = la.prior.groups[gj]
        e = torch.randn(16, g.num_filters, g.kernel_size**2, generator=gen, dtype=torch.float64)
        if gj == gi:
            eps = e
    g = la.prior.groups[gi]
    dist, masks = la.prior.classes[gi]
    corr = torch.einsum("d,dij->ij", torch.exp(-dist / 0.8), masks)
    theta = (eps @ torch.linalg.cholesky(corr).T) * math.sqrt(2e-3)         # (S, F, k²)
    draws = torch.einsum("nfi,sfi->sn", la.jac.block(g, torch.float64), theta)
    ref = total_variation(draws.reshape(16, *shape), isotropic=False).mean()
    assert float(e_sum.detach()) == pytest.approx(float(ref), rel=1e-10)     # float64 identities
    assert float(e_mean.detach()) == pytest.approx(float(e_sum.detach()) / n, rel=1e-12)
    for a, b in zip(g_mean, g_sum):
        assert float(a) == pytest.approx(float(b) / n, rel=1e-10)
    # log p(ℓ) = log κ - κ E + log|∂E/∂ℓ| is the same prior with κ_mean = N κ_sum (the
    # log N of log κ cancels the -log N of the derivative), so values and gradients agree.
    log_ls = la.log_lengthscale.requires_grad_(True)
    log_var = la.log_variance.requires_grad_(True)
    lp_sum = pc_sum.log_prob(log_ls, log_var, 20.0)
    gs = torch.autograd.grad(lp_sum, (log_ls, log_var))
    lp_mean = pc_mean.log_prob(log_ls, log_var, 20.0 * n)
    gm = torch.autograd.grad(lp_mean, (log_ls, log_var))
    assert float(lp_mean) == pytest.approx(float(lp_sum), rel=1e-9)
    for a, b in zip(gm, gs):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    # Through the model: the default κ = 20 at 28² is κ = 20·784 with "mean".
    la_mean = LinearisedLaplace(fit, op, noise_std=sigma, progress=False,
                                config=LaplaceConfig(path="exact", predcp_normalisation="mean"))
    assert la_mean.predcp().normalisation == "mean"
    assert float(la_mean.predcp().log_prob(la.log_lengthscale, la.log_variance, 20.0 * 784)) == pytest.approx(
        float(la.predcp().log_prob(la.log_lengthscale, la.log_variance, 20.0)), rel=1e-9)


# ------------------------------------------------------------------ size invariance
def _two_sizes(small, angles_small, iterations):
    """The same training digit at ``small²`` and ``(2 small)²``; CT angles scaled with the side.

    Noise: ``ParallelBeamCT`` integrates in pixel lengths, so doubling the side doubles
    every line integral and (2x angles, 2x detectors) quadruples the number of
    measurements: ``‖A x‖²`` grows ~16x for the upsampled image. The finer problem's
    ``σ`` is the coarse one times ``‖A₂ x₂‖ / ‖A₁ x₁‖`` (≈ 4), so ``‖A δ‖² / σ²`` — what the
    data say about any change ``δ`` smooth on the coarse grid — is the same at both
    sizes: equal noise per coarse pixel (per unit area). ``simulate`` draws the noise,
    with the relative level that gives this ``σ``.
    """
    x28 = digits("train", 28)[:1]
    xs = torch.nn.functional.interpolate(x28, size=small, mode="bilinear", align_corners=False).clamp(0, 1)
    xl = torch.nn.functional.interpolate(x28, size=2 * small, mode="bilinear", align_corners=False).clamp(0, 1)
    ops = ParallelBeamCT(small, angles_small), ParallelBeamCT(2 * small, 2 * angles_small)
    ms = simulate(ops[0], xs, 0.05, seed=0)
    ratio = float(ops[1](xl).norm() / ops[0](xs).norm())
    sigma_l = ms.noise_std * ratio
    ml = simulate(ops[1], xl, sigma_l / float(ops[1](xl).abs().mean()), seed=0)
    assert ml.noise_std == pytest.approx(sigma_l, rel=1e-6)
    out = {}
    for key, op, meas in (("small", ops[0], ms), ("large", ops[1], ml)):
        fit = fit_dip(meas.y, op, 3 * meas.noise_std, iterations, seed=0, network_config=TINY, progress=False)
        n = fit.x[0].numel()
        for norm, kappa in (("sum", 20.0), ("mean", 20.0 * 784)):
            la = LinearisedLaplace(fit, op, noise_std=meas.noise_std, progress=False,
                                   config=LaplaceConfig(path="exact", predcp_normalisation=norm))
            la.optimise_evidence(predcp_scale=kappa, progress=False)
            out[key, norm] = _mean_prior_std(la)
    return out, n


def _assert_size_invariance(std, tol_mean, gap_sum):
    mean_ratio = std["large", "mean"] / std["small", "mean"]
    sum_ratio = std["large", "sum"] / std["small", "sum"]
    assert abs(math.log(mean_ratio)) < math.log(1 + tol_mean), std
    assert abs(math.log(sum_ratio)) > math.log(1 + gap_sum), std


def test_mean_predcp_prior_std_16_to_32():
    # 16² and 32², 6 and 12 angles: here the fitted prior std with "mean" agrees within 20 %
    # and with "sum" does not: measured on an Intel Xeon "mean" 0.0734 → 0.0680 (−7 %), "sum"
    # 0.1061 → 0.0623; on an AMD EPYC (other BLAS rounding; the evidence's line search stalls
    # near the optimum, so the fitted values move with it) "mean" 0.0774 → 0.0670 (−13 %),
    # "sum" 0.1117 → 0.0614. This is NOT a general size
    # invariance: at 28² → 56² (10 and 20 angles, same construction, 150 DIP steps) the
    # measurement went the other way — "mean" 0.0625 → 0.0907 (+45 %), "sum" 0.0625 → 0.0576
    # (−8 %) — because the fitted variances also follow the evidence of the refitted DIP
    # (docs/scaling.md). The size-invariance test is still open.
    std, _ = _two_sizes(16, 6, 150)
    _assert_size_invariance(std, 0.20, 0.30)


# ------------------------------------------------------------------ the floor
def test_floor_holds_with_lbfgs_where_the_fit_falls_below(digit28):
    fit, op, sigma = digit28
    free = LinearisedLaplace(fit, op, noise_std=sigma, config=LaplaceConfig(path="exact"), progress=False)
    res_free = free.optimise_evidence(predcp_scale=20.0, progress=False)
    lv = free.log_variance
    floor = float(lv.min() + lv.max()) / 2                        # some blocks fall below it
    assert bool((lv < floor).any()) and res_free.floored_blocks == []
    la = LinearisedLaplace(fit, op, noise_std=sigma, progress=False,
                           config=LaplaceConfig(path="exact", min_log_variance=floor))
    res = la.optimise_evidence(predcp_scale=20.0, progress=False)
    got = la.log_variance
    assert bool((got >= floor - 1e-12).all()), got
    on_floor = [g.name for g, v in zip(la.groups, got.tolist()) if v <= floor + 1e-12]
    assert on_floor and res.floored_blocks == on_floor == la.hyperparameters["floored_blocks"]
    assert res.min_log_variance == floor == la.hyperparameters["min_log_variance"]
    # The floored values are the ones the evidence uses: a model without the floor set to
    # them gives the same evidence (float64, exact path: 1e-10 relative).
    ref = LinearisedLaplace(fit, op, noise_std=sigma, config=LaplaceConfig(path="exact"), progress=False)
    ref.hyper.set(la.log_lengthscale, got)
    assert ref.log_evidence() == pytest.approx(la.log_evidence(), rel=1e-10)


def test_floor_holds_with_em_on_the_exact_path(digit28):
    # The ICLR 2023 recipe on the exact path at 28²: linearised expansion, g-prior, EM.
    fit, op, sigma = digit28
    cfg = dict(path="exact", expansion="linearised", g_prior=True, hyperparameter_method="em")
    free = LinearisedLaplace(fit, op, noise_std=sigma, config=LaplaceConfig(**cfg), progress=False)
    res_free = free.optimise_evidence(predcp_scale=0.0, progress=False)
    assert res_free.history and free.path == "exact"
    lv = free.log_variance
    floor = float(lv.min() + lv.max()) / 2
    assert bool((lv < floor).any())
    la = LinearisedLaplace(fit, op, noise_std=sigma, config=LaplaceConfig(**cfg, min_log_variance=floor),
                           progress=False)
    res = la.optimise_evidence(predcp_scale=0.0, progress=False)
    assert bool((la.log_variance >= floor - 1e-12).all()), la.log_variance
    assert all(min(h["log_variance"]) >= floor - 1e-12 for h in res.history)
    assert res.floored_blocks and res.floored_blocks == la.hyperparameters["floored_blocks"]
    post = la.sample(50, seed=0)
    assert bool(torch.isfinite(post.samples).all()) and post.extras["expansion"] == "linearised"
