"""The image-space discrepancy of the linearised DIP (inference/linearised/discrepancy.py).

Every quantity is checked against a dense computation of the same Gaussian model
``x = x* + F w + δ``, ``y = A x + ε`` with ``A δ`` independent per measurement
(variance ``τ² diag(A Aᵀ)``), built from the Laplace's own dense posterior covariance.
"""

from __future__ import annotations

import math

import pytest
import torch

from bayes_recon.data import digits, simulate
from bayes_recon.inference.dip import fit_dip
from bayes_recon.inference.linearised import LaplaceConfig, LinearisedLaplace
from bayes_recon.inference.linearised.discrepancy import DiscrepancyModel, HeldoutEvidence, fit_discrepancy
from bayes_recon.inference.linearised.pipeline import LinearisedDIPConfig, linearised_dip
from bayes_recon.models.unet import UNetConfig
from bayes_recon.operators import MRI, Blur, Identity, ParallelBeamCT
from bayes_recon.operators.base import LinearOperator
from bayes_recon.operators.holdout import split_measurements

SMALL = UNetConfig(scales=2, channels=4, skip_channels=(0, 4))


@pytest.mark.parametrize("make", [lambda: ParallelBeamCT(10, 6, channels=2), lambda: Blur(9, torch.rand(3, 3)),
                                  lambda: MRI(8, torch.rand(8, 8) > 0.5)])
