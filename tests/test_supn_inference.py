"""Inference on the SUPN program: collapsed likelihood, exact x | z, y, MAP, NUTS/Laplace, SBC."""

from __future__ import annotations

import logging
import math

import numpy as np
import pyro
import pytest
import scipy.stats
import torch

from bayes_recon import operators as ops
from bayes_recon.data import digits, simulate
from bayes_recon.models.marginal import (
    SLQConfig,
    collapsed_log_likelihood,
    collapsed_log_posterior,
    decode64,
)
from bayes_recon.models.exact_conditional import GaussianImagePosterior, XSolverConfig
from bayes_recon.inference.latent_map import collapsed_map
from bayes_recon.inference.map import MAP_METHODS, MAPConfig, joint_objective, map_estimate
from bayes_recon.inference.sampling import SamplingConfig, latent_hessian, sample_posterior
from bayes_recon.metrics import psnr
from bayes_recon.models.pretrained import available_priors, load_pretrained
from bayes_recon.models.program import reconstruction_model
from bayes_recon.models.supn_vae import SUPNVAE
from bayes_recon.operators import CGConvergenceWarning

logging.getLogger("pyro").setLevel(logging.ERROR)
F64 = torch.float64


def tiny_prior(size=6, latent_dim=2, radius=1, mean_scale=1.0, seed=0, covariance="structured"):
    """An untrained float64 SUPN-VAE with a genuinely non-diagonal precision."""
    torch.manual_seed(seed)
    vae = SUPNVAE(image_size=size, latent_dim=latent_dim, widths=(4,), radius=radius,
                  covariance=covariance).double()
    with torch.no_grad():
        vae.mean_head.weight.mul_(mean_scale)
        if hasattr(vae, "off_diag_head"):
            vae.off_diag_head.bias.normal_(0.0, 0.3)
            vae.off_diag_head.weight.normal_(0.0, 0.05)
    return vae.eval()


def small_ops(size=6):
    gen = torch.Generator().manual_seed(3)
    return {
        "blur": ops.Blur(size, ops.gaussian_kernel(1.0, 3)),
        "mri": ops.MRI(size, ops.radial_mask(size, 2)),
        "inpainting": ops.Inpainting(torch.rand(size, size, generator=gen) < 0.5),
        "downsampling": ops.Downsampling(size, 2),
        "ct": ops.ParallelBeamCT(size, 4),
    }


def measurement(op, vae, sigma, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, vae.config.latent_dim, generator=gen, dtype=F64)
    x = decode64(vae, z).sample(generator=gen)
    clean = op(x)
    noise = sigma * torch.randn(clean.shape, generator=gen, dtype=F64)
    if clean.is_complex():
        noise = torch.complex(noise, sigma * torch.randn(clean.shape, generator=gen, dtype=F64))
    return z, x, clean + noise


def real_vector(y):
    return torch.cat([y.real.flatten(1), y.imag.flatten(1)], 1) if y.is_complex() else y.flatten(1)


# ------------------------------------------------------------------ program
@pytest.mark.parametrize("name", ["blur", "mri"])
def test_program_trace_sites_and_shapes(name):
    vae = tiny_prior()
    op = small_ops()[name]
    _, _, y = measurement(op, vae, 0.1, batch=3)
    tr = pyro.poutine.trace(reconstruction_model).get_trace(y, op, vae, 0.1)
    assert [n for n in tr.nodes if n in ("z", "x", "y")] == ["z", "x", "y"]
    assert tr.nodes["y"]["is_observed"] and not tr.nodes["z"]["is_observed"]
    assert tr.nodes["z"]["value"].shape == (3, 2)
    assert tr.nodes["x"]["value"].shape == (3, 1, 6, 6)
    y_real = torch.view_as_real(y) if y.is_complex() else y
    assert torch.equal(tr.nodes["y"]["value"], y_real)
    # the y site's log density is the Gaussian likelihood of op(x) (complex: Re and Im independently)
    x = tr.nodes["x"]["value"]
    r = real_vector(y) - real_vector(op(x))
    expected = (-0.5 * r.square().sum(1) / 0.01 - r.shape[1] * (math.log(0.1) + 0.5 * math.log(2 * math.pi)))
    torch.testing.assert_close(tr.nodes["y"]["fn"].log_prob(y_real), expected)


