"""ArviZ's predictive groups: ``to_arviz(..., op=, noise_std=, predictive=True)``, LOO, run folders.

References are written here, independently of the package: the Gaussian
log-density and the operators' matrices in numpy (the MRI k-space with
``numpy.fft``), PSIS-LOO from its papers (Zhang & Stephens 2009 for the
generalized Pareto fit, Vehtari et al. 2024 for the tail and the prior), and
moments of the predictive noise with tolerances from their sampling error.
"""

from __future__ import annotations

import json
import math
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from bayes_recon.diagnostics import loo_summary, to_arviz
from bayes_recon.diagnostics._inputs import az
from bayes_recon.operators import MRI, MatrixOperator, ParallelBeamCT, radial_mask
from bayes_recon.posterior import Posterior

matplotlib.use("Agg")

M_ROWS, SIGMA = 12, 3.0


@pytest.fixture(scope="module")
def problem():
    """8x8 images, a dense 12x64 operator, 2 chains x 30 draws, a measurement with noise SIGMA."""
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(M_ROWS, 64, generator=g, dtype=torch.float64) / 8
    post = Posterior(torch.randn(2, 30, 1, 8, 8, generator=g), noise_std=SIGMA)
    truth = torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64)
    y = truth.reshape(1, -1) @ matrix.T + SIGMA * torch.randn(1, M_ROWS, generator=g,
                                                             dtype=torch.float64)
    return post, MatrixOperator(matrix, (1, 8, 8)), matrix.numpy(), y


def _ax(post, matrix):
    """A x_s for every draw, (chains, draws, m), in numpy float64."""
    x = post.samples.numpy().astype(np.float64).reshape(post.num_chains, post.num_draws, -1)
    return x @ matrix.T


def _gauss_logpdf(y, mean, sigma):
    return -0.5 * np.log(2 * np.pi * sigma**2) - (y - mean) ** 2 / (2 * sigma**2)


# ------------------------------------------------------------ PSIS by hand
def _gpd_fit(exceedances):
    """Generalized Pareto (k, scale) of sorted positive exceedances: Zhang & Stephens (2009),
    with the weakly informative prior on k of Vehtari et al. (shrink to 0.5 with weight 10)."""
    x = np.sort(exceedances)
    n = x.size
    grid = 30 + int(math.sqrt(n))
    j = np.arange(1, grid + 1)
    quartile = x[int(n / 4 + 0.5) - 1]
    theta = 1 / x[-1] + (1 - np.sqrt(grid / (j - 0.5))) / (3 * quartile)
    k_of = np.array([np.mean(np.log1p(-t * x)) for t in theta])  # k(θ) = mean log(1 − θx)
    profile = n * (np.log(-theta / k_of) - k_of - 1)
    weights = np.exp(profile - logsumexp(profile))
    theta_hat = np.sum(weights * theta)
    k = np.mean(np.log1p(-theta_hat * x))
    scale = -k / theta_hat
    return (n * k + 10 * 0.5) / (n + 10), scale


def _psis_loo(loglik):
    """Pointwise PSIS-LOO elpd and k̂ of loglik (S, n): ratios 1/p(y_i | θ_s), right tail of
    M = ceil(S/5) ratios replaced by generalized Pareto quantiles at (z − ½)/M, truncated at
    the largest raw ratio. (Vehtari et al.'s M is ceil(min(S/5, 3 sqrt(S/r_eff))); for S = 60
    that is S/5 whenever r_eff < 5.6, true of independent draws.)"""
    s, n = loglik.shape
    tail = math.ceil(s / 5)
    elpd, khat = np.empty(n), np.empty(n)
    for i in range(n):
        logr = -loglik[:, i] - np.max(-loglik[:, i])
        order = np.argsort(logr)
        cut = logr[order[-tail - 1]]
        idx = order[-tail:]
        k, scale = _gpd_fit(np.exp(logr[idx]) - np.exp(cut))
        p = (np.arange(1, tail + 1) - 0.5) / tail
        quantiles = scale * np.expm1(-k * np.log1p(-p)) / k
        logw = logr.copy()
        logw[idx] = np.minimum(np.log(quantiles + np.exp(cut)), 0.0)
        elpd[i] = logsumexp(logw + loglik[:, i]) - logsumexp(logw)
        khat[i] = k
    return elpd, khat


