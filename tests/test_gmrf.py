"""The GMRF posterior against dense Gaussian algebra written here, independently of the package.

References: the prior covariance is the dense inverse of ``α (DᵀD + εI)`` with ``D`` read off
:func:`image_gradient` on unit images, the posterior is Gaussian conditioning with
``torch.distributions.MultivariateNormal``, the evidence is that distribution's ``log_prob``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

import bayes_recon.inference.gmrf as gmrf_module
from bayes_recon.app.cli import main
from bayes_recon.app.methods import ALL_METHODS, POSTERIOR_METHODS, MethodSettings, run_method
from bayes_recon.inference import (
    CholeskyJitterWarning,
    EvidenceConvergenceWarning,
    GMRFConfig,
    GMRFResult,
    Posterior,
    gmrf_posterior,
)
from bayes_recon.operators import MRI, Identity, MatrixOperator, image_gradient, radial_mask

F64 = torch.float64
SHAPE = (1, 8, 8)
N = 64
RIDGE = GMRFConfig().ridge


def gradient_matrix(shape=SHAPE) -> torch.Tensor:
    """``D`` ``(2N, N)`` from the library's own gradient convention, applied to unit images."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=F64).reshape(n, *shape)
    return image_gradient(eye).reshape(n, -1).T


def prior_precision(alpha, shape=SHAPE):
    d = gradient_matrix(shape)
    return alpha * (d.T @ d + RIDGE * torch.eye(d.shape[1], dtype=F64))


def dense_posterior(a, y, alpha, m0, sigma, shape=SHAPE):
    """Condition ``x ~ N(m0 1, Q⁻¹)`` on ``y = A x + N(0, σ²)``: mean, covariance, evidence."""
    n = a.shape[1]
    prior_cov = torch.linalg.inv(prior_precision(alpha, shape))
    mu0 = torch.full((n,), m0, dtype=F64)
    cov_y = a @ prior_cov @ a.T + sigma**2 * torch.eye(a.shape[0], dtype=F64)
    gain = prior_cov @ a.T @ torch.linalg.inv(cov_y)
    mean = mu0 + gain @ (y - a @ mu0)
    cov = prior_cov - gain @ a @ prior_cov
    evidence = MultivariateNormal(a @ mu0, covariance_matrix=cov_y).log_prob(y)
    return mean, cov, float(evidence)


def gls_mean(a, y, alpha, sigma, shape=SHAPE):
    """The ``m0`` maximising the evidence at fixed ``(α, σ)``: generalised least squares."""
    cov_y = (a @ torch.linalg.inv(prior_precision(alpha, shape)) @ a.T
             + sigma**2 * torch.eye(a.shape[0], dtype=F64))
    ones = a.sum(1)
    return float(ones @ torch.linalg.solve(cov_y, y) / (ones @ torch.linalg.solve(cov_y, ones)))