# ------------------------------------------------------- collapsed likelihood
def dense_reference(z, y, op, vae, sigma):
    d = decode64(vae, z)
    a = op.to_dense(F64)
    cov = d.to_dense_covariance()
    mu = d.loc.flatten(1)
    eye = torch.eye(a.shape[0], dtype=F64)
    return torch.stack([
        torch.distributions.MultivariateNormal(a @ mu[i], a @ cov[i] @ a.T + sigma**2 * eye)
        .log_prob(real_vector(y)[i]) for i in range(z.shape[0])
    ])


@pytest.mark.parametrize("name", sorted(small_ops()))
def test_collapsed_dense_equals_multivariate_normal(name):
    vae, op, sigma = tiny_prior(), small_ops()[name], 0.1
    z, _, y = measurement(op, vae, sigma)
    got = collapsed_log_likelihood(z, y, op, vae, sigma, method="dense")
    ref = dense_reference(z, y, op, vae, sigma)
    # float64 exactness: both are exact formulas, differing only by round-off.
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8)


def test_collapsed_dense_gradient_matches_finite_differences():
    vae, op = tiny_prior(), small_ops()["mri"]
    z, _, y = measurement(op, vae, 0.1, batch=1)
    sigma = torch.tensor(0.1, dtype=F64, requires_grad=True)
    zz = z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, s: collapsed_log_likelihood(a, y, op, vae, s, method="dense"), (zz, sigma))


@pytest.mark.parametrize("name", ["blur", "mri"])
def test_collapsed_slq_within_stochastic_tolerance(name):
    vae, op, sigma = tiny_prior(), small_ops()[name], 0.1
    z, _, y = measurement(op, vae, sigma)
    cfg = SLQConfig(num_probes=32, lanczos_iterations=36, seed=1)  # linear_operator's CG bottoms out near 1e-7
    got = collapsed_log_likelihood(z, y, op, vae, sigma, method="slq", slq=cfg)
    ref = collapsed_log_likelihood(z, y, op, vae, sigma, method="dense")
    # Lanczos with N = 36 iterations on a 36 × 36 matrix is exact per probe; the error is the
    # Hutchinson estimate of tr(log P) with 32 Gaussian probes: sd ≤ sqrt(2/32)‖log P‖_F.
    # log p = −½ log|P| + ..., so 4 sd of the log-likelihood is 2·sqrt(2/32)‖log P‖_F.
    d = decode64(vae, z)
    p = d.to_dense_precision() + op.to_dense(F64).T @ op.to_dense(F64) / sigma**2
    ev = torch.linalg.eigvalsh(p)
    tol = 2.0 * math.sqrt(2 / 32) * ev.log().square().sum(-1).sqrt()
    assert ((got - ref).abs() < tol).all(), (got, ref, tol)
    assert ((got - ref).abs() > 0).any()  # it is a stochastic estimate, not the dense path
    again = collapsed_log_likelihood(z, y, op, vae, sigma, method="slq", slq=cfg)
    assert torch.equal(got, again)  # seeded probes: a deterministic function of z


def test_collapsed_slq_gradient_close_to_dense():
    vae, op, sigma = tiny_prior(), small_ops()["blur"], 0.1
    z, _, y = measurement(op, vae, sigma, batch=1)
    grads = []
    for method in ("dense", "slq"):
        zz = z.clone().requires_grad_(True)
        collapsed_log_likelihood(zz, y, op, vae, sigma, method=method,
                                 slq=SLQConfig(num_probes=64, lanczos_iterations=36)).sum().backward()
        grads.append(zz.grad)
    # The quadratic term's gradient is exact (CG to 1e-6); the log-det gradient is a
    # 64-probe Hutchinson estimate: loose relative tolerance.
    assert torch.allclose(grads[0], grads[1], rtol=0.1, atol=0.05 * grads[0].abs().max())