# ------------------------------------------------------------ the groups
def test_log_likelihood_and_observed_match_hand_computation(problem):
    post, op, matrix, y = problem
    idata = to_arviz(post, y=y, op=op, predictive=True)  # σ from posterior.noise_std
    assert {"posterior_predictive", "log_likelihood", "observed_data"} <= set(idata.groups())
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "entry") and ll.dtype == np.float64
    expected = _gauss_logpdf(y.numpy()[0], _ax(post, matrix), SIGMA)
    np.testing.assert_allclose(ll.values, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy()[0])
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "entry")
    attrs = idata.log_likelihood.attrs
    assert attrs["measurement_subset"] == "all" and attrs["measurement_kept"] == M_ROWS
    assert attrs["measurement_total"] == M_ROWS and attrs["likelihood_noise_std"] == SIGMA


def test_noise_std_argument_overrides_the_posterior(problem):
    post, op, matrix, y = problem
    idata = to_arviz(post, y=y, op=op, noise_std=1.5, predictive=True)
    expected = _gauss_logpdf(y.numpy()[0], _ax(post, matrix), 1.5)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-12)


def test_posterior_predictive_is_ax_plus_seeded_noise(problem):
    post, op, matrix, y = problem
    state, np_state = torch.get_rng_state(), np.random.get_state()
    ax = _ax(post, matrix)
    resid = np.stack([to_arviz(post, y=y, op=op, predictive=True, seed=s)
                      .posterior_predictive["y"].values - ax for s in range(20)])
    # 20 seeds x 60 draws x 12 entries = 14400 N(0, σ²) values: the sd of the sample sd is
    # σ/sqrt(2·14400) = 0.0059σ and of the mean σ/120; both within 4 of those.
    assert resid.std() == pytest.approx(SIGMA, rel=4 * 0.0059)
    assert abs(resid.mean()) < 4 * SIGMA / 120
    # and it is noise: uncorrelated between neighbouring entries (sd of r is 1/sqrt(14400))
    flat = resid.reshape(-1, M_ROWS)
    assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 4 / math.sqrt(flat.shape[0])
    np.testing.assert_array_equal(resid[3], to_arviz(post, y=y, op=op, predictive=True, seed=3)
                                  .posterior_predictive["y"].values - ax)
    assert not np.allclose(resid[3], resid[4])
    # seeded with its own generator: the global streams are untouched
    assert torch.equal(torch.get_rng_state(), state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:3], np_state[1:3]))


# ------------------------------------------------------------ LOO
def test_az_loo_matches_psis_written_here(problem):
    post, op, matrix, y = problem
    idata = to_arviz(post, y=y, op=op, predictive=True)
    loglik = _gauss_logpdf(y.numpy()[0], _ax(post, matrix), SIGMA).reshape(-1, M_ROWS)
    elpd_hand, khat_hand = _psis_loo(loglik)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k̂ > good_k for 60 draws is expected
        res = az.loo(idata, pointwise=True)
        summary = loo_summary(idata)
    # Same algorithm in float64: agreement to rounding.
    np.testing.assert_allclose(res.pareto_k.values, khat_hand, atol=1e-8)
    np.testing.assert_allclose(res.loo_i.values, elpd_hand, atol=1e-8)
    assert res.elpd_loo == pytest.approx(elpd_hand.sum(), abs=1e-7)
    lppd = logsumexp(loglik, axis=0) - math.log(loglik.shape[0])
    assert res.p_loo == pytest.approx(lppd.sum() - elpd_hand.sum(), abs=1e-7)
    # Plain IS-LOO, log(1 / mean_s 1/p): the weights are near-uniform here (σ = 3 against a
    # spread of A x_s of about 1), so smoothing moves the sum by < 0.05 nats — while the
    # in-sample lppd is 1.3 nats away from it (the tolerance can tell LOO from no LOO).
    is_loo = -(logsumexp(-loglik, axis=0) - math.log(loglik.shape[0]))
    assert res.elpd_loo == pytest.approx(is_loo.sum(), abs=0.05)
    assert lppd.sum() - is_loo.sum() > 0.5

    assert summary["elpd_loo"] == pytest.approx(elpd_hand.sum(), abs=1e-7)
    counts = summary["pareto_k_counts"]
    assert list(counts) == ["(-inf, 0.5]", "(0.5, 0.7]", "(0.7, 1]", "(1, inf)"]
    hand_counts = [int((khat_hand <= 0.5).sum()), int(((khat_hand > 0.5) & (khat_hand <= 0.7)).sum()),
                   int(((khat_hand > 0.7) & (khat_hand <= 1)).sum()), int((khat_hand > 1).sum())]
    assert list(counts.values()) == hand_counts
    assert summary["num_observations"] == M_ROWS and summary["num_samples"] == 60
    assert summary["pareto_k_max"] == pytest.approx(khat_hand.max(), abs=1e-8)