def test_gram_diagonal_matches_dense(make):
    op = make()
    dense = (op.to_dense() ** 2).sum(1)
    assert torch.allclose(op.gram_diagonal(), dense, rtol=1e-10, atol=1e-12)
    # The generic (unit-adjoint) version agrees with any override, in any chunking.
    assert torch.allclose(LinearOperator.gram_diagonal(op, chunk_size=7), dense, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def fold_problem():
    """A 12² digit, 8-angle CT, fold 0 of 4 held out; the Laplace fitted to the rest (exact path)."""
    x = torch.nn.functional.interpolate(digits("train", 28)[:1], size=12, mode="bilinear")
    op = ParallelBeamCT(12, 8)
    meas = simulate(op, x, 0.05, seed=0)
    split = split_measurements(op, 0, 4)
    y_fit = split.fit_measurement(meas.y)
    fit = fit_dip(y_fit, split.fit_op, 3 * meas.noise_std, 60, seed=0, network_config=SMALL, progress=False)
    la = LinearisedLaplace(fit, split.fit_op, noise_std=meas.noise_std, config=LaplaceConfig(path="exact"),
                           progress=False)
    la.optimise_evidence(30, predcp_scale=20.0, progress=False)
    return la, split, meas


def _dense(la, tau):
    """Dense posterior covariance of the model with discrepancy ``τ`` (the Laplace's ``K`` and ``A``)."""
    a = la.op.to_dense()
    sigma2 = float(la.log_noise_variance.exp())
    # The prior K from the Laplace's own dense posterior covariance at τ = 0: K = (C⁻¹ - AᵀA/σ²)⁻¹
    # is ill-conditioned, so build K directly from the kernel pieces instead.
    k = la.kernel.image_kernel(la.log_lengthscale, la.log_variance)
    d = torch.diag(sigma2 + tau**2 * (a * a).sum(1))
    s = a @ k @ a.T + d
    cov = k - k @ a.T @ torch.linalg.solve(s, a @ k)
    return k, cov + tau**2 * torch.eye(k.shape[0], dtype=k.dtype)


def test_variance_matches_dense_and_laplace(fold_problem):
    la, _, _ = fold_problem
    model = DiscrepancyModel(la)
    # τ = 0 is the Laplace itself.
    assert torch.allclose(model.variance(0.0), la.posterior_covariance().diagonal(), rtol=1e-6, atol=1e-10)
    for tau in (0.01, 0.1):
        _, cov = _dense(la, tau)
        assert torch.allclose(model.variance(tau), cov.diagonal(), rtol=1e-6, atol=1e-10)


def test_heldout_log_prob_matches_multivariate_normal(fold_problem):
    la, split, meas = fold_problem
    model = DiscrepancyModel(la)
    held = split.held_op
    ah = held.to_dense()
    y_h = split.held_measurement(meas.y).reshape(-1).double()
    sigma2 = float(la.log_noise_variance.exp())
    x_star = la.fit.x.reshape(-1).double()
    for tau in (0.0, 0.03, 0.2):
        _, cov = _dense(la, tau)
        post = cov - tau**2 * torch.eye(cov.shape[0], dtype=cov.dtype)    # δ enters the held data via D_h only
        pred = ah @ post @ ah.T + torch.diag(sigma2 + tau**2 * (ah * ah).sum(1))
        ref = torch.distributions.MultivariateNormal(ah @ x_star, covariance_matrix=pred).log_prob(y_h)
        evidence = model.heldout_evidence(held, split.held_measurement(meas.y))
        assert evidence.log_prob(tau) == pytest.approx(float(ref), abs=1e-6)


def test_samples_have_the_model_moments(fold_problem):
    la, _, _ = fold_problem
    model = DiscrepancyModel(la)
    tau, s = 0.05, 20000
    draws = model.sample(tau, s, torch.Generator().manual_seed(0))
    var = model.variance(tau)
    # Sample mean within 5 standard errors of x*, sample variance within 6 % (20000 draws: se ≈ 1 %).
    assert ((draws.mean(0) - model.x_star).abs() <= 5 * (var / s).sqrt()).all()
    assert torch.allclose(draws.var(0), var, rtol=0.06)


def test_fit_discrepancy_maximises_the_conditional_evidence(fold_problem):
    la, split, meas = fold_problem
    model = DiscrepancyModel(la)
    y_h = split.held_measurement(meas.y)
    evidence = model.heldout_evidence(split.held_op, y_h)
    res = fit_discrepancy(evidence)
    grid = [0.0] + [math.exp(t) for t in torch.linspace(math.log(1e-4), 0.0, 41).tolist()]
    best = max(evidence.log_prob(t) for t in grid)
    assert res.log_conditional_evidence >= best - 1e-3
    assert res.log_conditional_evidence == pytest.approx(evidence.log_prob(res.std))
    assert res.num_heldout == split.held_op.range_size and res.num_folds == 1
    # The interval's ends are where the evidence is χ²₁(0.95)/2 = 1.92 nats below its maximum.
    lower, upper = res.interval
    assert lower <= res.std <= upper
    for end in (lower, upper):
        if 0 < end < 10 * float(model.x_star.pow(2).mean().sqrt()):
            assert evidence.log_prob(end) == pytest.approx(res.log_conditional_evidence - 1.9207, abs=0.02)
    if lower == 0:
        assert evidence.log_prob(0.0) >= res.log_conditional_evidence - 1.9207


def test_fit_discrepancy_recovers_a_planted_discrepancy():
    """Held-out pixels simulated from the model with τ₀ = 0.1: the fitted τ is within 25 % (fixed seed)."""
    op = Identity((1, 16, 16))
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 1, 16, 16); x[..., 4:12, 4:12] = 1.0
    split = split_measurements(op, 0, 2, scheme="random", seed=0)
    y_fit = split.fit_measurement(x + 0.05 * torch.randn(x.shape, generator=gen))
    fit = fit_dip(y_fit, split.fit_op, 1e-3, 40, seed=0, network_config=SMALL, progress=False)
    la = LinearisedLaplace(fit, split.fit_op, noise_std=0.05, config=LaplaceConfig(path="exact"), progress=False)
    la.optimise_evidence(30, progress=False)
    model = DiscrepancyModel(la)
    tau0 = 0.1
    truth = model.sample(tau0, 1, gen).reshape(1, 1, 16, 16)        # a draw of x* + F w + δ
    y_held = split.held_op(truth.float()) + 0.05 * torch.randn(split.held_op.range_shape, generator=gen)
    res = fit_discrepancy(model.heldout_evidence(split.held_op, y_held))
    assert res.std == pytest.approx(tau0, rel=0.25)
    assert res.log_conditional_evidence > res.log_conditional_evidence_without
    assert res.interval[0] < tau0 < res.interval[1]