# ------------------------------------------------------------ exact x | z, y
@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_exact_conditional_samples_match_dense_posterior(solver):
    vae, op, sigma = tiny_prior(), small_ops()["mri"], 0.2
    z, _, y = measurement(op, vae, sigma)
    d = decode64(vae, z)
    a = op.to_dense(F64)
    lam = d.to_dense_precision()
    p = lam + a.T @ a / sigma**2
    rhs = (lam @ d.loc.flatten(1)[..., None]).squeeze(-1) + real_vector(y) @ a / sigma**2
    mean_ref = torch.linalg.solve(p, rhs[..., None]).squeeze(-1)
    post = GaussianImagePosterior(d, y, op, sigma, XSolverConfig(solver=solver, cg_tol=1e-10))
    torch.testing.assert_close(post.mean.flatten(1), mean_ref, rtol=1e-7, atol=1e-8)
    n = 20000
    s = post.sample(n, seed=0).flatten(2)  # (n, B, N)
    # Whiten with the dense posterior: e = Lᵀ(x − m) ~ N(0, I) exactly when Cov = P⁻¹ = (LLᵀ)⁻¹.
    chol = torch.linalg.cholesky(p)
    e = torch.einsum("bji,nbj->nbi", chol, s - mean_ref)
    # Monte Carlo: mean entries have sd 1/sqrt(n) = 0.007; covariance entries sd ≤ sqrt(2/n) = 0.01.
    # 5 sd bounds over the ~1300 entries keep the false-alarm rate below 1e-3.
    assert e.mean(0).abs().max() < 5 / math.sqrt(n)
    cov = torch.einsum("nbi,nbj->bij", e, e) / n
    assert (cov - torch.eye(36, dtype=F64)).abs().max() < 5 * math.sqrt(2 / n)
    assert post.converged


def test_cg_short_of_tolerance_warns_and_flags():
    vae, op, sigma = tiny_prior(), small_ops()["blur"], 0.01
    z, _, y = measurement(op, vae, sigma, batch=1)
    post = GaussianImagePosterior(decode64(vae, z), y, op, sigma,
                                  XSolverConfig(solver="cg", cg_tol=1e-12, cg_max_iter=2))
    with pytest.warns(CGConvergenceWarning, match="relative residual"):
        post.mean
    assert post.converged is False
    cfg = MAPConfig(max_iterations=2, z_steps=2, x_solver=XSolverConfig(solver="cg", cg_max_iter=2))
    with pytest.warns(CGConvergenceWarning):
        rec = map_estimate(y, op, vae, sigma, method="jpmap", config=cfg, progress=False)
    assert rec.converged is False


def test_inpainting_condition_is_noise_free_limit():
    vae, sigma = tiny_prior(), 1e-7
    op = small_ops()["inpainting"]
    z, x, y = measurement(op, vae, 0.0, batch=2)
    d = decode64(vae, z)
    exact = GaussianImagePosterior(d, y, op, sigma, XSolverConfig(solver="cholesky")).mean
    cond = GaussianImagePosterior(d, y, op, sigma, XSolverConfig(solver="condition"))
    # σ = 1e-7: the noisy posterior mean differs from the noise-free conditional by O(σ²Λ).
    torch.testing.assert_close(cond.mean, exact, rtol=0, atol=1e-8)
    s = cond.sample(3, seed=0)
    assert torch.equal(op(s.reshape(-1, 1, 6, 6)), y.repeat(3, 1))  # observed pixels exact
    with pytest.raises(ValueError, match="Inpainting"):
        GaussianImagePosterior(d, y, small_ops()["blur"], sigma, XSolverConfig(solver="condition"))
    # z would be drawn at σ = 0.05 but x | z in the σ → 0 limit: an inconsistent joint, refused.
    with pytest.raises(ValueError, match="noise-free limit"):
        sample_posterior(y[:1], op, vae, 0.05, method="laplace", num_samples=4, num_chains=1,
                         config=SamplingConfig(x_solver=XSolverConfig(solver="condition")),
                         progress=False)


# --------------------------------------------------------------------- MAP
@pytest.mark.parametrize("method", MAP_METHODS)
def test_map_methods_run_and_fit_the_data(method):
    vae, op, sigma = tiny_prior(mean_scale=5.0), small_ops()["blur"], 0.05
    z, x, y = measurement(op, vae, sigma, batch=2)
    rec = map_estimate(y, op, vae, sigma, method=method, progress=False,
                       config=MAPConfig(max_iterations=8, restarts=2))
    assert rec.x.shape == (2, 1, 6, 6) and rec.z.shape == (2, 2)
    assert rec.method == method and len(rec.objective_history) >= 1
    start = joint_objective(decode64(vae, torch.zeros(2, 2, dtype=F64)).loc, torch.zeros(2, 2, dtype=F64),
                            y, op, vae, sigma).sum()
    final = joint_objective(rec.x, rec.z, y, op, vae, sigma).sum()
    if method != "csgm":  # csgm optimises x = μ(z) only
        assert final < start
    else:
        # CSGM's own objective, written out here: ½‖y − Aμ(z)‖²/σ² + ½‖z‖², x = μ(z).
        def csgm_objective(z):
            r = real_vector(y - op(decode64(vae, z).loc))
            return 0.5 * r.pow(2).sum(1) / sigma**2 + 0.5 * z.pow(2).sum(1)

        with torch.no_grad():
            torch.testing.assert_close(rec.x, decode64(vae, rec.z).loc.to(rec.x.dtype))
            assert (csgm_objective(rec.z.to(F64)) < csgm_objective(torch.zeros(2, 2, dtype=F64))).all()
    if method in ("jpmap", "alternating"):  # monotone by construction (accept only descent)
        h = rec.objective_history
        assert all(b <= a + 1e-6 * abs(a) for a, b in zip(h, h[1:]))


