"""Tests for bayes_recon.diagnostics: ArviZ export, calibration metrics, plots."""

from __future__ import annotations

import json
import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from scipy import stats

from bayes_recon import __version__
from bayes_recon.diagnostics import (
    CalibrationReport,
    CalibrationWarning,
    calibration,
    plot_calibration_curve,
    plot_error_vs_std,
    plot_pit,
    plot_rank,
    plot_reconstruction,
    plot_sparsification,
    plot_trace,
    to_arviz,
)
from bayes_recon.diagnostics._inputs import az
from bayes_recon.diagnostics.calibration_metrics import sparsification_curves
from bayes_recon.posterior import Posterior

LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)
CHAINS, DRAWS, SIZE = 4, 250, 64


def _gaussian_case(sample_std: float, seed: int):
    """Truth ~ N(0, 1) per pixel, samples ~ N(0, sample_std^2), all independent."""
    g = torch.Generator().manual_seed(seed)
    samples = sample_std * torch.randn(CHAINS, DRAWS, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    truth = torch.randn(1, SIZE, SIZE, generator=g, dtype=torch.float64)
    return Posterior(samples, method="exact"), truth


@pytest.fixture(scope="module")
def exact_case():
    return _gaussian_case(1.0, seed=0)


@pytest.fixture(scope="module")
def exact_report(exact_case):
    post, truth = exact_case
    return calibration(post, truth, levels=LEVELS)


@pytest.fixture(scope="module")
def narrow_report():
    post, truth = _gaussian_case(0.5, seed=1)
    return calibration(post, truth, levels=LEVELS)


def _small_posterior(seed=0, chains=2, draws=30, shape=(1, 6, 5), latent=3):
    g = torch.Generator().manual_seed(seed)
    return Posterior(
        torch.randn(chains, draws, *shape, generator=g),
        z=torch.randn(chains, draws, latent, generator=g),
        sample_stats={
            "diverging": torch.rand(chains, draws, generator=g) < 0.1,
            "step_size": torch.full((chains, draws), 0.05),
            "tree_depth": torch.randint(1, 6, (chains, draws), generator=g),
            "accept_prob": torch.rand(chains, draws, generator=g),
        },
        method="nuts",
        operator="Blur",
        noise_std=0.05,
        seed=seed,
        evidence_trace=np.linspace(-10.0, -3.0, 8),
        hyperparameters={"lengthscale": 1.5, "scales": [1.0, 2.0]},
        run="unit-test",
    )


# --------------------------------------------------------------- known answers
def test_exact_gaussian_coverage_within_binomial_tolerance(exact_report):
    n = SIZE * SIZE
    for level, cov in zip(exact_report.levels, exact_report.coverage):
        # pixels are independent, so coverage is Binomial(n, ~level)/n: allow 4 sigma
        tol = 4 * math.sqrt(level * (1 - level) / n)
        assert abs(cov - level) < tol, (level, cov, tol)
    assert exact_report.calibration_error < 0.01
    assert exact_report.num_pixels == n and exact_report.num_samples == CHAINS * DRAWS


def test_exact_gaussian_pit_uniform(exact_report):
    # KS test against U(0, 1) at significance 1% (fixed seed); PIT grid spacing 1/1001 is
    # far below the KS critical value 1.63/sqrt(4096) = 0.025.
    assert exact_report.pit.shape == (SIZE * SIZE,)
    assert exact_report.pit.min() > 0 and exact_report.pit.max() < 1
    assert exact_report.pit_ks_pvalue > 0.01
    assert exact_report.pit_ks_statistic < 1.63 / SIZE


def test_exact_gaussian_zscores(exact_report):
    n = SIZE * SIZE
    for frac, p in ((exact_report.z_beyond_2, 0.0455), (exact_report.z_beyond_3, 0.0027)):
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3  # binomial, 4 sigma
    assert abs(exact_report.z_std - 1) < 0.05
    qq_t, qq_o = np.array(exact_report.qq_theoretical), np.array(exact_report.qq_observed)
    assert qq_t.shape == qq_o.shape == (99,)
    assert np.abs(qq_o - qq_t)[5:-5].max() < 0.15  # inner quantiles of 4096 N(0,1) draws


def _narrow_coverage(level: float, scale: float = 0.5) -> float:
    """Coverage of N(0, 1) truths by the central ``level`` interval of N(0, scale^2):
    P(|N(0,1)| <= scale * z) = 2 Phi(scale * z) - 1 with z = Phi^-1((1 + level) / 2)."""
    return 2 * stats.norm.cdf(scale * stats.norm.ppf((1 + level) / 2)) - 1


def test_narrow_samples_under_cover_by_the_closed_form_amount(narrow_report):
    n = SIZE * SIZE
    expected = [_narrow_coverage(lv) for lv in LEVELS]  # 0.9 -> 0.589, 0.99 -> 0.802
    for level, cov, ref in zip(narrow_report.levels, narrow_report.coverage, expected):
        # Binomial(n, ref)/n over independent pixels, 4 sigma; + 0.005 for the bias of
        # interval ends estimated from 1000 draws per pixel (averages out over pixels).
        tol = 4 * math.sqrt(ref * (1 - ref) / n) + 0.005
        assert abs(cov - ref) < tol, (level, cov, ref, tol)
    ref_error = float(np.mean(np.abs(np.array(expected) - np.array(LEVELS))))
    assert narrow_report.calibration_error == pytest.approx(ref_error, abs=0.02)
    # PIT = Phi(N(0,1) / 0.5) piles up at 0 and 1: KS distance to U(0,1) is
    # sup_u |Phi(0.5 Phi^-1(u)) - u|, computed here on a fine grid.
    u = np.linspace(1e-6, 1 - 1e-6, 200_001)
    ks_ref = np.abs(stats.norm.cdf(0.5 * stats.norm.ppf(u)) - u).max()
    assert narrow_report.pit_ks_statistic == pytest.approx(ks_ref, abs=1.63 / SIZE)
    assert narrow_report.pit_ks_pvalue < 1e-6
    # z = truth / 0.5 ~ N(0, 4): P(|z| > 2) = P(|N(0,1)| > 1) = 0.3173; std 2.
    p2 = 2 * stats.norm.sf(1.0)
    assert abs(narrow_report.z_beyond_2 - p2) < 4 * math.sqrt(p2 * (1 - p2) / n)
    assert narrow_report.z_std == pytest.approx(2.0, rel=0.05)


def test_test_log_likelihood_closed_form(exact_case, exact_report):
    post, truth = exact_case
    flat = post.flat_samples.numpy().reshape(CHAINS * DRAWS, -1)
    ref = stats.norm.logpdf(truth.numpy().ravel(), flat.mean(0), flat.std(0, ddof=1)).mean()
    assert exact_report.test_log_likelihood == pytest.approx(ref, abs=1e-10)
    # patch size 1 is the same Gaussian up to a 1e-6 relative variance jitter
    assert exact_report.patch_log_likelihood[1] == pytest.approx(ref, abs=1e-5)
    # and for well-calibrated N(0,1) it is near the entropy -0.5*log(2 pi e) = -1.4189
    assert ref == pytest.approx(-0.5 * math.log(2 * math.pi * math.e), abs=0.05)


def test_patch_log_likelihood_matches_dense_reference():
    g = torch.Generator().manual_seed(5)
    s, h, w = 60, 5, 4  # rows/cols beyond a multiple of 2 are dropped: 2x2 patches cover 4x4
    base = torch.randn(s, 1, h, w, generator=g, dtype=torch.float64)
    samples = base + 0.7 * torch.roll(base, 1, dims=-1)  # correlated neighbours
    truth = torch.randn(1, h, w, generator=g, dtype=torch.float64)
    rep = calibration(Posterior(samples[None]), truth, levels=(0.9,), patch_sizes=(2,), patch_jitter=1e-6)
    x, t = samples.numpy()[:, 0], truth.numpy()[0]
    total = 0.0
    for i in range(0, 4, 2):
        for j in range(0, 4, 2):
            xp = x[:, i : i + 2, j : j + 2].reshape(s, 4)
            cov = np.cov(xp, rowvar=False)
            cov += 1e-6 * np.trace(cov) / 4 * np.eye(4)
            total += stats.multivariate_normal(xp.mean(0), cov).logpdf(t[i : i + 2, j : j + 2].ravel())
    assert rep.patch_log_likelihood[2] == pytest.approx(total / 16, abs=1e-9)


def test_ause_zero_when_std_equals_error():
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(1, 32, 32, generator=g, dtype=torch.float64)
    err = torch.randn(1, 32, 32, generator=g, dtype=torch.float64)
    s = err.abs()
    # two-point samples mean +- s: sample mean is `mean`, std (ddof=1) is s*sqrt(4/3) ~ |error|
    samples = torch.stack([mean + s, mean - s, mean + s, mean - s]).reshape(2, 2, 1, 32, 32)
    rep = calibration(Posterior(samples), mean + err, levels=(0.5, 0.9), patch_sizes=())
    assert rep.ause == pytest.approx(0.0, abs=1e-12)
    assert rep.aurg > 0.3  # ranking by the true error gains a lot over random
    np.testing.assert_allclose(rep.sparsification["uncertainty"], rep.sparsification["oracle"], atol=1e-12)
    # control: std anti-ranked to the error -> large AUSE, negative AURG
    samples_bad = torch.stack([mean + 1 / s, mean - 1 / s] * 2).reshape(2, 2, 1, 32, 32)
    bad = calibration(Posterior(samples_bad), mean + err, levels=(0.5, 0.9), patch_sizes=())
    assert bad.ause > 0.5 and bad.aurg < 0


def test_sparsification_hand_example():
    err = np.array([4.0, 3.0, 2.0, 1.0])
    std = np.array([1.0, 2.0, 3.0, 4.0])  # ranks exactly backwards
    sp = sparsification_curves(err, std, num_fractions=4)
    rmse0 = math.sqrt(30 / 4)
    np.testing.assert_allclose(sp["fractions"], [0, 0.25, 0.5, 0.75])
    oracle = np.array([math.sqrt(30 / 4), math.sqrt(14 / 3), math.sqrt(5 / 2), 1.0]) / rmse0
    unc = np.array([math.sqrt(30 / 4), math.sqrt(29 / 3), math.sqrt(25 / 2), 4.0]) / rmse0
    np.testing.assert_allclose(sp["oracle"], oracle, rtol=1e-12)
    np.testing.assert_allclose(sp["uncertainty"], unc, rtol=1e-12)
    trap = lambda y: float(np.sum((y[1:] + y[:-1]) / 2) * 0.25)  # noqa: E731
    assert sp["ause"] == pytest.approx(trap(unc - oracle), rel=1e-12)
    assert sp["aurg"] == pytest.approx(trap(1 - unc), rel=1e-12)


# --------------------------------------------------------------- report API
def test_report_to_dict_and_markdown(exact_report):
    d = exact_report.to_dict()
    assert list(d) == [f.name for f in fields(CalibrationReport)]
    json.dumps(d)  # plain Python only
    assert d["coverage"] == exact_report.coverage and isinstance(d["ause"], float)
    assert isinstance(d["pit"], list) and len(d["pit"]) == SIZE * SIZE
    assert set(d["patch_log_likelihood"]) == {"1", "2", "4"}
    assert exact_report.to_dict(include_pit=False)["pit"] is None
    md = exact_report.to_markdown()
    assert "| 0.90 |" in md and "calibration error" in md and "AUSE" in md
    with pytest.raises(ValueError, match="level"):
        exact_report.coverage_at(0.42)


def test_default_levels_include_standard_ones():
    post, truth = _small_posterior(), torch.zeros(1, 6, 5)
    rep = calibration(post, truth)
    assert {0.5, 0.9, 0.95} <= set(rep.levels)
    # 6x5 image: default patch sizes limited to those that fit
    assert set(rep.patch_log_likelihood) == {1, 2, 4}
    assert set(calibration(post, truth, patch_sizes=()).patch_log_likelihood) == set()


def test_list_aggregates_and_keeps_per_image():
    cases = [_gaussian_case(1.0, seed=10), _gaussian_case(0.5, seed=11)]
    posts = [c[0] for c in cases]
    truths = [c[1] for c in cases]
    rep = calibration(posts, truths, levels=LEVELS)
    singles = [calibration(p, t, levels=LEVELS) for p, t in cases]
    assert rep.num_images == 2 and len(rep.per_image) == 2
    for a, b in zip(rep.per_image, singles):
        assert a.coverage == pytest.approx(b.coverage) and a.ause == pytest.approx(b.ause)
    # equal pixel counts: pooled coverage / log-likelihood are the plain means
    np.testing.assert_allclose(rep.coverage, np.mean([s.coverage for s in singles], axis=0))
    assert rep.test_log_likelihood == pytest.approx(np.mean([s.test_log_likelihood for s in singles]))
    assert rep.ause == pytest.approx(np.mean([s.ause for s in singles]))
    assert rep.pit.shape == (2 * SIZE * SIZE,)
    # a stacked (N, C, H, W) truth works as well
    rep2 = calibration(posts, torch.stack(truths), levels=LEVELS)
    assert rep2.coverage == rep.coverage
    assert len(rep.to_dict()["per_image"]) == 2
    with pytest.raises(ValueError, match="one image per posterior"):
        calibration(posts, truths[:1], levels=LEVELS)


def test_calibration_reads_inference_data(exact_case, exact_report):
    post, truth = exact_case
    idata = to_arviz(post, truth=truth)
    rep = calibration(idata, levels=LEVELS)  # truth from constant_data
    assert rep.coverage == exact_report.coverage
    assert rep.test_log_likelihood == pytest.approx(exact_report.test_log_likelihood, abs=1e-12)
    with pytest.raises(ValueError, match="constant_data"):
        calibration(to_arviz(post), levels=LEVELS)


def test_zero_std_pixels_warn_and_use_min_std():
    g = torch.Generator().manual_seed(3)
    samples = torch.randn(1, 20, 1, 4, 4, generator=g, dtype=torch.float64)
    samples[..., 0, 0] = 0.5  # a pixel with no posterior spread
    truth = torch.zeros(1, 4, 4, dtype=torch.float64)
    with pytest.warns(CalibrationWarning, match="min_std"):
        rep = calibration(Posterior(samples), truth, levels=(0.9,), patch_sizes=(1,), min_std=1e-3)
    # Reference: per-pixel Gaussian with the sample std (ddof=1), floored at min_std.
    flat = samples.numpy().reshape(20, 16)
    mean, std = flat.mean(0), np.maximum(flat.std(0, ddof=1), 1e-3)
    ref_ll = stats.norm.logpdf(truth.numpy().ravel(), mean, std).mean()
    assert rep.test_log_likelihood == pytest.approx(ref_ll, rel=1e-12)
    z = (truth.numpy().ravel() - mean) / std
    assert rep.z_mean == pytest.approx(z.mean(), rel=1e-12)
    assert rep.z_std == pytest.approx(z.std(), rel=1e-12)
    assert z[0] == pytest.approx(-500.0)  # (0 - 0.5) / 1e-3: finite, dominated by min_std


def test_ause_of_random_std_is_the_oracle_gap():
    # std independent of the error: the uncertainty curve is the random curve (1) up to
    # sampling noise, so AUSE = area(1 - oracle). For N(0,1) errors the oracle curve is
    # closed form: removing the largest fraction f leaves |e| <= q, q = Phi^-1(1 - f/2),
    # with E[e^2; |e| <= q] = (1 - f) - 2 q phi(q).
    g = torch.Generator().manual_seed(7)
    size, draws = 64, 4
    err = torch.randn(1, size, size, generator=g, dtype=torch.float64)
    s = torch.rand(1, size, size, generator=g, dtype=torch.float64) + 0.5
    # samples mean +- s (mean 0): sample std is s * sqrt(4/3), error is truth - 0 = err
    samples = torch.stack([s, -s, s, -s]).reshape(2, draws // 2, 1, size, size)
    rep = calibration(Posterior(samples), err, levels=(0.9,), patch_sizes=())
    f = np.arange(100) / 100
    q = stats.norm.ppf(1 - f[1:] / 2)  # f = 0 removes nothing: oracle 1
    oracle = np.concatenate([[1.0], np.sqrt(((1 - f[1:]) - 2 * q * stats.norm.pdf(q)) / (1 - f[1:]))])
    ref = float(np.sum(0.5 * ((1 - oracle)[1:] + (1 - oracle)[:-1])) * 0.01)  # trapezoid
    assert ref > 0.4  # the margin the random std loses to the oracle
    # 4096 pixels: the uncertainty curve's RMSE fluctuates ~2 % around 1 -> tolerance 0.03
    assert rep.ause == pytest.approx(ref, abs=0.03)
    assert abs(rep.aurg) < 0.03


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda p, t: calibration(p, t[:, :3]), ValueError, "truth"),
        (lambda p, t: calibration(p, t.reshape(2, 1, 3, 5)), ValueError, "truth"),
        (lambda p, t: calibration(p, t.numpy().tolist()), TypeError, "truth"),
        (lambda p, t: calibration(p, torch.full_like(t, float("nan"))), ValueError, "truth"),
        (lambda p, t: calibration(p, None), ValueError, "truth"),
        (lambda p, t: calibration(Posterior(torch.zeros(1, 1, 1, 6, 5)), t), ValueError, "at least 2"),
        (lambda p, t: calibration(p, t, levels=(0.5, 1.0)), ValueError, "levels"),
        (lambda p, t: calibration(p, t, levels=(0.0,)), ValueError, "levels"),
        (lambda p, t: calibration(p, t, levels=(-0.1, 0.5)), ValueError, "levels"),
        (lambda p, t: calibration(p, t, levels=(1.5,)), ValueError, "levels"),
        (lambda p, t: calibration(p, t, levels=()), ValueError, "levels"),
        (lambda p, t: calibration(p, t, levels=0.9), TypeError, "levels"),
        (lambda p, t: calibration(p, t, patch_sizes=(8,)), ValueError, "patch_sizes"),
        (lambda p, t: calibration(p.samples, t), TypeError, "posterior_or_idata"),
        (lambda p, t: calibration([], t), TypeError, "posterior_or_idata"),
    ],
)
def test_calibration_bad_input(make, exc, match):
    post, truth = _small_posterior(), torch.zeros(1, 6, 5)
    with pytest.raises(exc, match=match):
        make(post, truth)


