"""Hierarchical VAE priors: the model, its training, the Pyro programs, PnP-HVAE and hvae-svi."""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from bayes_recon.app.argtypes import HVAE_DEFAULTS, PROBLEMS
from bayes_recon.app.cli import main
from bayes_recon.app.methods import MethodSettings, run_method
from bayes_recon.data import digits, simulate
from bayes_recon.data.prior_sets import prior_training_data
from bayes_recon.inference import (HVAEMAPConfig, HVAEPosteriorConfig, map_estimate,
                                   sample_posterior)
from bayes_recon.inference.hvae import hvae_joint_objective, hvae_x_step, pnp_z_step
from bayes_recon.metrics import psnr
from bayes_recon.models import (HierarchicalVAE, HVAEConfig, HVAETrainConfig,
                                available_hvae_priors, evaluate_hvae_nll,
                                hierarchical_collapsed_model, hierarchical_model, load_pretrained,
                                load_pretrained_hvae, train_hvae)
from bayes_recon.operators import (Blur, Identity, MatrixOperator, ParallelBeamCT, gaussian_kernel,
                                   motion_kernel)

F64 = torch.float64


def _tiny(seed=0, **kw):
    """An 8×8 model with latent grids 2, 4, 8, its weights perturbed so no group is trivial."""
    cfg = dict(image_size=8, factors=(4, 2, 1), width=8, latent_channels=2)
    cfg.update(kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HierarchicalVAE(HVAEConfig(**cfg)).double()
        with torch.no_grad():  # zero-initialised heads would make the prior N(0, 1) everywhere
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _matrix_problem(seed=0, m=40, n=8):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n * n, generator=g, dtype=F64) / n
    op = MatrixOperator(a, (1, n, n))
    x = torch.rand(1, 1, n, n, generator=g, dtype=F64)
    y = op(x) + 0.05 * torch.randn(1, m, generator=g, dtype=F64)
    return op, x, y, 0.05


def _dense(op):
    """The operator as a dense matrix, column by column."""
    n = op.domain_size
    basis = torch.eye(n, dtype=F64).reshape(n, *op.domain_shape)
    return op(basis).reshape(n, -1).T