def test_jpmap_x_is_the_exact_conditional_mean():
    vae, op, sigma = tiny_prior(), small_ops()["mri"], 0.05
    _, _, y = measurement(op, vae, sigma, batch=1)
    rec = map_estimate(y, op, vae, sigma, method="jpmap", config=MAPConfig(max_iterations=3),
                       progress=False)
    mean = GaussianImagePosterior(decode64(vae, rec.z), y, op, sigma).mean
    torch.testing.assert_close(rec.x, mean, rtol=1e-6, atol=1e-8)


def test_type_two_noise_estimate():
    vae = tiny_prior(size=16, latent_dim=2)
    op, sigma = ops.Identity((1, 16, 16)), 0.3
    _, _, y = measurement(op, vae, sigma, batch=1, seed=4)
    fit = collapsed_map(y, op, vae, None, steps=60)
    # 256 measurements, prior std 0.1 ≪ σ: σ is identified to ~sqrt(1/(2·256)) ≈ 4.4 % (1 sd).
    assert abs(fit.noise_std / math.sqrt(sigma**2 + 0.1**2) - 1) < 0.15
    rec = map_estimate(y, op, vae, None, method="csgm", progress=False,
                       config=MAPConfig(max_iterations=2, restarts=1))
    assert rec.noise_std == pytest.approx(fit.noise_std, rel=1e-3)
    post = sample_posterior(y, op, vae, None, method="laplace", num_samples=3, num_chains=1,
                            config=SamplingConfig(map_steps=60), progress=False)
    assert post.noise_std == pytest.approx(fit.noise_std, rel=1e-3)


# ---------------------------------------------------------------- sampling
def test_nuts_posterior_shapes_stats_and_seed():
    vae, op, sigma = tiny_prior(size=4), ops.Blur(4, ops.gaussian_kernel(0.7, 3)), 0.1
    _, _, y = measurement(op, vae, sigma, batch=1)
    cfg = SamplingConfig(warmup=10, max_tree_depth=4)
    post = sample_posterior(y, op, vae, sigma, method="nuts", num_samples=6, num_chains=2, seed=3,
                            config=cfg, progress=False)
    assert post.samples.shape == (2, 6, 1, 4, 4) and post.z.shape == (2, 6, 2)
    assert set(post.sample_stats) == {"diverging", "accepted", "step_size", "num_steps", "tree_depth"}
    assert (post.sample_stats["tree_depth"] <= 4).all()
    assert (post.sample_stats["num_steps"] >= 1).all()
    # accepted is read off the draws; its mean must equal Pyro's own acceptance counter.
    np.testing.assert_allclose(post.sample_stats["accepted"].mean(1), post.extras["acceptance_rate"])
    assert not torch.equal(post.z[0], post.z[1])  # chains are seeded differently
    again = sample_posterior(y, op, vae, sigma, method="nuts", num_samples=6, num_chains=2, seed=3,
                             config=cfg, progress=False)
    assert torch.equal(post.samples, again.samples)
    idata = post.to_arviz()  # the diagnostics layer takes it as is
    assert idata.posterior["x"].shape == (2, 6, 1, 4, 4)
    assert {"diverging", "tree_depth", "step_size"} <= set(idata.sample_stats.data_vars)