def test_calibration_rejects_nan_samples_in_inference_data():
    idata = to_arviz(_small_posterior())
    idata.posterior["x"][0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calibration(idata, torch.zeros(1, 6, 5))
    with pytest.raises(ValueError, match="samples"):  # and Posterior refuses NaN up front
        Posterior(torch.full((1, 2, 1, 2, 2), float("nan")))


# --------------------------------------------------------------- ArviZ export
def test_to_arviz_layout():
    post = _small_posterior()
    truth = torch.rand(1, 1, 6, 5)  # (1, C, H, W) accepted
    y = torch.randn(3, 7)
    idata = to_arviz(post, truth=truth, y=y)
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data", "constant_data", "evidence"}
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "channel", "row", "col")
    np.testing.assert_array_equal(x.coords["row"].values, np.arange(6))
    np.testing.assert_array_equal(x.coords["col"].values, np.arange(5))
    assert idata.posterior["z"].dims == ("chain", "draw", "latent")
    assert set(idata.sample_stats.data_vars) == {"diverging", "step_size", "tree_depth", "acceptance_rate"}
    np.testing.assert_array_equal(idata.sample_stats["acceptance_rate"].values, post.sample_stats["accept_prob"])
    np.testing.assert_array_equal(idata.constant_data["x_true"].values, truth[0].numpy())
    np.testing.assert_array_equal(idata.observed_data["y"].values, y.numpy())
    attrs = idata.posterior.attrs
    assert attrs["method"] == "nuts" and attrs["operator"] == "Blur" and attrs["seed"] == 0
    assert attrs["noise_std"] == 0.05 and attrs["bayes_recon_version"] == __version__
    assert json.loads(attrs["hyperparameters"]) == {"lengthscale": 1.5, "scales": [1.0, 2.0]}
    assert attrs["extra_run"] == "unit-test"
    assert idata.observed_data.attrs["method"] == "nuts"  # every group carries provenance