def test_fit_discrepancy_sums_the_folds(fold_problem):
    """Two folds: the fitted τ maximises the sum of their evidences, each fold's own maximiser is reported."""
    la, split, meas = fold_problem
    model = DiscrepancyModel(la)
    e0 = model.heldout_evidence(split.held_op, split.held_measurement(meas.y))
    # A second fold: the same held-out operator with a perturbed measurement (another noise draw).
    gen = torch.Generator().manual_seed(5)
    y1 = split.held_measurement(meas.y) + 0.5 * meas.noise_std * torch.randn(
        split.held_measurement(meas.y).shape, generator=gen)
    e1 = model.heldout_evidence(split.held_op, y1)
    both = fit_discrepancy([e0, e1])
    grid = [0.0] + [math.exp(t) for t in torch.linspace(math.log(1e-4), 0.0, 61).tolist()]
    best = max(e0.log_prob(t) + e1.log_prob(t) for t in grid)
    assert both.log_conditional_evidence >= best - 1e-3
    assert both.log_conditional_evidence == pytest.approx(e0.log_prob(both.std) + e1.log_prob(both.std))
    assert both.num_folds == 2 and both.num_heldout == 2 * e0.num_heldout
    assert both.fold_std == [fit_discrepancy(e0).std, fit_discrepancy(e1).std]
    with pytest.raises(TypeError, match="HeldoutEvidence"):
        fit_discrepancy([])
    with pytest.raises(TypeError, match="HeldoutEvidence"):
        fit_discrepancy(model)


def test_model_refuses_what_it_cannot_do(fold_problem):
    la, split, meas = fold_problem
    model = DiscrepancyModel(la)
    with pytest.raises(ValueError, match="y_held must have shape"):
        model.heldout_evidence(split.held_op, meas.y)
    with pytest.raises(ValueError, match="std"):
        model.variance(-1.0)
    with pytest.raises(ValueError, match="bounds"):
        fit_discrepancy(model.heldout_evidence(split.held_op, split.held_measurement(meas.y)), bounds=(0.1, 0.01))
    lin = LinearisedLaplace(la.fit, la.op, noise_std=0.05, config=LaplaceConfig(path="exact", expansion="linearised"),
                            progress=False)
    with pytest.raises(ValueError, match="expansion must be 'fit'"):
        DiscrepancyModel(lin)


def test_pipeline_heldout_posterior_is_the_discrepancy_model():
    """``calibration="heldout"``: the returned draws have the full fit's discrepancy variance, τ recorded."""
    x = torch.nn.functional.interpolate(digits("train", 28)[1:2], size=12, mode="bilinear")
    op = ParallelBeamCT(12, 8)
    meas = simulate(op, x, 0.05, seed=1)
    cfg = LinearisedDIPConfig(iterations=60, num_samples=4000, evidence_iterations=20, network=SMALL,
                              laplace=LaplaceConfig(path="exact"))
    res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=1, progress=False)
    tau = res.discrepancy.std
    assert res.posterior.hyperparameters["discrepancy_std"] == tau
    assert res.posterior.extras["discrepancy"]["std"] == tau and res.bootstrap is None
    var = DiscrepancyModel(res.laplace).variance(tau).reshape(res.posterior.std.shape)
    assert torch.allclose(res.posterior.std.double() ** 2, var, rtol=0.12)
    assert res.timings["calibration"] == res.discrepancy.seconds > 0


@pytest.mark.parametrize("field,value,match", [("heldout_folds", 1, "config.heldout_folds"),
                                               ("heldout_scheme", "diagonal", "config.heldout_scheme"),
                                               ("heldout_max_fits", 5, "config.heldout_max_fits"),
                                               ("heldout_max_fits", 0, "config.heldout_max_fits"),
                                               ("heldout_tolerance", -1.0, "config.heldout_tolerance")])
def test_pipeline_rejects_bad_heldout_settings(field, value, match):
    op = ParallelBeamCT(12, 8)
    with pytest.raises(ValueError, match=match):
        linearised_dip(torch.zeros(1, *op.range_shape), op, 0.1, LinearisedDIPConfig(**{field: value}),
                       progress=False)


