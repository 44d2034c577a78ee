"""The parametric-bootstrap spread factor (``inference/bootstrap_scale.py``) and its use in ``linearised_dip``."""

import math

import pytest
import torch

from bayes_recon.data import digits, simulate
from bayes_recon.inference import LinearisedDIPConfig, linearised_dip
from bayes_recon.inference.bootstrap_scale import (
    BootstrapScale,
    bootstrap_std_scale,
    gaussian_interval_halfwidth,
    scale_spread,
)
from bayes_recon.models.unet import UNetConfig
from bayes_recon.operators import MRI, ParallelBeamCT
from bayes_recon.operators.simple import Identity
from bayes_recon.posterior import Posterior


def test_halfwidth_closed_form():
    # P(|N(0,1)| < 1.959964) = 0.95, < 1.644854 = 0.90, < 0.674490 = 0.5 (normal tables).
    for level, z in ((0.95, 1.959964), (0.9, 1.644854), (0.5, 0.674490)):
        assert gaussian_interval_halfwidth(level) == pytest.approx(z, abs=1e-6)


@pytest.mark.parametrize("claimed, level", [(0.05, 0.9), (0.2, 0.9), (0.1, 0.5)])
def test_scale_of_least_squares_denoiser(claimed, level):
    """Identity operator, ``x̂ = y``: the bootstrap error is exactly σ·ε, so ``c = σ / claimed``.

    Tolerance: 16,384 pooled z values; the sample quantile's relative error is below 2 % at 4
    standard errors for these levels.
    """
    op = Identity((1, 64, 64))
    x_hat = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    res = bootstrap_std_scale(lambda y, k: y, op, x_hat, torch.full((1, 64, 64), claimed), 0.1,
                              fits=4, level=level, progress=False)
    assert isinstance(res, BootstrapScale) and res.fits == 4 and res.level == level
    assert res.scale == pytest.approx(0.1 / claimed, rel=0.02)
    assert res.z_rms == pytest.approx(0.1 / claimed, rel=0.02)
    # Coverage of the unscaled interval: P(|ε| < z_level · claimed / σ).
    expected = math.erf(gaussian_interval_halfwidth(level) * claimed / 0.1 / math.sqrt(2))
    assert res.coverage_before == pytest.approx(expected, abs=0.015)


def test_complex_range_noise_per_real_part():
    """Fully sampled MRI: ``Re F^H`` of complex noise with σ per part has std σ per pixel."""
    op = MRI(32, torch.ones(32, 32, dtype=torch.bool))
    res = bootstrap_std_scale(lambda y, k: op.adjoint(y), op, torch.zeros(1, 1, 32, 32),
                              torch.full((1, 32, 32), 0.5), 0.25, fits=16, progress=False)
    assert res.scale == pytest.approx(0.5, rel=0.03)


def test_seeded_and_uses_the_index():
    op = Identity((1, 16, 16))
    seen = []

    def rec(y, k):
        seen.append(k)
        return 0.5 * y

    a = bootstrap_std_scale(rec, op, torch.zeros(1, 1, 16, 16), torch.ones(1, 16, 16), 1.0, fits=3,
                            seed=5, progress=False)
    b = bootstrap_std_scale(rec, op, torch.zeros(1, 1, 16, 16), torch.ones(1, 16, 16), 1.0, fits=3,
                            seed=5, progress=False)
    c = bootstrap_std_scale(rec, op, torch.zeros(1, 1, 16, 16), torch.ones(1, 16, 16), 1.0, fits=3,
                            seed=6, progress=False)
    assert seen == [0, 1, 2] * 3
    assert a.scale == b.scale and a.scale != c.scale


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(std=torch.zeros(1, 8, 8)), ValueError, "std must be positive"),
    (dict(std=torch.ones(1, 8, 7)), ValueError, "std must have shape"),
    (dict(estimate=torch.zeros(1, 1, 8, 7)), ValueError, "estimate must have shape"),
    (dict(noise_std=0.0), ValueError, "noise_std"),
    (dict(fits=0), ValueError, "fits"),
    (dict(level=1.0), ValueError, "level must be a probability"),
    (dict(reconstruct=lambda y, k: y[..., :4]), ValueError, "reconstruct must return a tensor of shape"),
    (dict(reconstruct=lambda y, k: y * float("nan")), ValueError, "bootstrap reconstruction 0 is not finite"),
    (dict(reconstruct="y"), TypeError, "reconstruct must be callable"),
])
def test_bad_input(kwargs, exc, words):
    args = dict(reconstruct=lambda y, k: y, op=Identity((1, 8, 8)), estimate=torch.zeros(1, 1, 8, 8),
                std=torch.ones(1, 8, 8), noise_std=0.1)
    args.update(kwargs)
    rest = {k: args.pop(k) for k in ("fits", "level") if k in args}
    with pytest.raises(exc, match=words):
        bootstrap_std_scale(args["reconstruct"], args["op"], args["estimate"], args["std"], args["noise_std"],
                            progress=False, **rest)