def test_netcdf_round_trip(tmp_path):
    post = _small_posterior()
    truth = torch.rand(1, 6, 5)
    y = torch.randn(4, 4, dtype=torch.complex64)
    idata = to_arviz(post, truth=truth, y=y)
    path = tmp_path / "run.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        a, b = idata[group], back[group]
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            assert a[name].dims == b[name].dims, (group, name)
            np.testing.assert_array_equal(a[name].values, b[name].values)
            assert a[name].dtype == b[name].dtype, (group, name)
        for dim, coord in a.coords.items():
            np.testing.assert_array_equal(coord.values, b.coords[dim].values)
    # complex k-space split into real and imaginary parts
    np.testing.assert_array_equal(back.observed_data["y_real"].values, y.real.numpy())
    np.testing.assert_array_equal(back.observed_data["y_imag"].values, y.imag.numpy())
    assert back.observed_data.attrs["y_is_complex"] == 1
    np.testing.assert_array_equal(back.evidence["log_evidence"].values, post.evidence_trace)
    assert back.sample_stats["diverging"].dtype == bool
    assert back.posterior.attrs["method"] == "nuts" and back.posterior.attrs["seed"] == 0
    np.testing.assert_array_equal(back.posterior["x"].values, post.samples.numpy())
    # and the read-back file is usable by calibration
    assert calibration(back, levels=(0.9,)).num_pixels == 30


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(truth=torch.zeros(5, 6)), ValueError, "truth"),  # (H, W) is accepted, (W, H) not
        (dict(truth=torch.zeros(2, 1, 6, 5)), ValueError, "truth"),
        (dict(truth=torch.full((1, 6, 5), float("inf"))), ValueError, "truth"),
        (dict(y=torch.tensor([1.0, float("nan")])), ValueError, "y"),
        (dict(y=[1.0, 2.0]), TypeError, "y"),
        (dict(name="z"), ValueError, "name"),
        (dict(name="not valid"), ValueError, "name"),
    ],
)
def test_to_arviz_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        to_arviz(_small_posterior(), **kwargs)