def test_pipeline_heldout_fold_keeps_the_full_fits_path(monkeypatch):
    """The fold's Laplace is built with the full fit's path and memory budget (not re-chosen)."""
    import bayes_recon.inference.linearised.pipeline as pipeline

    seen = []
    real = pipeline.LinearisedLaplace

    def recording(fit, op, noise_std=None, config=None, progress=True):
        la = real(fit, op, noise_std=noise_std, config=config, progress=progress)
        seen.append((config.path, config.memory_budget, la.path, la.memory_budget))
        return la

    monkeypatch.setattr(pipeline, "LinearisedLaplace", recording)
    x = torch.nn.functional.interpolate(digits("train", 28)[2:3], size=12, mode="bilinear")
    op = ParallelBeamCT(12, 8)
    meas = simulate(op, x, 0.05, seed=2)
    cfg = LinearisedDIPConfig(iterations=20, num_samples=50, evidence_iterations=5, network=SMALL,
                              laplace=LaplaceConfig(path="subspace", subspace_rank=64))
    res = pipeline.linearised_dip(meas.y, op, meas.noise_std, cfg, progress=False)
    (full_req, _, full_path, full_budget), *folds = seen
    assert full_req == "subspace" and full_path == "subspace"
    assert len(folds) == res.discrepancy.num_folds >= 1
    for fold_req, fold_budget_req, fold_path, _ in folds:
        assert fold_req == fold_path == full_path and fold_budget_req == full_budget


@pytest.mark.parametrize("tolerance,max_fits", [(math.inf, None), (0.0, 3), (0.5, None)])
def test_pipeline_fits_folds_until_tau_is_determined(tolerance, max_fits):
    """``heldout_tolerance``: inf → one fold; 0 → every allowed fold; otherwise the stop rule holds."""
    x = torch.nn.functional.interpolate(digits("train", 28)[3:4], size=12, mode="bilinear")
    op = ParallelBeamCT(12, 8)
    meas = simulate(op, x, 0.05, seed=3)
    cfg = LinearisedDIPConfig(iterations=30, num_samples=200, evidence_iterations=10, network=SMALL,
                              laplace=LaplaceConfig(path="exact"), heldout_tolerance=tolerance,
                              heldout_max_fits=max_fits)
    res = linearised_dip(meas.y, op, meas.noise_std, cfg, seed=3, progress=False)
    disc = res.discrepancy
    lower, upper = disc.interval
    variance = float(res.laplace.sample(200, seed=3).std.double().pow(2).mean())
    determined = upper**2 - lower**2 <= tolerance * (variance + disc.std**2)
    if tolerance == math.inf:
        assert disc.num_folds == 1
    elif tolerance == 0.0:
        assert disc.num_folds == 3 and len(disc.fold_std) == 3
    else:
        assert disc.num_folds == cfg.heldout_folds or determined
    assert res.posterior.extras["discrepancy"]["num_folds"] == disc.num_folds


def test_pipeline_heldout_refuses_the_scalable_path():
    x = torch.nn.functional.interpolate(digits("train", 28)[2:3], size=12, mode="bilinear")
    op = ParallelBeamCT(12, 8)
    meas = simulate(op, x, 0.05, seed=2)
    cfg = LinearisedDIPConfig(iterations=5, network=SMALL, laplace=LaplaceConfig(path="scalable"))
    with pytest.raises(ValueError, match="calibration='heldout' needs the exact or subspace path"):
        linearised_dip(meas.y, op, meas.noise_std, cfg, progress=False)


def test_mean_variance_is_the_mean_of_the_variance_map(fold_problem):
    la, _, _ = fold_problem
    model = DiscrepancyModel(la)
    for tau in (0.0, 0.07):
        assert model.mean_variance(tau) == pytest.approx(float(model.variance(tau).mean()), rel=1e-9)


def test_nested_evidence_is_the_folds_evidence_at_the_shifted_tau(fold_problem):
    """With ``full``, fold variance ``τ² + e``, ``e = mean((x*_fold − x*_full)²) − (v̄_fold − v̄_full)``."""
    la, split, meas = fold_problem
    fold = DiscrepancyModel(la)
    # A "full" fit: the same Laplace pieces with x* moved (a stand-in, so e is known by hand).
    full = DiscrepancyModel(la)
    gen = torch.Generator().manual_seed(3)
    full.x_star = fold.x_star + 0.04 * torch.randn(fold.x_star.shape, generator=gen, dtype=torch.float64)
    y_h = split.held_measurement(meas.y)
    plain = fold.heldout_evidence(split.held_op, y_h)
    nested = fold.heldout_evidence(split.held_op, y_h, full=full)
    expected = float((fold.x_star - full.x_star).pow(2).mean())      # same Laplace: v̄ terms cancel
    assert nested.excess_variance == pytest.approx(expected, rel=1e-9)
    for tau in (0.0, 0.02, 0.1):
        assert nested.log_prob(tau) == pytest.approx(plain.log_prob(math.sqrt(tau**2 + expected)), abs=1e-9)
    # A negative e: the fold's τ is 0 up to τ = sqrt(-e), and the fit finds the maximiser above the plateau.
    shrunk = HeldoutEvidence(**{**plain.__dict__, "excess_variance": -0.02**2})
    best_plain = fit_discrepancy(plain)
    best = fit_discrepancy(shrunk)
    if best_plain.std > 0:
        assert best.std == pytest.approx(math.sqrt(best_plain.std**2 + 0.02**2), rel=1e-2)
    assert shrunk.log_prob(0.0) == pytest.approx(shrunk.log_prob(0.019), abs=1e-12)
    with pytest.raises(TypeError, match="full must be a DiscrepancyModel"):
        fold.heldout_evidence(split.held_op, y_h, full=la)


