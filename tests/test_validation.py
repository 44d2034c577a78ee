"""Held-out-measurement validation: splits by physical scheme, the predictive, calibration.

References: the original operator's own output (splits), the geometry of the spokes
(angles computed here), the closed-form Gaussian predictive of a conjugate problem, and
binomial tolerances over independent replicates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_recon.diagnostics.validation import (
    heldout_predictive,
    heldout_validation,
)
from bayes_recon.inference import scale_spread
from bayes_recon.operators import (
    MRI,
    Blur,
    FanBeamCT,
    Identity,
    Inpainting,
    MatrixOperator,
    ParallelBeamCT,
    adjointness_error,
    cartesian_mask,
    gaussian_kernel,
    radial_mask,
)
from bayes_recon.operators.holdout import (
    RangeSubset,
    default_scheme,
    holdout_groups,
    radial_spoke_count,
    split_measurements,
)
from bayes_recon.posterior import Posterior


def _image(size=16, seed=0):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)


# ----------------------------------------------------------------- splits


@pytest.mark.parametrize("make", [
    lambda: ParallelBeamCT(16, n_angles=10),
    lambda: FanBeamCT(16, 12, source_distance=32, detector_distance=16),
    lambda: MRI(16, radial_mask(16, 10)),
    lambda: MRI(16, cartesian_mask(16, 2.0, seed=1)),
    lambda: Identity((1, 16, 16)),
    lambda: Inpainting(torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) < 0.5),
    lambda: Blur(16, gaussian_kernel(1.0)),
], ids=["ct", "fan", "radial", "cartesian", "denoise", "inpaint", "deblur"])
def test_split_operators_reproduce_the_original_entries(make):
    op = make()
    x = _image()
    y = op(x)
    for fold in range(5):
        split = split_measurements(op, fold, folds=5)
        # Kept and held-out parts are the original operator's entries, in the split's order.
        assert torch.allclose(split.fit_op(x), split.fit_measurement(y), atol=1e-10)
        assert torch.allclose(split.held_op(x), split.held_measurement(y), atol=1e-10)
        assert adjointness_error(split.fit_op) < 1e-10
        both = torch.cat([split.fit_index, split.held_index])
        assert both.unique().numel() == both.numel() == int(np.prod(op.range_shape))


def test_default_schemes_follow_the_acquisition():
    assert default_scheme(ParallelBeamCT(16, 10)) == "projection"
    assert default_scheme(MRI(16, radial_mask(16, 7))) == "spoke"
    assert default_scheme(MRI(16, cartesian_mask(16, 3.0))) == "line"
    assert default_scheme(Blur(16, gaussian_kernel(1.0))) == "random"
    assert radial_spoke_count(radial_mask(28, 30)) == 30
    assert radial_spoke_count(cartesian_mask(16, 2.0)) is None


def test_projection_folds_hold_every_kth_angle_and_keep_fbp():
    op = ParallelBeamCT(16, n_angles=12)
    split = split_measurements(op, fold=2, folds=4)
    assert isinstance(split.fit_op, ParallelBeamCT)
    np.testing.assert_allclose(split.held_op.angles, op.angles[[2, 6, 10]])
    np.testing.assert_allclose(split.fit_op.angles, np.delete(op.angles, [2, 6, 10]))
    assert split.fit_op.fbp(split.fit_op(_image())).shape == (1, 1, 16, 16)


def test_spoke_folds_hold_samples_on_their_own_spokes():
    n, spokes, folds = 32, 10, 5
    op = MRI(n, radial_mask(n, spokes))
    groups = holdout_groups(op, "spoke", folds)
    rows, cols = np.nonzero(op.mask.numpy())  # row-major: the order of op's range
    held = groups >= 0
    # Angle of each held sample from the centre, against the spoke angles pi k / spokes.
    angle = np.mod(np.arctan2(rows - n // 2, cols - n // 2), np.pi)
    nearest = np.rint(angle[held] / (np.pi / spokes)).astype(int) % spokes
    away_from_centre = np.hypot(rows - n // 2, cols - n // 2)[held] > 3
    assert np.mean((nearest % folds == groups[held])[away_from_centre]) > 0.97
    # The centre lies on every spoke: never held out.
    centre = int(np.flatnonzero((rows == n // 2) & (cols == n // 2))[0])
    assert groups[centre] == -1
    assert 0.5 < held.mean() < 1.0


def test_line_and_random_folds_partition_balanced():
    op = MRI(16, cartesian_mask(16, 2.0, seed=3))
    groups = holdout_groups(op, "line", 4, seed=0)
    cols = np.nonzero(op.mask.numpy())[1]
    for c in np.unique(cols):  # a whole line sits in one fold
        assert np.unique(groups[cols == c]).size == 1
    counts = np.bincount(groups, minlength=4)
    assert counts.min() > 0
    rand = holdout_groups(Blur(16, gaussian_kernel(1.0)), "random", 5, seed=1)
    assert np.bincount(rand).tolist() == [52, 51, 51, 51, 51]
    assert not np.array_equal(rand, holdout_groups(Blur(16, gaussian_kernel(1.0)), "random", 5, seed=2))


def test_range_subset_is_the_selected_rows():
    op = Blur(8, gaussian_kernel(1.0))
    index = torch.tensor([1, 7, 20, 40, 63])
    sub = RangeSubset(op, index)
    dense = op.to_dense()
    np.testing.assert_allclose(sub.to_dense().numpy(), dense[index].numpy(), atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(op=ParallelBeamCT(8, n_angles=3), fold=0, folds=5), "folds=5 needs at least"),
    (dict(op=ParallelBeamCT(8, n_angles=6), fold=0, folds=1), "folds"),
    (dict(op=ParallelBeamCT(8, n_angles=6), fold=4, folds=3), "fold must lie"),
    (dict(op=ParallelBeamCT(8, n_angles=6), fold=0, folds=3, scheme="spoke"), "needs an MRI"),
    (dict(op=Blur(8, gaussian_kernel(1.0)), fold=0, folds=3, scheme="projection"), "needs a CT"),
    (dict(op=MRI(8, cartesian_mask(8, 2.0)), fold=0, folds=2, scheme="spoke"), "not radial"),
    (dict(op=ParallelBeamCT(8, n_angles=6), fold=0, folds=3, scheme="angles"), "scheme"),
])
def test_split_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_measurements(**kwargs)


# ------------------------------------------------- a conjugate Gaussian problem


def _gaussian_problem(seed, m=40, n=8, sigma=0.05, ell=2.0):
    """Prior N(0, C) with a squared-exponential C on an n x n image, dense A, noise sigma."""
    g = torch.Generator().manual_seed(seed)
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pts = np.stack([r.ravel(), c.ravel()], 1)
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    cov = torch.from_numpy(np.exp(-d2 / (2 * ell ** 2)) + 1e-3 * np.eye(n * n))
    a = torch.randn(m, n * n, generator=g, dtype=torch.float64) / n
    x = torch.linalg.cholesky(cov) @ torch.randn(n * n, generator=g, dtype=torch.float64)
    y = a @ x + sigma * torch.randn(m, generator=g, dtype=torch.float64)
    return cov, a, x, y[None], sigma


def _exact_posterior(cov, a_fit, y_fit, sigma, draws, seed, n=8):
    """Samples of the exact Gaussian posterior of x given y_fit = a_fit x + noise."""
    prec = a_fit.T @ a_fit / sigma ** 2 + torch.linalg.inv(cov)
    lower = torch.linalg.cholesky(prec)
    mean = torch.cholesky_solve((a_fit.T @ y_fit.reshape(-1) / sigma ** 2)[:, None], lower)[:, 0]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(draws, n * n, generator=g, dtype=torch.float64)
    samples = mean + torch.linalg.solve_triangular(lower.T, eps.T, upper=True).T
    return Posterior(samples.reshape(1, draws, 1, n, n), noise_std=sigma), mean, prec


def test_predictive_matches_the_closed_form():
    cov, a, _, y, sigma = _gaussian_problem(seed=0)
    op = MatrixOperator(a, (1, 8, 8))
    split = split_measurements(op, fold=0, folds=5, scheme="random")
    a_fit, a_held = a[split.fit_index], a[split.held_index]
    post, mean, prec = _exact_posterior(cov, a_fit, split.fit_measurement(y), sigma, 4000, 1)
    fold = heldout_predictive(post, split.held_op, split.held_measurement(y))
    # Closed form: y_held | y_fit ~ N(A_h m, A_h P^-1 A_h^T + sigma^2 I), marginal per entry.
    mu = (a_held @ mean).numpy()
    var = (torch.einsum("ij,jk,ik->i", a_held, torch.linalg.inv(prec), a_held).numpy())
    target = split.held_measurement(y)[0].numpy()
    pit = stats.norm.cdf(target, mu, np.sqrt(var + sigma ** 2))
    loglik = stats.norm.logpdf(target, mu, np.sqrt(var + sigma ** 2))
    np.testing.assert_allclose(fold.pit, pit, atol=0.02)  # 4000 draws: MC error < 0.01
    np.testing.assert_allclose(fold.log_likelihood, loglik, atol=0.05)
    np.testing.assert_allclose(fold.signal_variance, var, rtol=0.1)


def _replicate_pits(spread: float, replicates=300):
    """First held-out PIT of each independent replicate, and the pooled excess ratios."""
    pits, sq, signal = [], [], []
    for rep in range(replicates):
        cov, a, _, y, sigma = _gaussian_problem(seed=100 + rep)
        op = MatrixOperator(a, (1, 8, 8))

        def method(fit_op, y_fit, a=a, cov=cov, sigma=sigma, rep=rep):
            post = _exact_posterior(cov, fit_op.to_dense(), y_fit, sigma, 300, rep)[0]
            return post if spread == 1.0 else scale_spread(post, spread)

        res = heldout_validation(method, op, y, folds=5, fold_indices=[rep % 5],
                                 scheme="random", seed=rep, progress=False)
        pits.append(res.pit[0])
        sq.append(res.excess_variance_ratio)
    return np.asarray(pits), np.asarray(sq)


def test_heldout_coverage_of_the_exact_posterior_is_nominal():
    pits, ratios = _replicate_pits(1.0)
    # One measurement per independent replicate: coverage ~ Binomial(300, p) / 300.
    for level in (0.5, 0.9):
        covered = np.mean(np.abs(pits - 0.5) <= level / 2)
        tol = 4 * math.sqrt(level * (1 - level) / pits.size)
        assert abs(covered - level) < tol, (level, covered)
    assert stats.kstest(pits, "uniform").pvalue > 1e-3
    assert 0.8 < np.median(ratios) < 1.25


@pytest.mark.parametrize("spread, direction", [(2.0, 1), (0.5, -1)])
def test_wrong_spread_is_detected(spread, direction):
    pits, ratios = _replicate_pits(spread, replicates=150)
    covered = np.mean(np.abs(pits - 0.5) <= 0.45)
    tol = 4 * math.sqrt(0.9 * 0.1 / pits.size)  # 0.098
    # Too wide covers more than 90 %, too narrow less, by more than the binomial tolerance;
    # the excess-variance ratio reads 1 / spread^2 (0.25 or 4).
    if direction > 0:
        assert covered > 0.9 + tol * 0.5 and np.median(ratios) < 0.5
    else:
        assert covered < 0.9 - tol and np.median(ratios) > 2.0


def test_validation_reports_and_errors():
    op = ParallelBeamCT(8, n_angles=10)
    x = _image(8)
    y = op(x) + 0.1 * torch.randn(op(x).shape, generator=torch.Generator().manual_seed(0),
                                  dtype=torch.float64)
    exact = lambda fit_op, y_fit: Posterior(x.expand(1, 20, 1, 8, 8).clone(), noise_std=0.1)
    res = heldout_validation(exact, op, y, folds=5, fold_indices=[0], progress=False)
    assert res.folds_run == [0] and res.num_heldout == 2 * 12
    d = res.to_dict()
    assert set(d["coverage"]) >= {"0.5", "0.9", "0.95"} and d["scheme"] == "projection"
    # A posterior without spread: coverage is the noise's alone, no variance ratio.
    assert res.coverage == res.noise_only_coverage and res.excess_variance_ratio is None
    assert "held-out coverage" in res.to_markdown()
    no_sigma = lambda fit_op, y_fit: Posterior(x.expand(1, 20, 1, 8, 8).clone())
    with pytest.raises(ValueError, match="noise_std"):
        heldout_validation(no_sigma, op, y, folds=5, progress=False)
    with pytest.raises(ValueError, match="fold_indices"):
        heldout_validation(exact, op, y, folds=5, fold_indices=[5], progress=False)
    with pytest.raises(TypeError, match="Posterior"):
        heldout_validation(lambda o, v: x, op, y, folds=5, progress=False)
    with pytest.raises(ValueError, match="y must have shape"):
        heldout_validation(exact, op, y[:, :, :5], folds=5, progress=False)


def test_complex_measurements_count_real_and_imaginary_parts():
    op = MRI(8, radial_mask(8, 6))
    x = _image(8)
    y = op(x)
    post = Posterior(x.expand(1, 10, 1, 8, 8).clone(), noise_std=0.5)
    fold = heldout_predictive(post, op, y)
    assert fold.pit.size == 2 * op.range_shape[-1]
    np.testing.assert_allclose(fold.pit, 0.5, atol=1e-9)  # y equals the prediction
    np.testing.assert_allclose(fold.log_likelihood, stats.norm.logpdf(0, 0, 0.5), atol=1e-9)