def test_to_arviz_rejects_non_posterior():
    with pytest.raises(TypeError, match="posterior"):
        to_arviz(torch.zeros(1, 2, 1, 3, 3))


def test_summary_works_on_export():
    idata = to_arviz(_small_posterior())
    summ = az.summary(idata, var_names=["z"])
    assert len(summ) == 3 and {"mean", "sd", "ess_bulk", "r_hat"} <= set(summ.columns)
    assert len(az.summary(idata, var_names=["x"], kind="stats")) == 30


def _split_rhat(x: np.ndarray) -> float:
    """Split-R-hat of BDA3 by hand for x of shape (chains, draws), draws even."""
    half = x.shape[1] // 2
    s = np.concatenate([x[:, :half], x[:, half:]], axis=0)
    n = s.shape[1]
    between = n * s.mean(axis=1).var(ddof=1)
    within = s.var(axis=1, ddof=1).mean()
    return math.sqrt(((n - 1) / n * within + between / n) / within)


def _rank_normalised(x: np.ndarray) -> np.ndarray:
    r = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((r - 3 / 8) / (x.size + 1 / 4))


def test_rhat_and_ess_agree_with_hand_computation():
    rng = np.random.default_rng(4)
    # toy: 4 chains, 100 draws, chain-specific offsets so R-hat is clearly above 1
    toy = rng.normal(size=(4, 100)) + np.array([0.0, 0.3, -0.2, 0.5])[:, None]
    post = Posterior(torch.zeros(4, 100, 1, 1, 1, dtype=torch.float64), z=torch.from_numpy(toy)[..., None])
    idata = to_arviz(post)
    z = idata.posterior["z"].sel(latent=0)
    classic = float(az.rhat(idata, var_names=["z"], method="split")["z"].sel(latent=0))
    assert classic == pytest.approx(_split_rhat(toy), rel=1e-10)
    # rank-normalised split R-hat (Vehtari et al. 2021): max of bulk and folded versions
    folded = np.abs(toy - np.median(toy))
    ref_rank = max(_split_rhat(_rank_normalised(toy)), _split_rhat(_rank_normalised(folded)))
    assert float(az.rhat(idata, var_names=["z"])["z"].sel(latent=0)) == pytest.approx(ref_rank, rel=1e-10)
    assert classic > 1.02 and z.shape == (4, 100)

    # ESS of iid draws is the number of draws: mean over 1024 independent pixels within 3 %
    # (per-pixel ESS of 1000 iid draws scatters by ~12 %, so the mean has ~0.4 % error)
    iid = Posterior(torch.from_numpy(rng.normal(size=(4, 250, 1, 32, 32))))
    ess = az.ess(iid.to_arviz())["x"].values
    assert abs(ess.mean() / 1000 - 1) < 0.03

    # AR(1) with rho = 0.9: ESS = S (1 - rho) / (1 + rho); 4 x 4000 draws, within 15 %
    rho, n = 0.9, 4000
    eps = rng.normal(size=(4, n))
    ar = np.empty((4, n))
    ar[:, 0] = eps[:, 0] / math.sqrt(1 - rho**2)
    for i in range(1, n):
        ar[:, i] = rho * ar[:, i - 1] + eps[:, i]
    idata_ar = to_arviz(Posterior(torch.zeros(4, n, 1, 1, 1), z=torch.from_numpy(ar)[..., None]))
    ess_ar = float(az.ess(idata_ar, var_names=["z"])["z"].sel(latent=0))
    assert ess_ar == pytest.approx(4 * n * (1 - rho) / (1 + rho), rel=0.15)