def test_laplace_hessian_matches_finite_differences():
    vae, op, sigma = tiny_prior(), small_ops()["blur"], 0.1
    _, _, y = measurement(op, vae, sigma, batch=1)
    z = torch.tensor([[0.3, -0.2]], dtype=F64)
    h = latent_hessian(z, y, op, vae, sigma, SamplingConfig(evidence="dense"))

    def grad(v):
        v = v.clone().requires_grad_(True)
        (-collapsed_log_posterior(v, y, op, vae, sigma, method="dense").sum()).backward()
        return v.grad[0]

    eps = 1e-5
    fd = torch.stack([(grad(z + eps * e) - grad(z - eps * e)) / (2 * eps)
                      for e in torch.eye(2, dtype=F64)[:, None, :]], 1)
    torch.testing.assert_close(h, 0.5 * (fd + fd.T), rtol=1e-5, atol=1e-6)
    post = sample_posterior(y, op, vae, sigma, method="laplace", num_samples=4000, num_chains=1,
                            seed=0, config=SamplingConfig(evidence="dense", x_batch=1000), progress=False)
    cov = torch.cov(post.z[0].T.to(F64))
    ref = torch.linalg.inv(torch.as_tensor(post.extras["hessian"]))
    # 4000 draws: relative sd of a variance estimate sqrt(2/4000) = 2.2 %; 5 sd.
    assert torch.allclose(cov.diagonal(), ref.diagonal(), rtol=0.12)


