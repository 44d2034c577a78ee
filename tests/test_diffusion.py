"""Diffusion priors (denoiser, score, schedule, training) and the DPS / DiffPIR samplers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bayes_recon.app.cli import main
from bayes_recon.app.methods import MethodSettings, run_method
from bayes_recon.data import digits, natural_patches, simulate
from bayes_recon.data.prior_sets import prior_training_data
from bayes_recon.diagnostics import to_arviz
from bayes_recon.inference import DiffPIRConfig, DPSConfig, sample_posterior
from bayes_recon.inference.diffusion import data_proximal_step, diffusion_posterior
from bayes_recon.models import (DiffusionConfig, DiffusionTrainConfig, DiffusionUNet,
                                GaussianDiffusionPrior, available_diffusion_priors,
                                load_pretrained, load_pretrained_diffusion, train_diffusion)
from bayes_recon.models.diffusion import check_alphas_cumprod, linear_beta_schedule
from bayes_recon.models.diffusion_training import denoising_mse
from bayes_recon.operators import MRI, MatrixOperator, ParallelBeamCT, radial_mask

F64 = torch.float64


def _gaussian_problem(seed=0):
    """4×4 Gaussian image model, a random 8×16 operator, σ = 0.05, and the exact posterior."""
    g = torch.Generator().manual_seed(seed)
    n, d = 4, 16
    ii = torch.arange(n, dtype=F64)
    pos = torch.stack(torch.meshgrid(ii, ii, indexing="ij"), -1).reshape(-1, 2)
    cov = 0.04 * torch.exp(-(pos[:, None] - pos[None]).square().sum(-1) / (2 * 1.5 ** 2))
    cov = cov + 1e-4 * torch.eye(d, dtype=F64)
    mean = torch.full((1, n, n), 0.5, dtype=F64)
    a = torch.randn(8, d, generator=g, dtype=F64) / 4
    op = MatrixOperator(a, (1, n, n))
    sigma = 0.05
    x = mean.reshape(-1) + torch.linalg.cholesky(cov) @ torch.randn(d, generator=g, dtype=F64)
    y = (a @ x + sigma * torch.randn(8, generator=g, dtype=F64))[None]
    precision = torch.linalg.inv(cov) + a.T @ a / sigma ** 2
    post_cov = torch.linalg.inv(precision)
    post_mean = post_cov @ (torch.linalg.solve(cov, mean.reshape(-1)) + a.T @ y[0] / sigma ** 2)
    prior = GaussianDiffusionPrior(mean, cov, shift=0.5, scale=0.5)
    return prior, op, y, sigma, mean.reshape(-1), post_mean, post_cov.diagonal().sqrt()


# --- schedule, denoiser, score ---------------------------------------------------------------

def test_linear_schedule_is_ddpm_and_checked():
    a = linear_beta_schedule(1000)
    betas = 1 - a / torch.cat([torch.ones(1, dtype=F64), a[:-1]])
    np.testing.assert_allclose(betas[[0, -1]].numpy(), [1e-4, 0.02], rtol=1e-10)
    with pytest.raises(ValueError, match="alphas_cumprod must be strictly decreasing"):
        check_alphas_cumprod(torch.tensor([0.9, 0.5, 0.6]))
    with pytest.raises(ValueError, match="alphas_cumprod must lie strictly inside"):
        check_alphas_cumprod(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        GaussianDiffusionPrior(torch.zeros(1, 2, 2), torch.eye(4), alphas_cumprod=[0.9, 0.95, 0.1])


@pytest.mark.parametrize("sigma", [0.013, 0.1, 0.7])
def test_gaussian_prior_denoiser_is_the_wiener_filter(sigma):
    # Exact noise predictor + Tweedie = m + C (C + σ² I)⁻¹ (x − m), in image units.
    g = torch.Generator().manual_seed(1)
    b = torch.randn(16, 16, generator=g, dtype=F64)
    cov = b @ b.T / 16 * 0.05 + 1e-3 * torch.eye(16, dtype=F64)
    mean = torch.rand(1, 4, 4, generator=g, dtype=F64)
    prior = GaussianDiffusionPrior(mean, cov, shift=0.5, scale=0.5)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=F64)
    ref = mean.reshape(-1) + (cov @ torch.linalg.solve(
        cov + sigma ** 2 * torch.eye(16, dtype=F64), (x.reshape(3, -1) - mean.reshape(-1)).T)).T
    np.testing.assert_allclose(prior.denoise(x, sigma).reshape(3, -1).numpy(), ref.numpy(),
                               atol=1e-10)
    # Score of N(m, C + σ² I).
    score = -torch.linalg.solve(cov + sigma ** 2 * torch.eye(16, dtype=F64),
                                (x.reshape(3, -1) - mean.reshape(-1)).T).T
    np.testing.assert_allclose(prior.score(x, sigma).reshape(3, -1).numpy(), score.numpy(),
                               rtol=1e-8, atol=1e-8)


def test_time_of_noise_inverts_alpha_bar():
    prior = GaussianDiffusionPrior(torch.zeros(1, 2, 2), torch.eye(4), scale=0.5)
    sigma = torch.tensor([0.01, 0.2, 3.0], dtype=F64)
    t = prior.time_of_noise(sigma)
    assert ((t > 0) & (t < prior.num_steps - 1)).all()
    np.testing.assert_allclose(prior.alpha_bar(t).numpy(), (1 / (1 + (sigma / 0.5) ** 2)).numpy(),
                               rtol=1e-10)


# --- the network, its checkpoints and its training -------------------------------------------

def test_unet_checkpoint_round_trip(tmp_path):
    net = DiffusionUNet(DiffusionConfig(image_size=8, widths=(8, 8)))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = net.save(tmp_path / "d", {"note": "x"})
    back = DiffusionUNet.load(path)
    u, t = torch.randn(2, 1, 8, 8), torch.tensor([3.5, 900.0])
    torch.testing.assert_close(back.predict_noise(u, t), net.predict_noise(u, t))
    assert back.metadata == {"note": "x"}
    meta = json.loads((tmp_path / "d.json").read_text())
    assert meta["class"] == "DiffusionUNet"


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="image_size must be divisible"):
        DiffusionConfig(image_size=28, widths=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="widths"):
        DiffusionConfig(image_size=8, widths=(6, 8))


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    data = digits("train", 8)[:96]
    cfg = DiffusionTrainConfig(steps=40, batch_size=16, val_every=20, warmup_steps=5, lr=2e-3,
                               seed=3)
    make = lambda: DiffusionUNet(DiffusionConfig(image_size=8, widths=(8, 8)))
    torch.manual_seed(0)
    full = train_diffusion(make(), data[:80], data[80:], cfg, progress=False)
    # Predicting ε̂ = 0 has loss 1; the weight average after 40 steps is well below it.
    assert full.history[-1]["val_loss"] < min(0.8, full.history[0]["val_loss"])
    # Stopped at step 20 and resumed: the same weights as the run without a stop.
    torch.manual_seed(0)
    first = make()
    train_diffusion(first, data[:80], data[80:], DiffusionTrainConfig(
        **{**cfg.__dict__, "steps": 20}), checkpoint_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    resumed = train_diffusion(make(), data[:80], data[80:], cfg, checkpoint_dir=tmp_path,
                              progress=False)
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["digits-diffusion", "patches-diffusion"])
def test_shipped_denoiser_beats_the_wiener_filter_on_held_out_images(name):
    assert name in available_diffusion_priors()
    net = load_pretrained_diffusion(name)
    data = prior_training_data("digits" if name.startswith("digits") else "patches",
                               num_patches=net.metadata.get("num_patches") or 3000)
    wiener = GaussianDiffusionPrior.fit(data.train, shift=net.shift, scale=net.scale)
    test = data.test[:100]
    sigmas = (0.05, 0.1, 0.2, 0.4)
    ours = denoising_mse(net, test, sigmas, seed=5)
    linear = denoising_mse(wiener, test.double(), sigmas, seed=5)
    for s in sigmas:
        assert ours[s] < linear[s], (s, ours[s], linear[s])


# --- samplers ----------------------------------------------------------------------------------

# Measured on this problem (seed 0, 400 draws): DPS (500 steps, ζ = 0.1) has its mean off
# the exact posterior mean by 0.13 of the prior-to-posterior distance, and pixel std 0.83 of
# the exact one; DiffPIR (100 steps, λ = 1, ζ = 1) 0.10 and 0.75. Both under-disperse:
# neither is an exact sampler even with the exact score.
@pytest.mark.parametrize("method, config, max_err, std_range", [
    ("dps", DPSConfig(steps=500, guidance=0.1, batch_size=400), 0.25, (0.6, 0.97)),
    ("diffpir", DiffPIRConfig(steps=100, regularisation=1.0, zeta=1.0, batch_size=400), 0.25,
     (0.55, 0.95)),
])
def test_samplers_on_a_gaussian_prior_against_the_exact_posterior(method, config, max_err,
                                                                  std_range):
    prior, op, y, sigma, prior_mean, post_mean, post_std = _gaussian_problem()
    post = sample_posterior(y, op, prior, sigma, method=method, num_samples=400, num_chains=1,
                            config=config, progress=False)
    flat = post.samples.reshape(400, -1).double()
    # Monte Carlo error of the mean: ≈ 0.04 of ‖posterior mean − prior mean‖ at 400 draws.
    err = float((flat.mean(0) - post_mean).norm() / (post_mean - prior_mean).norm())
    assert err < max_err
    ratio = float((flat.std(0) / post_std).mean())
    assert std_range[0] < ratio < std_range[1]


def test_diffpir_data_step_against_a_dense_solve():
    op = MRI(8, radial_mask(8, 4))
    g = torch.Generator().manual_seed(0)
    x_true = torch.rand(1, 1, 8, 8, generator=g, dtype=F64)
    y = simulate(op, x_true, 0.05, seed=0).y
    x0 = torch.rand(2, 1, 8, 8, generator=g, dtype=F64)
    rho = 0.3
    res = data_proximal_step(y, op, x0, rho, tol=1e-10, max_iter=500)
    a = op.to_dense()  # real-stacked (2m, n)
    yr = torch.cat([y.real.reshape(-1), y.imag.reshape(-1)])
    lhs = a.T @ a + rho * torch.eye(64, dtype=F64)
    for i in range(2):
        ref = torch.linalg.solve(lhs, a.T @ yr + rho * x0[i].reshape(-1))
        np.testing.assert_allclose(res.x[i].reshape(-1).numpy(), ref.numpy(), atol=1e-7)
    assert res.converged


def test_posterior_shapes_seeds_and_arviz():
    prior, op, y, sigma, *_ = _gaussian_problem()
    cfg = DiffPIRConfig(steps=10, batch_size=3)
    post = sample_posterior(y, op, prior, sigma, method="diffpir", num_samples=5, num_chains=2,
                            seed=4, config=cfg, progress=False)
    assert post.samples.shape == (2, 5, 1, 4, 4) and post.method == "diffpir"
    assert post.sample_stats["data_misfit"].shape == (2, 5)
    again = diffusion_posterior(y, op, prior, sigma, "diffpir", 5, 2, seed=4, config=cfg,
                                progress=False)
    torch.testing.assert_close(again.samples, post.samples)
    # Chains are independent runs: different seeds, different draws.
    assert not torch.allclose(post.samples[0], post.samples[1])
    idata = to_arviz(post, y=y[0], op=op, noise_std=sigma, predictive=True, seed=0)
    assert idata.posterior["x"].shape == (2, 5, 1, 4, 4)


def test_bad_input_is_named():
    prior, op, y, sigma, *_ = _gaussian_problem()
    with pytest.raises(ValueError, match="does not match the operator's domain_shape"):
        sample_posterior(y[:, :16], MatrixOperator(torch.eye(16, dtype=F64)[:, :9], (1, 3, 3)),
                         prior, sigma, method="dps", progress=False)
    with pytest.raises(ValueError, match="steps"):
        DPSConfig(steps=0)
    with pytest.raises(ValueError, match="guidance"):
        DPSConfig(guidance=0.0)
    with pytest.raises(ValueError, match="guidance"):
        DPSConfig(guidance=-1.0)
    with pytest.raises(ValueError, match="regularisation"):
        DiffPIRConfig(regularisation=0)
    with pytest.raises(ValueError, match="zeta"):
        DiffPIRConfig(zeta=1.5)
    with pytest.raises(ValueError, match="steps must be at most"):
        sample_posterior(y, op, prior, sigma, method="dps", config=DPSConfig(steps=5000),
                         progress=False)
    with pytest.raises(TypeError, match="config must be a DiffPIRConfig"):
        sample_posterior(y, op, prior, sigma, method="diffpir", config=DPSConfig(), progress=False)
    with pytest.raises(ValueError, match="noise_std must be given"):
        sample_posterior(y, op, prior, None, method="dps", progress=False)
    with pytest.raises(TypeError, match="prior must be a DiffusionPrior"):
        sample_posterior(y, op, object(), sigma, method="dps", progress=False)


def test_registry_refuses_the_wrong_kind_of_prior():
    op = ParallelBeamCT(28, 6)
    y = simulate(op, digits("test", 28)[:1], 0.05, seed=0)
    with pytest.raises(ValueError, match="needs a diffusion prior"):
        run_method(MethodSettings("dps", prior="digits-supn", progress=False), op, y.y,
                   y.noise_std, load_pretrained("digits-supn"))
    with pytest.raises(ValueError, match="needs a SUPN prior"):
        run_method(MethodSettings("jpmap", prior="digits-diffusion", progress=False), op, y.y,
                   y.noise_std, load_pretrained_diffusion("digits-diffusion"))


@pytest.mark.parametrize("method", ["dps", "diffpir"])
def test_cli_runs_diffusion_methods_and_records_them(tmp_path, method):
    out = tmp_path / method
    code = main(["reconstruct", "--problem", "mri", "--size", "28", "--method", method,
                 "--prior", "digits-diffusion", "--diffusion-steps", "4", "--num-samples", "3",
                 "--num-chains", "2", "--no-progress", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["prior"] == "digits-diffusion"
    assert metrics[f"{method}_config"]["steps"] == 4
    assert np.load(out / "samples.npy").shape == (2, 3, 1, 28, 28)


@pytest.mark.parametrize("problem", ["ct", "denoise", "deblur", "inpaint", "superres"])
@pytest.mark.parametrize("method", ["dps", "diffpir"])
def test_diffusion_methods_run_on_every_problem(tmp_path, problem, method):
    out = tmp_path / "run"
    code = main(["reconstruct", "--problem", problem, "--method", method, "--prior",
                 "digits-diffusion", "--diffusion-steps", "2", "--num-samples", "2",
                 "--num-chains", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (1, 2, 1, 28, 28) and np.isfinite(samples).all()


def test_study_method_spec_carries_diffusion_overrides():
    from bayes_recon.app.studies.config import MethodSpec

    spec = MethodSpec("DPS", "dps", prior="digits-diffusion", diffusion_steps=3, guidance=0.2,
                      num_samples=2)
    settings = spec.settings(seed=1)
    assert (settings.dps.steps, settings.dps.guidance, settings.diffpir.steps) == (3, 0.2, 3)
    op = ParallelBeamCT(28, 6)
    meas = simulate(op, digits("test", 28)[:1], 0.05, seed=0)
    result = run_method(settings, op, meas.y, meas.noise_std,
                        load_pretrained_diffusion("digits-diffusion"))
    assert result.posterior.samples.shape == (2, 2, 1, 28, 28)
    assert result.posterior.extras["steps"] == 3 and result.posterior.extras["guidance"] == 0.2
    with pytest.raises(ValueError, match="guidance"):
        MethodSpec("DPS", "dps", prior="digits-diffusion", guidance=-1.0)