def test_hdi_matches_gaussian_quantiles():
    rng = np.random.default_rng(6)
    mu = rng.normal(size=(1, 4, 4))
    sigma = rng.uniform(0.5, 2.0, size=(1, 4, 4))
    draws = mu + sigma * rng.normal(size=(4, 2500, 1, 4, 4))
    idata = to_arviz(Posterior(torch.from_numpy(draws)))
    hdi = az.hdi(idata, hdi_prob=0.94)["x"]
    assert hdi.dims == ("channel", "row", "col", "hdi")
    lo, hi = hdi.sel(hdi="lower").values, hdi.sel(hdi="higher").values
    # for a symmetric unimodal law the 94% HDI is the central interval mu +- 1.881 sigma;
    # Monte Carlo error of these endpoints with 10^4 draws is ~0.03 sigma: allow 0.12 sigma
    zq = stats.norm.ppf(0.97)
    np.testing.assert_array_less(np.abs(lo - (mu - zq * sigma)) / sigma, 0.12)
    np.testing.assert_array_less(np.abs(hi - (mu + zq * sigma)) / sigma, 0.12)
    flat = draws.reshape(-1, 1, 4, 4)
    q = np.quantile(flat, [0.03, 0.97], axis=0)
    np.testing.assert_array_less(np.abs(lo - q[0]) / sigma, 0.12)
    np.testing.assert_array_less(np.abs(hi - q[1]) / sigma, 0.12)