def _sbc_ranks(replicates, sigma_factor, seed=123, draws=9, thin=2):
    vae = tiny_prior(size=4, mean_scale=20.0)
    op, sigma = ops.Blur(4, ops.gaussian_kernel(0.7, 3)), 0.1
    gen = torch.Generator().manual_seed(seed)
    ranks = []
    # issue 11's NUTS on the collapsed program: dense mass M⁻¹ = H⁻¹, chains from MAP + a Laplace draw
    cfg = SamplingConfig(warmup=20, max_tree_depth=5, map_steps=20)
    for r in range(replicates):
        z = torch.randn(1, 2, generator=gen, dtype=F64)
        x = decode64(vae, z).sample(generator=gen)
        y = op(x) + sigma * torch.randn(op(x).shape, generator=gen, dtype=F64)
        post = sample_posterior(y, op, vae, sigma * sigma_factor, "nuts", num_samples=draws * thin,
                                num_chains=1, seed=r, config=cfg, progress=False)
        zs, xs = post.z[0, ::thin], post.samples[0, ::thin]
        ranks.append([int((zs[:, 0] < z[0, 0]).sum()), int((zs[:, 1] < z[0, 1]).sum()),
                      int((xs[:, 0, 1, 1] < x[0, 0, 1, 1]).sum())])
    ranks = np.asarray(ranks)  # ranks in 0..draws: draws + 1 = 10 values, 5 bins of 2
    return [scipy.stats.chisquare(np.bincount(ranks[:, j] // 2, minlength=5)).pvalue for j in range(3)]


def test_sbc_nuts_ranks_uniform():
    """Simulation-based calibration (Talts et al. 2018) with the tiny prior as truth generator.

    Ranks of z₁, z₂ and a pixel of x among 9 thinned draws of the preconditioned
    NUTS, 30 replicates, 5 bins (6 expected per bin): each chi-square p-value must
    exceed 0.001 (fixed seed; Bonferroni over 3 statistics). The large version is slow.
    """
    pvals = _sbc_ranks(30, 1.0)
    assert min(pvals) > 1e-3, pvals


def test_sbc_detects_overconfident_posterior():
    """The same check has power: inferring with σ/8 gives U-shaped ranks (fixed seed)."""
    pvals = _sbc_ranks(20, 0.125)
    assert min(pvals) < 0.01, pvals


@pytest.mark.slow
def test_sbc_nuts_ranks_uniform_large():
    pvals = _sbc_ranks(200, 1.0, seed=7)
    assert min(pvals) > 1e-3, pvals


# ------------------------------------------------------------- bad input
def test_bad_input():
    vae, op = tiny_prior(), small_ops()["blur"]
    _, _, y = measurement(op, vae, 0.1, batch=1)
    with pytest.raises(ValueError, match="domain_shape"):
        map_estimate(y, ops.Blur(8, ops.gaussian_kernel(1.0, 3)), vae, 0.1)
    with pytest.raises(TypeError, match="LinearOperator"):
        map_estimate(y, lambda v: v, vae, 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        sample_posterior(y, op, vae, 0.0)
    with pytest.raises(ValueError, match="noise_std"):
        collapsed_log_likelihood(torch.zeros(1, 2), y, op, vae, -1.0)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        map_estimate(bad, op, vae, 0.1)
    with pytest.raises(ValueError, match="method"):
        map_estimate(y, op, vae, 0.1, method="gibbs")
    with pytest.raises(ValueError, match="method"):
        sample_posterior(y, op, vae, 0.1, method="gibbs")
    with pytest.raises(ValueError, match="num_chains"):
        sample_posterior(y, op, vae, 0.1, num_chains=0)
    with pytest.raises(ValueError, match="single measurement"):
        sample_posterior(y.repeat(2, 1, 1, 1), op, vae, 0.1)
    with pytest.raises(ValueError, match="method"):
        collapsed_log_likelihood(torch.zeros(1, 2), y, op, vae, 0.1, method="exact")
    with pytest.raises(ValueError, match="z must have shape"):
        collapsed_log_likelihood(torch.zeros(2, 2), y, op, vae, 0.1)
    mri = small_ops()["mri"]
    with pytest.raises(TypeError, match="complex"):
        map_estimate(torch.zeros(1, *mri.range_shape, dtype=F64), mri, vae, 0.1)


# ------------------------------------------------------ shipped priors (PSNR)
PRIORS = ("digits-supn", "digits-diagonal", "digits-identity")
needs_priors = pytest.mark.skipif(not set(PRIORS) <= set(available_priors()),
                                  reason=f"shipped priors {PRIORS} not available")


def _mri_psnr_table(n_images, spokes, methods):
    x = digits("test", 28)[:n_images]
    table = {}
    for n_spokes in spokes:
        op = ops.MRI(28, ops.radial_mask(28, n_spokes))
        m = simulate(op, x, 0.05, seed=n_spokes)
        table[("zero-filled", None, n_spokes)] = float(psnr(x, op.adjoint(m.y), data_range=1.0).mean())
        for name in PRIORS:
            prior = load_pretrained(name)
            for method in methods:
                rec = map_estimate(m.y, op, prior, m.noise_std, method=method, progress=False,
                                   config=MAPConfig(max_iterations=15, restarts=2))
                table[(method, name, n_spokes)] = float(psnr(x, rec.x.clamp(0, 1), data_range=1.0).mean())
    return table


def _check_ordering(table, spokes, methods):
    def avg(method, prior):
        return np.mean([table[(method, prior, s)] for s in spokes])

    zf, csgm = avg("zero-filled", None), avg("csgm", "digits-supn")
    for method in methods:
        if method == "csgm":
            continue
        s, d, i = (avg(method, p) for p in PRIORS)
        assert s >= d >= i, (method, s, d, i)
        assert i > max(zf, csgm), (method, i, zf, csgm)


@needs_priors
def test_mri_psnr_ordering_quick():
    spokes, methods = (10,), ("jpmap", "csgm")
    _check_ordering(_mri_psnr_table(2, spokes, methods), spokes, methods)


@needs_priors
@pytest.mark.slow
def test_mri_psnr_ordering_full():
    spokes, methods = (10, 20, 30), ("alternating", "jpmap", "csgm")
    _check_ordering(_mri_psnr_table(12, spokes, methods), spokes, methods)


# ------------------------------------------------------- denoising vs a DAE
def _denoising_psnr(n_images, dae):
    prior = load_pretrained("digits-supn")
    x = digits("test", 28)[:n_images]
    op = ops.Identity((1, 28, 28))
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dae_psnr = float(psnr(x, dae(y).clamp(0, 1), data_range=1.0).mean())
    rec = map_estimate(y, op, prior, 0.1, method="jpmap", config=MAPConfig(max_iterations=15), progress=False)
    return float(psnr(x, rec.x.clamp(0, 1), data_range=1.0).mean()), dae_psnr


@needs_priors
def test_denoising_structured_beats_dae_quick():
    """The shipped DAE (same trunk, trained 40 epochs at σ = 0.1) against SUPN on 4 test digits."""
    from bayes_recon.models import load_pretrained_dae

    dae = load_pretrained_dae("digits-dae")
    assert dae.metadata["epochs"] == 40 and dae.metadata["noise_std"] == 0.1
    supn, dae_psnr = _denoising_psnr(4, dae)
    assert supn > dae_psnr, (supn, dae_psnr)


@needs_priors
@pytest.mark.slow
def test_denoising_structured_beats_dae():
    """The SUPN paper's comparison on 32 test digits: σ = 0.1, a DAE trained here for 40 epochs."""
    from bayes_recon.models.dae import DAETrainConfig, train_dae

    config = load_pretrained("digits-supn").config
    dae = train_dae(digits("train", 28), config, DAETrainConfig(noise_std=0.1, epochs=40),
                    progress=False)
    supn, dae_psnr = _denoising_psnr(32, dae)
    assert supn > dae_psnr, (supn, dae_psnr)