def test_compare_prefers_the_true_noise_level(problem):
    post, op, _, y = problem
    right = to_arviz(post, y=y, op=op, predictive=True)
    wrong = to_arviz(post, y=y, op=op, noise_std=SIGMA / 20, predictive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k̂ warnings of the bad model
        table = az.compare({"sigma_true": right, "sigma_small": wrong})
        waic = az.waic(right)
    assert list(table.index) == ["sigma_true", "sigma_small"]
    assert np.isfinite(waic.elpd_waic)


# ------------------------------------------------------------ complex k-space, CT dims
@pytest.fixture(scope="module")
def mri_case():
    g = torch.Generator().manual_seed(1)
    mask = radial_mask(8, 3)
    op = MRI(8, mask)
    post = Posterior(torch.rand(2, 30, 1, 8, 8, generator=g))
    sigma = 0.3
    y = op(torch.rand(1, 1, 8, 8, generator=g))
    y = y + sigma * torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
    return post, op, mask.numpy(), y, sigma


def test_complex_groups_match_numpy_fft(mri_case):
    post, op, mask, y, sigma = mri_case
    idata = to_arviz(post, y=y, op=op, noise_std=sigma, predictive=True, seed=2)
    x = post.samples.numpy().astype(np.float64)
    k = np.fft.fftshift(np.fft.fft2(x, norm="ortho"), axes=(-2, -1))
    ax = k.reshape(*k.shape[:3], -1)[..., mask.reshape(-1)]  # (chain, draw, C, m)
    yn = y.numpy()[0].astype(np.complex128)
    assert set(idata.observed_data.data_vars) == {"y_real", "y_imag"}
    assert set(idata.posterior_predictive.data_vars) == {"y_real", "y_imag"}
    assert list(idata.log_likelihood.data_vars) == ["y"]  # one LOO unit per k-space sample
    expected = (_gauss_logpdf(yn.real, ax.real, sigma) + _gauss_logpdf(yn.imag, ax.imag, sigma))
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-6, atol=1e-6)
    assert idata.log_likelihood.attrs["log_likelihood_unit"].startswith("complex")
    # noise on both parts, σ each, independent: 60 draws x 26 samples = 1560 values per part
    pp = idata.posterior_predictive
    for part, name in ((ax.real, "y_real"), (ax.imag, "y_imag")):
        r = pp[name].values - part
        assert r.std() == pytest.approx(sigma, rel=4 / math.sqrt(2 * r.size))
    r_re = (pp["y_real"].values - ax.real).ravel()
    r_im = (pp["y_imag"].values - ax.imag).ravel()
    assert abs(np.corrcoef(r_re, r_im)[0, 1]) < 4 / math.sqrt(r_re.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = az.loo(idata, pointwise=True)
    assert res.n_data_points == mask.sum()
    elpd_hand, _ = _psis_loo(expected.reshape(60, -1))
    assert res.elpd_loo == pytest.approx(elpd_hand.sum(), abs=1e-6)


def test_ct_measurement_dims_are_named():
    g = torch.Generator().manual_seed(2)
    op = ParallelBeamCT(8, n_angles=5)
    post = Posterior(torch.rand(2, 10, 1, 8, 8, generator=g))
    y = op(torch.rand(1, 1, 8, 8, generator=g))
    idata = to_arviz(post, y=y, op=op, noise_std=0.1, predictive=True)
    shape = (1, 5, op.n_detectors)
    assert idata.observed_data["y"].dims == ("channel", "angle", "detector")
    assert idata.observed_data["y"].shape == shape
    for group in ("posterior_predictive", "log_likelihood"):
        assert idata[group]["y"].dims == ("chain", "draw", "channel", "angle", "detector")
    dense = op.to_dense().numpy()  # checked against an independent ray tracer in test_ct.py
    ax = post.samples.numpy().astype(np.float64).reshape(2, 10, -1) @ dense.T
    np.testing.assert_allclose(idata.log_likelihood["y"].values.reshape(2, 10, -1),
                               _gauss_logpdf(y.numpy().reshape(-1), ax, 0.1), rtol=1e-6)


# ------------------------------------------------------------ the subset rule
def test_random_subset_is_shared_and_recorded():
    g = torch.Generator().manual_seed(3)
    matrix = torch.randn(40, 16, generator=g, dtype=torch.float64)
    op = MatrixOperator(matrix, (1, 4, 4))
    post = Posterior(torch.randn(2, 15, 1, 4, 4, generator=g))
    y = torch.randn(1, 40, generator=g, dtype=torch.float64)
    idata = to_arviz(post, y=y, op=op, noise_std=1.0, predictive=True, max_measurements=10, seed=5)
    idx = idata.observed_data["measurement"].values
    assert idx.shape == (10,) and len(set(idx)) == 10 and np.all(np.diff(idx) > 0)
    assert 0 <= idx.min() and idx.max() < 40
    for group in ("observed_data", "posterior_predictive", "log_likelihood"):
        np.testing.assert_array_equal(idata[group]["measurement"].values, idx)
        attrs = idata[group].attrs
        assert attrs["measurement_subset"] == "random subset"
        assert (attrs["measurement_kept"], attrs["measurement_total"]) == (10, 40)
        assert attrs["predictive_seed"] == 5 and attrs["max_measurements"] == 10
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy()[0, idx])
    ax = post.samples.numpy().astype(np.float64).reshape(2, 15, -1) @ matrix.numpy().T
    np.testing.assert_allclose(idata.log_likelihood["y"].values,
                               _gauss_logpdf(y.numpy()[0, idx], ax[..., idx], 1.0), rtol=1e-12)
    np.testing.assert_array_equal(idata.constant_data["y_full"].values, y.numpy()[0])
    again = to_arviz(post, y=y, op=op, noise_std=1.0, predictive=True, max_measurements=10, seed=5)
    np.testing.assert_array_equal(again.observed_data["measurement"].values, idx)
    other = to_arviz(post, y=y, op=op, noise_std=1.0, predictive=True, max_measurements=10, seed=6)
    assert not np.array_equal(other.observed_data["measurement"].values, idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert az.loo(idata).n_data_points == 10
    az.plot_ppc(idata, num_pp_samples=10, random_seed=0)
    az.plot_loo_pit(idata, y="y")


def test_complex_subset_counts_real_numbers(mri_case):
    post, op, mask, y, sigma = mri_case
    idata = to_arviz(post, y=y, op=op, noise_std=sigma, predictive=True, max_measurements=9)
    # 9 real numbers allow 4 complex samples (8 real numbers)
    attrs = idata.log_likelihood.attrs
    assert (attrs["measurement_kept"], attrs["measurement_total"]) == (4, int(mask.sum()))
    idx = idata.observed_data["measurement"].values
    flat = y.numpy().reshape(-1)
    np.testing.assert_array_equal(idata.observed_data["y_real"].values, flat.real[idx])
    np.testing.assert_array_equal(idata.observed_data["y_imag"].values, flat.imag[idx])
    assert idata.posterior_predictive["y_imag"].shape == (2, 30, 4)
    np.testing.assert_array_equal(idata.constant_data["y_full_imag"].values, y.numpy()[0].imag)


# ------------------------------------------------------------ ArviZ's plots, the file
def test_arviz_plots_run_on_real_and_complex(problem, mri_case):
    import matplotlib.pyplot as plt

    post, op, _, y = problem
    real = to_arviz(post, y=y, op=op, predictive=True)
    mpost, mop, _, my, sigma = mri_case
    cplx = to_arviz(mpost, y=my, op=mop, noise_std=sigma, predictive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert np.ravel(az.plot_ppc(real, num_pp_samples=20, random_seed=0)).size == 1
        assert np.ravel(az.plot_ppc(cplx, num_pp_samples=20, random_seed=0)).size == 2
        az.plot_loo_pit(real, y="y")
        az.plot_loo_pit(cplx, y="y_real")
        az.plot_loo_pit(cplx, y="y_imag", ecdf=True)
        assert np.ravel(az.plot_bpv(real)).size == 1
        assert np.ravel(az.plot_bpv(cplx)).size == 2
    plt.close("all")


def test_netcdf_round_trip_keeps_predictive_groups(problem, tmp_path):
    post, op, _, y = problem
    idata = to_arviz(post, y=y, op=op, predictive=True, max_measurements=5)
    idata.to_netcdf(str(tmp_path / "p.nc"))
    back = az.from_netcdf(str(tmp_path / "p.nc"))
    for group in ("posterior_predictive", "log_likelihood", "observed_data"):
        np.testing.assert_array_equal(back[group]["y"].values, idata[group]["y"].values)
        assert back[group]["y"].dims == idata[group]["y"].dims
        np.testing.assert_array_equal(back[group]["measurement"].values,
                                      idata[group]["measurement"].values)
    assert back.log_likelihood.attrs["measurement_subset"] == "random subset"


def test_posterior_method_forwards_the_keywords(problem):
    post, op, matrix, y = problem
    idata = post.to_arviz(y=y, op=op, noise_std=2.0, predictive=True, max_measurements=4, seed=7)
    attrs = idata.log_likelihood.attrs
    assert attrs["measurement_kept"] == 4 and attrs["predictive_seed"] == 7
    idx = idata.log_likelihood["measurement"].values
    np.testing.assert_allclose(idata.log_likelihood["y"].values,
                               _gauss_logpdf(y.numpy()[0, idx], _ax(post, matrix)[..., idx], 2.0),
                               rtol=1e-12)
    assert set(post.to_arviz(y=y).groups()) == {"posterior", "observed_data"}


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(op=None), ValueError, "op"),
        (dict(y=None), ValueError, "y"),
        (dict(op="A"), TypeError, "op"),
        (dict(noise_std=0.0), ValueError, "noise_std"),
        (dict(noise_std=-1.0), ValueError, "noise_std"),
        (dict(noise_std=float("nan")), ValueError, "noise_std"),
        (dict(noise_std="big"), TypeError, "noise_std"),
        (dict(y=torch.zeros(1, M_ROWS + 1)), ValueError, "op.range_shape"),
        (dict(y=torch.zeros(2, M_ROWS)), ValueError, "op.range_shape"),
        (dict(y=torch.zeros(M_ROWS, dtype=torch.complex64)), TypeError, "y must be real"),
        (dict(op=MatrixOperator(torch.zeros(M_ROWS, 16), (1, 4, 4))), ValueError, "op.domain_shape"),
        (dict(max_measurements=0), ValueError, "max_measurements"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(predictive="yes"), TypeError, "predictive"),
    ],
)
def test_bad_input_names_the_argument(problem, change, exc, match):
    post, op, _, y = problem
    kwargs = {"y": y, "op": op, "noise_std": 1.0, "predictive": True, **change}
    with pytest.raises(exc, match=match):
        to_arviz(post, **kwargs)