def test_scale_spread_keeps_mean_and_provenance():
    post = Posterior(torch.randn(2, 100, 1, 4, 4, generator=torch.Generator().manual_seed(0)), method="m",
                     noise_std=0.1, seed=3, hyperparameters={"a": 1.0}, note="kept")
    wide = scale_spread(scale_spread(post, 2.0), 1.5)
    torch.testing.assert_close(wide.mean, post.mean)
    torch.testing.assert_close(wide.std, 3.0 * post.std)
    assert (wide.method, wide.noise_std, wide.seed, wide.hyperparameters) == ("m", 0.1, 3, {"a": 1.0})
    assert wide.extras == {"note": "kept", "std_scale": 3.0}
    with pytest.raises(ValueError, match="factor"):
        scale_spread(post, -1.0)
    with pytest.raises(TypeError, match="posterior must be a Posterior"):
        scale_spread(torch.zeros(3), 2.0)


def _tiny_problem():
    op = ParallelBeamCT(12, 8)
    x = torch.nn.functional.interpolate(digits("test", 28)[:1], size=12, mode="bilinear")
    meas = simulate(op, x, 0.05, seed=0)
    cfg = dict(iterations=60, lr=1e-3, num_samples=200, network=UNetConfig(channels=4, skip_channels=(0, 4, 4)))
    return op, meas, cfg


@pytest.mark.parametrize("min_scale", [0.0, 1.0, 50.0])
def test_linearised_dip_bootstrap_rescales_the_laplace_posterior(min_scale):
    """Same seed: ``calibration="bootstrap"`` is the ``"none"`` posterior with its spread about ``x*``
    × max(min, factor), obtained by rescaling the prior and the noise."""
    op, meas, cfg = _tiny_problem()
    plain = linearised_dip(meas.y, op, meas.noise_std, LinearisedDIPConfig(calibration="none", **cfg),
                           progress=False)
    boot = linearised_dip(meas.y, op, meas.noise_std,
                          LinearisedDIPConfig(calibration="bootstrap", bootstrap_fits=2,
                                              bootstrap_min_scale=min_scale, **cfg),
                          progress=False)
    assert plain.bootstrap is None and plain.timings["calibration"] == 0.0
    assert "std_scale" not in plain.posterior.extras
    c = max(min_scale, boot.bootstrap.scale)
    assert boot.posterior.extras["std_scale"] == c and boot.bootstrap.fits == 2 and boot.bootstrap.scale != 1.0
    # Every draw's distance from x* is c times the unscaled one (same seed, same ε) ...
    x_star = plain.fit.x[0]
    torch.testing.assert_close(boot.posterior.samples - x_star, c * (plain.posterior.samples - x_star),
                               rtol=1e-4, atol=1e-6 * c)  # float32 draws
    # ... because the prior's variances and the noise variance were scaled by c², which the
    # Laplace's stored hyperparameters (and so its evidence) now say.
    before, after = plain.laplace.hyperparameters, boot.laplace.hyperparameters
    for name, value in before.items():
        if name.startswith("variance/"):
            assert after[name] == pytest.approx(c**2 * value, rel=1e-9)
        elif name.startswith("lengthscale/"):
            assert after[name] == pytest.approx(value, rel=1e-9)
    assert after["noise_std"] == pytest.approx(c * before["noise_std"], rel=1e-9)
    assert boot.timings["calibration"] == boot.bootstrap.seconds > 0


@pytest.mark.parametrize("field, value, exc, words", [
    ("calibration", "isotonic", ValueError, "config.calibration must be one of"),
    ("bootstrap_fits", 0, ValueError, "config.bootstrap_fits"),
    ("bootstrap_min_scale", -1.0, ValueError, "config.bootstrap_min_scale"),
    ("calibration_level", 1.5, ValueError, "config.calibration_level must be a probability"),
])
def test_linearised_dip_rejects_bad_calibration_settings(field, value, exc, words):
    op, meas, cfg = _tiny_problem()
    with pytest.raises(exc, match=words):
        linearised_dip(meas.y, op, meas.noise_std, LinearisedDIPConfig(**{field: value}, **cfg), progress=False)