@pytest.fixture(scope="module")
def problem():
    """A random dense 40 × 64 operator and data from a smooth image, σ = 0.05."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, N, generator=gen, dtype=F64) / math.sqrt(N)
    u = torch.linspace(0, 1, 8, dtype=F64)
    x = (0.5 + 0.4 * torch.sin(3 * u)[:, None] * torch.cos(2 * u)[None, :]).reshape(N)
    sigma = 0.05
    y = a @ x + sigma * torch.randn(40, generator=gen, dtype=F64)
    return a, MatrixOperator(a, SHAPE), y, sigma


@pytest.fixture(scope="module")
def fixed_noise(problem):
    a, op, y, sigma = problem
    return gmrf_posterior(y[None], op, sigma, num_samples=20000, seed=3, progress=False)


def test_posterior_and_evidence_match_dense_gaussian_conditioning(problem, fixed_noise):
    a, _, y, sigma = problem
    res = fixed_noise
    assert isinstance(res, GMRFResult) and isinstance(res.posterior, Posterior)
    mean, cov, evidence = dense_posterior(a, y, res.alpha, res.prior_mean, sigma)
    torch.testing.assert_close(res.mean.reshape(N), mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(res.std.reshape(N), cov.diagonal().sqrt(), rtol=1e-8, atol=1e-12)
    assert res.log_evidence == pytest.approx(evidence, rel=1e-9, abs=1e-8)
    assert res.posterior.extras["log_evidence"] == res.log_evidence
    assert res.noise_std == sigma and res.posterior.noise_std == sigma and not res.noise_estimated
    assert res.posterior.hyperparameters == {"alpha": res.alpha, "prior_mean": res.prior_mean,
                                             "noise_std": sigma}
    assert res.posterior.method == "gmrf" and res.posterior.seed == 3
    assert res.converged and res.stop_reason == "converged" and res.jitter == 0.0


def test_evidence_optimum_beats_a_grid_over_alpha(problem, fixed_noise):
    a, _, y, sigma = problem
    res = fixed_noise
    # The profiled m0 is the generalised-least-squares mean at the fitted α.
    assert res.prior_mean == pytest.approx(gls_mean(a, y, res.alpha, sigma), rel=1e-7)
    log_alphas = np.linspace(-4.0, 8.0, 241)  # natural log, spacing 0.05
    values = []
    for la in log_alphas:
        alpha = math.exp(la)
        values.append(dense_posterior(a, y, alpha, gls_mean(a, y, alpha, sigma), sigma)[2])
    values = np.array(values)
    best = int(values.argmax())
    assert 0 < best < len(values) - 1, "the grid must bracket the optimum"
    assert abs(math.log(res.alpha) - log_alphas[best]) <= 0.05 + 1e-9
    assert res.log_evidence >= values.max() - 1e-9


def test_estimated_noise_optimum_beats_a_grid_over_alpha_and_sigma(problem):
    a, op, y, _ = problem
    res = gmrf_posterior(y[None], op, None, num_samples=10, progress=False)
    assert res.noise_estimated and res.converged and res.posterior.extras["noise_estimated"]
    _, _, evidence = dense_posterior(a, y, res.alpha, res.prior_mean, res.noise_std)
    assert res.log_evidence == pytest.approx(evidence, rel=1e-9, abs=1e-8)
    best = -math.inf
    for la in np.linspace(math.log(res.alpha) - 1.5, math.log(res.alpha) + 1.5, 31):
        for ls in np.linspace(math.log(res.noise_std) - 0.5, math.log(res.noise_std) + 0.5, 21):
            alpha, sigma = math.exp(la), math.exp(ls)
            best = max(best, dense_posterior(a, y, alpha, gls_mean(a, y, alpha, sigma), sigma)[2])
    assert res.log_evidence >= best - 1e-9


def test_draws_have_the_exact_mean_and_covariance(problem, fixed_noise):
    a, _, y, sigma = problem
    res = fixed_noise
    draws = res.posterior.samples
    assert draws.shape == (1, 20000, *SHAPE) and draws.dtype == F64
    s = draws.reshape(-1, N)
    mean, cov, _ = dense_posterior(a, y, res.alpha, res.prior_mean, sigma)
    sd = cov.diagonal().sqrt()
    # Monte Carlo: every pixel's mean within 5 standard errors, every covariance entry
    # within 6 standard errors sqrt((c_ii c_jj + c_ij²) / S) (fixed seed).
    assert bool(((s.mean(0) - mean).abs() <= 5 * sd / math.sqrt(s.shape[0])).all())
    emp = torch.cov(s.T)
    se = ((sd[:, None] * sd[None, :]) ** 2 + cov**2).sqrt() / math.sqrt(s.shape[0])
    assert bool(((emp - cov).abs() <= 6 * se).all())


def test_noise_estimated_by_the_evidence_is_close_to_the_truth():
    # Data simulated from the model itself: x from the GMRF prior, y = A x + σ ε.
    shape, n, m = (1, 12, 12), 144, 432
    gen = torch.Generator().manual_seed(7)
    alpha, m0, sigma = 50.0, 0.3, 0.02
    chol = torch.linalg.cholesky(prior_precision(alpha, shape))
    x = m0 + torch.linalg.solve_triangular(chol.T, torch.randn(n, 1, generator=gen, dtype=F64),
                                           upper=True)[:, 0]
    a = torch.randn(m, n, generator=gen, dtype=F64) / math.sqrt(n)
    y = a @ x + sigma * torch.randn(m, generator=gen, dtype=F64)
    res = gmrf_posterior(y[None], MatrixOperator(a, shape), None, num_samples=10, progress=False)
    # σ from m - N = 288 residual degrees of freedom: std error about 4 %; α from 144 pixels.
    assert res.noise_std == pytest.approx(sigma, rel=0.1)
    assert res.alpha == pytest.approx(alpha, rel=0.5)
    assert res.converged


def test_mri_matches_the_stacked_real_dense_reference():
    mask = radial_mask(8, 3)
    op = MRI(8, mask)
    # [Re; Im] of the centred orthonormal FFT, built with numpy from its definition.
    eye = np.eye(N).reshape(N, 8, 8)
    k = np.fft.fftshift(np.fft.fft2(eye, norm="ortho"), axes=(-2, -1)).reshape(N, -1)
    cols = k[:, mask.numpy().reshape(-1)]
    a = torch.from_numpy(np.concatenate([cols.real, cols.imag], axis=1).T.copy())
    gen = torch.Generator().manual_seed(2)
    u = torch.linspace(0, 1, 8, dtype=F64)
    x = (0.5 + 0.3 * u[:, None] * u[None, :]).reshape(1, 1, 8, 8)
    noise = 0.03 * torch.randn(2, *op.range_shape, generator=gen, dtype=F64)
    y = op(x) + torch.complex(noise[0], noise[1])[None]
    y_real = torch.cat([y.real.reshape(-1), y.imag.reshape(-1)])
    torch.testing.assert_close(y_real, a @ x.reshape(N) + noise.reshape(-1))  # same model
    for sigma in (0.03, None):
        res = gmrf_posterior(y, op, sigma, num_samples=10, progress=False)
        ref = gmrf_posterior(y_real[None], MatrixOperator(a, SHAPE), sigma, num_samples=10,
                             progress=False)
        mean, cov, evidence = dense_posterior(a, y_real, res.alpha, res.prior_mean, res.noise_std)
        torch.testing.assert_close(res.mean.reshape(N), mean, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(res.std.reshape(N), cov.diagonal().sqrt(), rtol=1e-8,
                                   atol=1e-12)
        assert res.log_evidence == pytest.approx(evidence, rel=1e-9, abs=1e-8)
        for key in ("alpha", "prior_mean", "noise_std", "log_evidence"):
            assert getattr(res, key) == pytest.approx(getattr(ref, key), rel=1e-6), key
        assert res.posterior.samples.dtype == F64  # y is complex128


def test_same_seed_same_draws_and_no_global_rng_change(problem):
    _, op, y, sigma = problem
    state = torch.get_rng_state()
    one = gmrf_posterior(y[None], op, sigma, num_samples=30, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    two = gmrf_posterior(y[None], op, sigma, num_samples=30, seed=5, progress=False)
    other = gmrf_posterior(y[None], op, sigma, num_samples=30, seed=6, progress=False)
    assert torch.equal(one.posterior.samples, two.posterior.samples)
    assert not torch.allclose(one.posterior.samples, other.posterior.samples)
    # float32 in, float32 out (computed in float64).
    low = gmrf_posterior(y[None].float(), op, sigma, num_samples=30, seed=5, progress=False)
    assert low.posterior.samples.dtype == low.mean.dtype == low.std.dtype == torch.float32
    torch.testing.assert_close(low.mean.double(), one.mean, rtol=1e-4, atol=1e-5)


def test_a_maximum_on_a_bound_warns_and_is_not_converged(problem):
    a, op, y, sigma = problem
    cfg = GMRFConfig(log10_weight_bounds=(3.0, 4.0))  # far above the optimum
    with pytest.warns(EvidenceConvergenceWarning, match="lower_bound"):
        res = gmrf_posterior(y[None], op, sigma, cfg, num_samples=5, progress=False)
    assert not res.converged and res.stop_reason == "lower_bound"
    assert not res.posterior.extras["converged"]
    beta_ref = float((a * a).sum()) / N  # trace(AᵀA) / N
    assert res.alpha * sigma**2 == pytest.approx(beta_ref * 1e3, rel=1e-6)


def test_jitter_is_warned_and_recorded(problem, monkeypatch):
    _, op, y, sigma = problem
    real = gmrf_module.robust_cholesky

    def indefinite(matrix, name, **kwargs):
        # Shift P just below singular (smallest eigenvalue -1e-9 x mean diagonal), so that
        # only diagonal jitter can factorise it.
        if name.startswith("posterior"):
            shift = torch.linalg.eigvalsh(matrix)[0] + 1e-9 * matrix.diagonal().mean()
            matrix = matrix - shift * torch.eye(matrix.shape[0], dtype=matrix.dtype)
        return real(matrix, name, **kwargs)

    monkeypatch.setattr(gmrf_module, "robust_cholesky", indefinite)
    with pytest.warns(CholeskyJitterWarning, match="posterior precision"):
        res = gmrf_posterior(y[None], op, sigma, num_samples=5, progress=False)
    assert res.jitter > 0 and res.posterior.extras["jitter"] == res.jitter
    assert bool(torch.isfinite(res.posterior.samples).all() and torch.isfinite(res.std).all())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"y": torch.zeros(1, 41, dtype=F64)}, ValueError, r"y must have shape \(1, 40\)"),
    ({"y": torch.zeros(40, dtype=F64)}, ValueError, "y must have shape"),
    ({"y": torch.full((1, 40), math.nan, dtype=F64)}, ValueError, "y contains NaN"),
    ({"y": torch.zeros(1, 40, dtype=torch.complex128)}, TypeError, "y must be a real"),
    ({"noise_std": 0.0}, ValueError, "noise_std must be finite and > 0"),
    ({"noise_std": -0.1}, ValueError, "noise_std"),
    ({"noise_std": math.inf}, ValueError, "noise_std"),
    ({"noise_std": "0.1"}, TypeError, "noise_std must be a number"),
    ({"num_samples": 0}, ValueError, "num_samples"),
    ({"config": GMRFConfig(max_pixels=63)}, ValueError, "max_pixels"),
    ({"config": {"ridge": 1e-3}}, TypeError, "config must be a GMRFConfig"),
])
def test_bad_input_is_rejected_naming_the_argument(problem, kwargs, error, match):
    _, op, y, sigma = problem
    args = {"y": y[None], "op": op, "noise_std": sigma, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        gmrf_posterior(**args)


def test_too_many_pixels_and_bad_config_are_rejected():
    op = Identity((1, 129, 128))  # 16512 > 16384 pixels: refused before anything is allocated
    with pytest.raises(ValueError, match=r"N = 16512 pixels.*max_pixels = 16384"):
        gmrf_posterior(torch.zeros(1, 1, 129, 128), op, 0.1, progress=False)
    with pytest.raises(ValueError, match="ridge"):
        GMRFConfig(ridge=0.0)
    with pytest.raises(ValueError, match="log10_weight_bounds"):
        GMRFConfig(log10_weight_bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="y is identically zero"):
        gmrf_posterior(torch.zeros(1, 1, 4, 4), Identity((1, 4, 4)), None, progress=False)


def test_registry_runs_gmrf(problem):
    _, op, y, sigma = problem
    assert "gmrf" in ALL_METHODS and "gmrf" in POSTERIOR_METHODS
    out = run_method(MethodSettings(method="gmrf", num_samples=50, progress=False), op, y[None],
                     sigma)
    assert isinstance(out.posterior, Posterior) and out.posterior.samples.shape == (1, 50, *SHAPE)
    assert out.noise_std == sigma
    torch.testing.assert_close(out.x, out.posterior.mean[None])
    direct = gmrf_posterior(y[None], op, sigma, num_samples=50, seed=0, progress=False)
    torch.testing.assert_close(out.posterior.samples, direct.posterior.samples)
    assert out.info["log_evidence"] == pytest.approx(direct.log_evidence)
    est = run_method(MethodSettings(method="gmrf", noise="estimate", num_samples=20,
                                    progress=False), op, y[None], sigma)
    assert est.noise_std != sigma and est.posterior.extras["noise_estimated"]
    assert MethodSettings(method="gmrf").record()["num_samples"] == 1000


def test_cli_reconstructs_with_gmrf(tmp_path, capsys):
    out = tmp_path / "r"
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvidenceConvergenceWarning)
        code = main(["reconstruct", "--problem", "ct", "--angles", "10", "--size", "16",
                     "--method", "gmrf", "--num-samples", "20", "--out", str(out),
                     "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert np.load(out / "samples.npy").shape[-3:] == (1, 16, 16)
    assert (out / "posterior.nc").exists()
