"""The collapsed Pyro program ``z → y`` (issue 11): dense references, Pyro's own inference on it.

Every check compares with an independent dense computation (torch
``MultivariateNormal`` on the explicit ``N × N`` covariance) or a closed form.
"""

from __future__ import annotations

import logging
import math

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc.util import initialize_model

from bayes_recon import operators as ops
from bayes_recon.inference._rng import pyro_seed
from bayes_recon.models.marginal import decode64
from bayes_recon.inference.sampling import SamplingConfig, _run_nuts, latent_hessian
from bayes_recon.models import CollapsedMarginal, collapsed_model

from test_supn_inference import dense_reference, measurement, real_vector, tiny_prior

logging.getLogger("pyro").setLevel(logging.ERROR)
F64 = torch.float64


def ops8():
    return {
        "blur": ops.Blur(8, ops.gaussian_kernel(1.0, 3)),
        "mri": ops.MRI(8, ops.radial_mask(8, 3)),
        "ct": ops.ParallelBeamCT(8, 5),
    }


def _trace(y, op, vae, sigma, z, **kwargs):
    cond = pyro.poutine.condition(collapsed_model, data={"z": z})
    return pyro.poutine.trace(cond).get_trace(y, op, vae, sigma, **kwargs)


@pytest.mark.parametrize("name", sorted(ops8()))
def test_y_site_log_density_equals_dense_marginal(name):
    """``log p(y | z)`` of the program's ``y`` site = ``MultivariateNormal(Aμ, AΣAᵀ + σ²I)`` (8×8, float64)."""
    vae, op, sigma = tiny_prior(size=8), ops8()[name], 0.1
    z, _, y = measurement(op, vae, sigma, batch=2)
    tr = _trace(y, op, vae, sigma, z, method="dense")
    site = tr.nodes["y"]
    free = pyro.poutine.trace(collapsed_model).get_trace(y, op, vae, sigma)
    assert free.nodes["y"]["is_observed"] and not free.nodes["z"]["is_observed"]
    assert isinstance(site["fn"], CollapsedMarginal)
    got = site["fn"].log_prob(site["value"])
    ref = dense_reference(z, y, op, vae, sigma)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    # the whole trace: the latent prior N(0, I) plus the marginal
    tr.compute_log_prob()
    total = sum(tr.nodes[n]["log_prob_sum"] for n in ("z", "y"))
    prior = -0.5 * z.square().sum() - z.numel() * 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(total, ref.sum() + prior, rtol=1e-9, atol=1e-9)


def test_potential_gradient_in_z_matches_finite_differences():
    """Pyro's own potential of the program (``initialize_model``): autograd vs central differences."""
    vae, op, sigma = tiny_prior(size=8), ops8()["mri"], 0.1
    z, _, y = measurement(op, vae, sigma, batch=1)
    _, potential_fn, _, _ = initialize_model(collapsed_model, (y, op, vae, sigma), {"method": "dense"},
                                             initial_params={"z": z})
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(potential_fn({"z": zz}), zz)
    eps = 1e-6
    fd = torch.stack([(potential_fn({"z": z + eps * e}) - potential_fn({"z": z - eps * e})) / (2 * eps)
                      for e in torch.eye(2, dtype=F64)[:, None, :]]).reshape(1, 2)
    # central differences: truncation O(ε²) and round-off ~1e-16·|U|/ε ≈ 1e-8 relative here.
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-6)


def test_predictive_x_draws_match_dense_conditional():
    """``Predictive(..., return_sites=["x"])`` draws whitened by the dense posterior are N(0, I).

    Fixed seed, n = 3000 draws at one z; 64 pixels: mean entries have sd 1/√n,
    covariance entries sd ≤ √(2/n); 5 sd bounds over ~2100 entries.
    """
    vae, op, sigma = tiny_prior(size=8), ops8()["ct"], 0.2
    z, _, y = measurement(op, vae, sigma, batch=1)
    n = 3000
    with pyro_seed(0):
        pred = Predictive(collapsed_model, posterior_samples={"z": z.expand(n, 1, 2)}, return_sites=["x"])
        xs = pred(y, op, vae, sigma, sample_x=True)["x"].reshape(n, -1)
    d = decode64(vae, z)
    a = op.to_dense(F64)
    lam = d.to_dense_precision()[0]
    p = lam + a.T @ a / sigma**2
    mean = torch.linalg.solve(p, lam @ d.loc.flatten() + a.T @ real_vector(y)[0] / sigma**2)
    e = (xs - mean) @ torch.linalg.cholesky(p)  # Lᵀ(x − m) ~ N(0, I) when Cov = (LLᵀ)⁻¹
    assert e.mean(0).abs().max() < 5 / math.sqrt(n)
    assert (e.T @ e / n - torch.eye(64, dtype=F64)).abs().max() < 5 * math.sqrt(2 / n)