def test_nested_correction_is_unbiased_for_posterior_means():
    """For exact posterior means of nested data sets, ``e`` has mean 0 (the identity behind the correction).

    A linear-Gaussian model, x ~ N(0, K), y = A x + ε, fold = 3/4 of the rows: over 400 draws the
    mean of ``mean((m_fold − m_full)²) − (v̄_fold − v̄_full)`` is within 4 standard errors of 0,
    while ``mean((m_fold − x)²) − mean((m_full − x)²) − mean((m_fold − m_full)²)`` is too.
    """
    gen = torch.Generator().manual_seed(0)
    n, m = 36, 24
    g = torch.randn(n, n, generator=gen, dtype=torch.float64)
    k = g @ g.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    a = torch.randn(m, n, generator=gen, dtype=torch.float64)
    s2 = 0.3
    keep = torch.arange(m) % 4 != 0

    def posterior(rows, y):
        ar = a[rows]
        s = ar @ k @ ar.T + s2 * torch.eye(int(rows.sum()), dtype=torch.float64)
        gain = k @ ar.T @ torch.linalg.inv(s)
        return gain @ y[rows], k - gain @ ar @ k

    every = torch.ones(m, dtype=torch.bool)
    chol = torch.linalg.cholesky(k)
    excess, identity = [], []
    for _ in range(400):
        x = chol @ torch.randn(n, generator=gen, dtype=torch.float64)
        y = a @ x + s2**0.5 * torch.randn(m, generator=gen, dtype=torch.float64)
        m_full, c_full = posterior(every, y)
        m_fold, c_fold = posterior(keep, y)
        d = float((m_fold - m_full).pow(2).mean())
        excess.append(d - float(c_fold.diagonal().mean() - c_full.diagonal().mean()))
        identity.append(float((m_fold - x).pow(2).mean() - (m_full - x).pow(2).mean()) - d)
    for vals in (torch.tensor(excess), torch.tensor(identity)):
        assert abs(float(vals.mean())) <= 4 * float(vals.std()) / 20


def test_prefer_zero_keeps_the_laplace_unless_tau_zero_is_rejected(fold_problem):
    la, split, meas = fold_problem
    model = DiscrepancyModel(la)
    plain = model.heldout_evidence(split.held_op, split.held_measurement(meas.y))
    free = fit_discrepancy(plain)
    tested = fit_discrepancy(plain, prefer_zero=True)
    assert tested.maximiser == free.std == free.maximiser and tested.interval == free.interval
    rejected = free.log_conditional_evidence - free.log_conditional_evidence_without > 1.9207
    assert tested.std == (free.std if rejected else 0.0)
    # A planted discrepancy far above the noise: rejected, so prefer_zero changes nothing.
    big = HeldoutEvidence(**{**plain.__dict__, "residual": plain.residual * 6})
    assert fit_discrepancy(big, prefer_zero=True).std == fit_discrepancy(big).std > 0
    with pytest.raises(TypeError, match="prefer_zero"):
        fit_discrepancy(plain, prefer_zero=1)


@pytest.mark.parametrize("field", ["heldout_nested_correction", "heldout_prefer_zero"])
def test_pipeline_rejects_non_bool_heldout_switches(field):
    op = ParallelBeamCT(12, 8)
    with pytest.raises(TypeError, match=f"config.{field} must be a bool"):
        linearised_dip(torch.zeros(1, *op.range_shape), op, 0.1, LinearisedDIPConfig(**{field: 1}), progress=False)