# --------------------------------------------------------------- plots
@pytest.fixture
def no_pyplot_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before  # figures are not registered with pyplot


def test_plots_return_figures(no_pyplot_leak, exact_report, narrow_report, tmp_path):
    from matplotlib.figure import Figure

    post = _small_posterior()
    truth = torch.rand(1, 6, 5)
    reports = {"exact": exact_report, "narrow": narrow_report}
    cases = [
        # truth, back-projection, mean, std, |error|, 3 samples + colorbars of std and |error|
        (plot_reconstruction(post, truth, torch.zeros(1, 6, 5)), 10),
        # mean, std, 2 samples + std colorbar
        (plot_reconstruction(post.to_arviz(), num_samples=2), 5),
        (plot_calibration_curve(reports), 1),
        (plot_calibration_curve(exact_report), 1),
        (plot_pit(reports), 2),
        (plot_error_vs_std(post, truth), 2),
        (plot_sparsification(reports), 1),
        (plot_trace(post), 2),
        (plot_rank(post, max_latent=2), 2),
        (plot_rank(post.to_arviz()), 3),
    ]
    for fig, n_axes in cases:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == n_axes
    path = tmp_path / "cal.png"
    plot_calibration_curve(reports, path=path)
    assert path.stat().st_size > 1000


def test_plot_bad_input(no_pyplot_leak, exact_report):
    no_latent = Posterior(torch.randn(2, 10, 1, 3, 3))
    with pytest.raises(ValueError, match="z"):
        plot_trace(no_latent)
    with pytest.raises(TypeError, match="reports"):
        plot_calibration_curve([exact_report])
    with pytest.raises(ValueError, match="truth"):
        plot_reconstruction(no_latent, torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="channel"):
        plot_reconstruction(no_latent, channel=1)
    with pytest.raises(ValueError, match="max_latent"):
        plot_rank(_small_posterior(), max_latent=0)