def test_marginal_sample_matches_dense_marginal():
    """``CollapsedMarginal.sample`` (ancestral) whitened by the dense marginal covariance is N(0, I)."""
    vae, op, sigma = tiny_prior(size=8), ops8()["mri"], 0.1
    z, _, _ = measurement(op, vae, sigma, batch=1)
    n = 4000
    with pyro_seed(1):
        ys = CollapsedMarginal(z, op, vae, sigma).sample((n,)).reshape(n, -1)  # (n, m) real view
    d = decode64(vae, z)
    a = op.to_dense(F64)  # real view rows, in the order of real_vector
    mu = a @ d.loc.flatten()
    cov = a @ d.to_dense_covariance()[0] @ a.T + sigma**2 * torch.eye(a.shape[0], dtype=F64)
    ys = real_vector(torch.view_as_complex(ys.reshape(n, *op.range_shape, 2)))
    e = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), (ys - mu).T, upper=False).T
    m = e.shape[1]
    assert e.mean(0).abs().max() < 5 / math.sqrt(n)
    assert (e.T @ e / n - torch.eye(m, dtype=F64)).abs().max() < 5 * math.sqrt(2 / n)


def test_pyro_nuts_and_svi_run_on_the_program_unchanged():
    vae, op, sigma = tiny_prior(size=8), ops8()["blur"], 0.1
    z, _, y = measurement(op, vae, sigma, batch=1)
    with pyro_seed(0):
        mcmc = MCMC(NUTS(collapsed_model, max_tree_depth=4), num_samples=8, warmup_steps=8,
                    disable_progbar=True)
        mcmc.run(y, op, vae, sigma)
    assert mcmc.get_samples()["z"].shape == (8, 1, 2)
    pyro.clear_param_store()
    with pyro_seed(0):
        guide = AutoNormal(collapsed_model)
        svi = SVI(collapsed_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        losses = [svi.step(y, op, vae, sigma) for _ in range(60)]
    assert all(math.isfinite(v) for v in losses)
    # 60 Adam steps from the autoguide's default init must lower the (noisy) ELBO loss.
    assert sum(losses[-10:]) < sum(losses[:10])
    pyro.clear_param_store()


def test_run_nuts_on_the_program_is_plain_pyro_nuts():
    """``_run_nuts(model=collapsed_model)`` draws exactly what plain ``MCMC(NUTS(collapsed_model))`` draws."""
    vae, op, sigma = tiny_prior(size=8), ops8()["blur"], 0.1
    z, _, y = measurement(op, vae, sigma, batch=1)
    start, n, warmup, seed = z.clone(), 12, 10, 5
    counter = [0]
    got, stats, _ = _run_nuts(None, counter, start, n, warmup, seed, 5, model=collapsed_model,
                              model_args=(y, op, vae, sigma))
    with pyro_seed(seed):
        ref = MCMC(NUTS(collapsed_model, max_tree_depth=5, target_accept_prob=0.8), num_samples=n,
                   warmup_steps=warmup, initial_params={"z": start}, disable_progbar=True)
        ref.run(y, op, vae, sigma)
    assert torch.equal(got, ref.get_samples()["z"])
    assert (stats["num_steps"] >= 1).all() and (stats["num_steps"] <= 2**5 - 1).all()


def test_dense_mass_matrix_starts_at_the_inverse_hessian():
    """With adaptation off, Pyro's kernel uses exactly ``M⁻¹ = H⁻¹`` (read through its public property)."""
    vae, op, sigma = tiny_prior(size=8), ops8()["blur"], 0.1
    z, _, y = measurement(op, vae, sigma, batch=1)
    h = latent_hessian(z, y, op, vae, sigma, SamplingConfig(evidence="dense"))
    inv = torch.linalg.inv(h)
    seen = []
    from bayes_recon.inference import nuts as nuts_module

    kernel_cls = nuts_module._CountingNUTS
    original = kernel_cls.setup

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.inverse_mass_matrix[("z",)].clone())

    kernel_cls.setup = spy
    try:
        _run_nuts(None, [0], z, 3, 3, 0, 3, model=collapsed_model, model_args=(y, op, vae, sigma),
                  inverse_mass_matrix=inv, adapt_mass_matrix=False)
    finally:
        kernel_cls.setup = original
    torch.testing.assert_close(seen[0], inv, rtol=1e-12, atol=1e-12)


def test_bad_input():
    vae, op = tiny_prior(size=8), ops8()["blur"]
    _, _, y = measurement(op, vae, 0.1, batch=1)
    with pytest.raises(ValueError, match="z must have shape"):
        CollapsedMarginal(torch.zeros(1, 3, dtype=F64), op, vae, 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        collapsed_model(y, op, vae, -1.0)
    with pytest.raises(ValueError, match="domain_shape"):
        collapsed_model(y, ops.Blur(6, ops.gaussian_kernel(1.0, 3)), vae, 0.1)
    with pytest.raises(ValueError, match="max_tree_depth must be <= 10"):
        SamplingConfig(max_tree_depth=11)