# ------------------------------------------------------------------ the model
def test_per_group_kl_matches_torch_kl_divergence():
    model = _tiny()
    x = torch.rand(3, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    kls, groups, _ = model.kl_divergences(x, torch.Generator().manual_seed(2))
    assert len(kls) == 3
    for kl, g in zip(kls, groups):
        ref = kl_divergence(Normal(g.post_loc, g.post_scale), Normal(g.prior_loc, g.prior_scale))
        torch.testing.assert_close(kl, ref.flatten(1).sum(1), rtol=1e-10, atol=1e-10)
        assert bool((kl > 0).all())


def test_negative_elbo_is_reconstruction_plus_kl():
    model = _tiny()
    x = torch.rand(2, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    nelbo = model.negative_elbo(x, torch.Generator().manual_seed(4))
    kls, groups, _ = model.kl_divergences(x, torch.Generator().manual_seed(4))
    image = model.decode([g.z for g in groups])
    std = (-image.log_diag).exp()
    ref = -Normal(image.loc, std).log_prob(x).flatten(1).sum(1) + torch.stack(kls).sum(0)
    torch.testing.assert_close(nelbo, ref, rtol=1e-10, atol=1e-9)


def test_prior_tiles_to_larger_images_and_refuses_shapes_that_do_not():
    model = _tiny()
    z = model.sample_latents(2, image_hw=(16, 24), generator=torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in z] == [(2, 2, 4, 6), (2, 2, 8, 12), (2, 2, 16, 24)]
    assert model.decode(z).loc.shape == (2, 1, 16, 24)
    with pytest.raises(ValueError, match="does not tile"):
        model.encode(torch.rand(1, 1, 10, 8, dtype=F64))
    op = ParallelBeamCT(10, 4)
    with pytest.raises(ValueError, match="op.domain_shape .* does not tile"):
        map_estimate(torch.zeros(1, *op.range_shape), op, model, 0.1, method="pnp-hvae")


def test_config_is_checked():
    with pytest.raises(ValueError, match="factors must be non-increasing"):
        HVAEConfig(image_size=8, factors=(1, 2))
    with pytest.raises(ValueError, match="divide image_size"):
        HVAEConfig(image_size=8, factors=(3, 1))


def test_checkpoint_round_trip_and_mismatched_config(tmp_path):
    model = _tiny().float()
    path = model.save(tmp_path / "m", {"note": "x"})
    again = HierarchicalVAE.load(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["config"]["width"] = 16
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config"):
        HierarchicalVAE.load(path)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path):
    data = digits("train", 8)[:64].float()
    cfg = HVAETrainConfig(steps=6, batch_size=16, val_every=3, kl_warmup_steps=0, max_shift=0)

    def fresh():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return HierarchicalVAE(image_size=8, factors=(4, 2), width=8, latent_channels=2)

    whole = train_hvae(fresh(), data, data[:16], cfg, checkpoint_dir=tmp_path / "a", progress=False)
    first = HVAETrainConfig(**{**cfg.__dict__, "steps": 3})
    train_hvae(fresh(), data, data[:16], first, checkpoint_dir=tmp_path / "b", progress=False)
    resumed = train_hvae(fresh(), data, data[:16], cfg, checkpoint_dir=tmp_path / "b", progress=False)
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert whole.history[-1]["val_bpp"] < evaluate_hvae_nll(fresh(), data[:16])


@pytest.mark.parametrize("name", ["digits-hvae", "patches-hvae"])
def test_shipped_prior_reproduces_its_stored_heldout_nll(name):
    assert name in available_hvae_priors()
    model = load_pretrained_hvae(name)
    meta = model.metadata
    data = prior_training_data(meta["dataset"], num_patches=meta["num_patches"] or 3000,
                               seed=meta["seed"])
    assert data.split == meta["split"]
    test = evaluate_hvae_nll(model, data.test, seed=0)
    assert test == pytest.approx(meta["test_bpp"], abs=1e-4)
    # The hierarchical prior fits held-out images better than the single-level diagonal VAE.
    diagonal = load_pretrained(f"{meta['dataset']}-diagonal").metadata["test_bpp"]
    assert test < diagonal


# ------------------------------------------------------------------ the programs
def test_hierarchical_model_log_joint_is_the_hand_computation():
    model = _tiny()
    op, _, y, sigma = _matrix_problem()
    temps = (0.9, 0.7, 0.5)
    with pyro.poutine.trace() as tracer, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hierarchical_model(y, op, model, sigma, temperature=temps, decoder_scale=1.3)
    tr = tracer.trace
    zs = [tr.nodes[f"z_{i}"]["value"] for i in (1, 2, 3)]
    x = tr.nodes["x"]["value"]
    groups, h = model.top_down(1, (8, 8), latents=zs)
    hand = sum(Normal(g.prior_loc, t * g.prior_scale).log_prob(z).sum()
               for g, t, z in zip(groups, temps, zs))
    image = model.output(h, 1.3)
    hand = hand + Normal(image.loc, (-image.log_diag).exp()).log_prob(x).sum()
    hand = hand + Normal(op(x), sigma).log_prob(y).sum()
    torch.testing.assert_close(tr.log_prob_sum(), hand, rtol=1e-10, atol=1e-8)
    # J is the negative log joint up to the noise normaliser.
    m = y.numel()
    j = hvae_joint_objective(x, zs, y, op, model, sigma, temps, 1.3)
    const = m * math.log(sigma) + 0.5 * m * math.log(2 * math.pi)
    torch.testing.assert_close(-j[0] - const, hand, rtol=1e-10, atol=1e-8)


def test_collapsed_program_likelihood_matches_a_dense_multivariate_normal():
    model = _tiny()
    op, _, y, sigma = _matrix_problem(m=30)
    with pyro.poutine.trace() as tracer, torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        hierarchical_collapsed_model(y, op, model, sigma)
    tr = tracer.trace
    zs = [tr.nodes[f"z_{i}"]["value"] for i in (1, 2, 3)]
    image = model.decode(zs)
    a = _dense(op)
    cov = a @ torch.diag((-2 * image.log_diag).exp().flatten()) @ a.T + sigma**2 * torch.eye(30, dtype=F64)
    ref = MultivariateNormal(a @ image.loc.flatten(), covariance_matrix=cov).log_prob(y[0])
    torch.testing.assert_close(tr.nodes["y"]["fn"].log_prob(y)[0], ref, rtol=1e-9, atol=1e-8)


# ------------------------------------------------------------------ PnP-HVAE
def test_closed_form_z_step_matches_a_numerical_minimiser():
    model = _tiny()
    x = torch.rand(1, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(5))
    temps = (0.6, 0.8, 0.95)
    zs = pnp_z_step(x, model, temps)
    # Teacher-force the chosen groups: each group's q and p then condition on the ones above.
    groups, _ = model.top_down(1, (8, 8), activations=model.encode(x), latents=zs)
    for g, t in zip(groups, temps):
        beta = 1 / t**2 - 1
        q, p = Normal(g.post_loc.detach(), g.post_scale.detach()), Normal(g.prior_loc.detach(), g.prior_scale.detach())
        v = torch.zeros_like(g.z, requires_grad=True)
        opt = torch.optim.LBFGS([v], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            f = -(q.log_prob(v).sum() + beta * p.log_prob(v).sum())
            f.backward()
            return f

        opt.step(closure)
        torch.testing.assert_close(g.z, v.detach(), rtol=1e-6, atol=1e-6)


def test_x_step_matches_a_dense_solve():
    model = _tiny()
    op, _, y, sigma = _matrix_problem()
    zs = model.sample_latents(1, generator=torch.Generator().manual_seed(0))
    gamma = 1.5
    post = hvae_x_step(zs, y, op, model, sigma, decoder_scale=gamma)
    image = model.decode(zs)
    d = (-2 * (-image.log_diag).exp().log()).exp().flatten() / gamma**2  # D / γ²
    a = _dense(op)
    lhs = a.T @ a / sigma**2 + torch.diag(d)
    rhs = a.T @ y[0] / sigma**2 + d * image.loc.flatten()
    torch.testing.assert_close(post.mean.flatten(), torch.linalg.solve(lhs, rhs), rtol=1e-5, atol=1e-6)
    assert post.solver == "cg" and post.converged


def test_bad_temperature_is_refused():
    model = _tiny()
    op = Identity((1, 8, 8))
    y = torch.rand(1, 1, 8, 8, dtype=F64)
    for bad in (0.0, 1.2, (0.9, 0.9)):
        with pytest.raises(ValueError, match="temperature"):
            map_estimate(y, op, model, 0.1, method="pnp-hvae", temperature=bad)
    with pytest.raises(ValueError, match="noise_std must be given"):
        map_estimate(y, op, model, None, method="pnp-hvae")
    with pytest.raises(TypeError, match="hierarchical VAEs run with method"):
        map_estimate(y, op, model, 0.1, method="jpmap")
    with pytest.raises(TypeError, match="hierarchical VAEs run with method"):
        sample_posterior(y, op, model, 0.1, method="laplace")


def test_pnp_hvae_lowers_its_objective_and_returns_the_best_iterate():
    prior = load_pretrained_hvae("digits-hvae")
    truth = digits("test", 28)[:1]
    op = Blur(28, gaussian_kernel(1.0))
    meas = simulate(op, truth, 0.05, seed=0)
    rec = map_estimate(meas.y, op, prior, meas.noise_std, method="pnp-hvae", progress=False)
    h = np.array(rec.objective_history)
    assert len(h) >= 3 and h[rec.best_iteration] == h.min()
    assert h.min() < h[0] - 100  # far below the first iterate (nats)
    assert (np.diff(h[:3]) < 0).all()  # the first steps go downhill
    with torch.no_grad():
        j = hvae_joint_objective(rec.x, rec.latents, meas.y, op, prior, meas.noise_std,
                                 rec.temperature)
    assert float(j.sum()) == pytest.approx(h.min(), rel=1e-5)
    assert rec.cg_converged and 0 < rec.contraction < 1.5
    # Better than the rough start it begins from.
    rough = op.adjoint(meas.y).clamp(0, 1)
    assert psnr(truth, rec.x, data_range=1.0) > psnr(truth, rough, data_range=1.0) + 3


def test_adam_runs_on_the_same_objective():
    model = _tiny()
    op, _, y, sigma = _matrix_problem()
    rec = map_estimate(y, op, model, sigma, method="hvae-adam",
                       config=HVAEMAPConfig(max_iterations=60, lr=0.02), progress=False)
    h = rec.objective_history
    assert h[-1] < h[0]
    with torch.no_grad():
        j = float(hvae_joint_objective(rec.x, rec.latents, y, op, model, sigma, rec.temperature).sum())
    # The recorded J is the one before the last step; close to the returned point's.
    assert j == pytest.approx(h[-1], rel=0.05)


# ------------------------------------------------------------------ posterior and registry
def test_hvae_svi_posterior_raises_the_elbo_and_exports():
    model = _tiny()
    op, truth, y, sigma = _matrix_problem()
    cfg = HVAEPosteriorConfig(steps=60, start=HVAEMAPConfig(max_iterations=5))
    post = sample_posterior(y, op, model, sigma, method="hvae-svi", num_samples=20, num_chains=2,
                            seed=0, config=cfg, progress=False)
    assert post.samples.shape == (2, 20, 1, 8, 8) and torch.isfinite(post.samples).all()
    for hist in post.extras["elbo_history"]:
        assert np.mean(hist[-10:]) > np.mean(hist[:10])
    assert post.std.min() > 0
    idata = post.to_arviz(truth=truth)
    assert idata.posterior["x"].shape == (2, 20, 1, 8, 8)
    # Seeded: the same call gives the same draws.
    again = sample_posterior(y, op, model, sigma, method="hvae-svi", num_samples=20, num_chains=2,
                             seed=0, config=cfg, progress=False)
    torch.testing.assert_close(post.samples, again.samples)


def test_cli_defaults_mirror_the_configs():
    assert HVAE_DEFAULTS == {"temperature": HVAEMAPConfig().temperature,
                             "max_iterations": HVAEMAPConfig().max_iterations,
                             "svi_steps": HVAEPosteriorConfig().steps}


def test_registry_refuses_the_wrong_kind_of_prior():
    op = ParallelBeamCT(28, 6)
    meas = simulate(op, digits("test", 28)[:1], 0.05, seed=0)
    with pytest.raises(ValueError, match="needs a hierarchical VAE prior"):
        run_method(MethodSettings("pnp-hvae", prior="digits-supn", progress=False), op, meas.y,
                   meas.noise_std, load_pretrained("digits-supn"))
    with pytest.raises(ValueError, match="needs a SUPN prior"):
        run_method(MethodSettings("jpmap", prior="digits-hvae", progress=False), op, meas.y,
                   meas.noise_std, load_pretrained_hvae("digits-hvae"))


@pytest.mark.parametrize("problem", PROBLEMS)
def test_pnp_hvae_runs_from_the_cli_on_every_problem(tmp_path, problem):
    out = tmp_path / "run"
    code = main(["reconstruct", "--problem", problem, "--method", "pnp-hvae", "--prior",
                 "digits-hvae", "--pnp-iterations", "3", "--hvae-temperature", "0.9,0.8,0.8,0.7",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "pnp-hvae" and metrics["hvae_config"]["max_iterations"] == 3
    assert metrics["hvae_config"]["temperature"] == [0.9, 0.8, 0.8, 0.7]
    assert np.isfinite(metrics["psnr"])


def test_cli_runs_hvae_svi(tmp_path):
    out = tmp_path / "svi"
    code = main(["reconstruct", "--problem", "deblur", "--method", "hvae-svi", "--prior",
                 "digits-hvae", "--pnp-iterations", "3", "--svi-steps", "3", "--num-samples", "3",
                 "--num-chains", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    assert np.load(out / "samples.npy").shape == (1, 3, 1, 28, 28)
    with pytest.raises(SystemExit):
        main(["reconstruct", "--method", "pnp-hvae", "--prior", "digits-hvae",
              "--hvae-temperature", "1.5", "--out", str(tmp_path / "bad")])


# ------------------------------------------------------------------ motion blur
def test_motion_kernel_closed_forms():
    k = motion_kernel(5, 0)
    ref = torch.zeros(5, 5, dtype=F64)
    ref[2] = 0.2
    torch.testing.assert_close(k, ref)
    torch.testing.assert_close(motion_kernel(7, 90), motion_kernel(7, 0).T)
    diag = motion_kernel(9, 30)
    assert diag.sum() == pytest.approx(1.0)
    torch.testing.assert_close(diag, diag.flip(0).flip(1))  # a centred segment is point-symmetric
    with pytest.raises(ValueError, match="length"):
        motion_kernel(0.5)


def test_cli_tiles_the_natural_image_prior_to_larger_images(tmp_path):
    out = tmp_path / "tiled"
    code = main(["reconstruct", "--problem", "deblur", "--image", "patch", "--size", "64",
                 "--method", "pnp-hvae", "--prior", "patches-hvae", "--pnp-iterations", "2",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    assert np.load(out / "reconstruction.npy").shape[-2:] == (64, 64)
    with pytest.raises(SystemExit):  # 30 is no multiple of the digit prior's factors
        main(["reconstruct", "--problem", "deblur", "--size", "30", "--method", "pnp-hvae",
              "--prior", "digits-hvae", "--out", str(tmp_path / "bad")])