def test_missing_noise_level_is_an_error(problem):
    _, op, _, y = problem
    for noise in (None, 0.0):  # nothing recorded, or a noiseless posterior: no likelihood
        post = Posterior(torch.zeros(1, 3, 1, 8, 8), noise_std=noise)
        with pytest.raises(ValueError, match="noise_std"):
            to_arviz(post, y=y, op=op, predictive=True)


def test_loo_summary_needs_a_log_likelihood(problem):
    post, _, _, y = problem
    with pytest.raises(ValueError, match="log_likelihood"):
        loo_summary(to_arviz(post, y=y))
    with pytest.raises(TypeError, match="idata"):
        loo_summary(post)


# ------------------------------------------------------------ run folders
def test_calibrate_reports_loo_of_a_cli_run(tmp_path, capsys):
    from bayes_recon.app.cli import main

    out = tmp_path / "run"
    assert main(["reconstruct", "--problem", "ct", "--angles", "10", "--size", "16", "--image",
                 "shepp_logan", "--method", "fixed-sigma-dip", "--dip-iterations", "20",
                 "--num-samples", "16", "--out", str(out), "--no-progress"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16 draws: small-sample calibration and k̂ warnings
        assert main(["calibrate", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "coverage at 90%" in printed and "LOO: elpd_loo" in printed
    report = json.loads((out / "calibration.json").read_text())
    loo = report["loo"]
    for name in ("ppc.png", "loo_pit.png", "calibration_curve.png"):
        assert (out / name).stat().st_size > 0, name
    assert "elpd_loo" in (out / "calibration.md").read_text()

    # The file's log-likelihood against samples.npy, the CT matrix and the method's σ ...
    metrics = json.loads((out / "metrics.json").read_text())
    idata = az.from_netcdf(str(out / "posterior.nc"))
    samples = np.load(out / "samples.npy").astype(np.float64)
    dense = ParallelBeamCT(16, n_angles=10).to_dense().numpy()
    y = idata.observed_data["y"].values.reshape(-1).astype(np.float64)
    ax = samples.reshape(*samples.shape[:2], -1) @ dense.T
    loglik = _gauss_logpdf(y, ax, metrics["noise_std_used"]).reshape(-1, y.size)
    np.testing.assert_allclose(idata.log_likelihood["y"].values.reshape(loglik.shape), loglik,
                               rtol=1e-5, atol=1e-5)
    # ... and the reported LOO against that log-likelihood. With 16 draws the PSIS tail
    # (ceil(16/5) = 4 ratios) is too short to fit (5 needed): k̂ = inf, no smoothing, so
    # PSIS-LOO is plain IS-LOO, log(1 / mean_s 1/p(y_i | x_s)).
    assert loo["num_samples"] == 16 and loo["num_observations"] == y.size == 10 * 23
    is_loo = -(logsumexp(-loglik, axis=0) - math.log(loglik.shape[0]))
    assert loo["elpd_loo"] == pytest.approx(is_loo.sum(), rel=1e-6)
    lppd = logsumexp(loglik, axis=0) - math.log(loglik.shape[0])
    assert loo["p_loo"] == pytest.approx(lppd.sum() - is_loo.sum(), rel=1e-6)
    assert loo["elpd_loo_se"] == pytest.approx(math.sqrt(y.size * is_loo.var()), rel=1e-6)
    assert loo["pareto_k_counts"]["(1, inf)"] == y.size


def test_calibrate_without_truth_reports_loo_only(problem, tmp_path):
    from bayes_recon.app.runs import calibrate_run, write_run

    post, op, _, y = problem
    x = post.mean[None]
    run = write_run(tmp_path / "scan", None, x, {"method": "toy"}, posterior=post, y=y, op=op,
                    noise_std=SIGMA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = calibrate_run(run)
    assert set(report) == {"loo"}
    assert report["loo"]["num_observations"] == M_ROWS
    assert (run / "ppc.png").is_file() and (run / "loo_pit.png").is_file()
    assert not (run / "calibration_curve.png").exists()
    # no σ anywhere: the file has no likelihood, and with no truth calibrate says so
    bare = write_run(tmp_path / "bare", None, x, {"method": "toy"},
                     posterior=Posterior(post.samples), y=y, op=op)
    assert "log_likelihood" not in az.from_netcdf(str(bare / "posterior.nc")).groups()
    with pytest.raises(ValueError, match="no truth .* and no log_likelihood"):
        calibrate_run(bare)
