"""Cells of notebook 04 calibration: ``(kind, source)`` pairs read by ``../build_notebooks.py``.

``FAST``, ``INLINE`` and ``THREADS`` (shared cell preambles) are given by the builder.
"""

# ruff: noqa: F821
CELLS = [
    ("md", """
# 04 · Calibration over several test digits

One image says little about whether error bars are right: its pixels are strongly
correlated. Here we reconstruct several held-out digits (10 in full mode, 2 with `FAST=1`),
each with its own noise draw, by three methods, and pool the calibration metrics:

| method | what | uncertainty from |
|---|---|---|
| SUPN (Laplace) | learned structured prior `digits-supn`, `sample_posterior(method="laplace")` | latent Laplace + exact `x \\| z, y` |
| lin. DIP (TV-MAP) | `linearised_dip` with the TV-PredCP (`predcp_scale=0.05`) | Gaussian-linear model of the DIP |
| fixed-σ DIP | same DIP fit, `fixed_noise_posterior` | one σ for every pixel |

The metrics (definitions in `docs/calibration.md`):

* **coverage** at level `p`: fraction of truth pixels inside their central `p` posterior
  interval (sample quantiles), pooled over pixels and images; ideal = `p`;
* **calibration error**: `mean_p |coverage(p) − p|` over the levels 0.5, 0.6, …, 0.99;
* **PIT**: the rank of each truth pixel among its posterior samples; uniform if calibrated
  (U-shaped: over-confident, hump: under-confident);
* **test log-likelihood**: mean per-pixel `log N(truth; mean, std²)`;
* **AUSE**: area between the sparsification curve (RMSE after removing the pixels with the
  largest predicted std) and the oracle curve (removing the largest true errors); 0 means the
  std ranks the errors perfectly.
"""),
    ("code", INLINE + FAST + THREADS + """
import json
import time
import warnings

import arviz as az
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from bayes_recon.data import digits, simulate
from bayes_recon.diagnostics import (calibration, plot_calibration_curve, plot_error_vs_std, plot_pit,
                                     plot_sparsification)
from bayes_recon.inference import (LinearisedDIPConfig, SamplingConfig, fixed_noise_posterior,
                                   linearised_dip, sample_posterior)
from bayes_recon.metrics import psnr
from bayes_recon.models import UNetConfig, load_pretrained
from bayes_recon.operators import ParallelBeamCT

N_DIGITS = 2 if FAST else 10
DRAWS, CHAINS = (50, 2) if FAST else (100, 2)           # the same sample count for every method
SUPN_CONFIG = SamplingConfig(map_steps=10 if FAST else 30)
# DIP length: the fit keeps its lowest-loss iterate, and past a few hundred Adam steps at
# lr 1e-3 it starts fitting the noise (PSNR falls after its peak). 500 steps was chosen by
# looking at PSNR curves of the first test digits: fine for a calibration demo, not a benchmark.
DIP_CONFIG = LinearisedDIPConfig(
    iterations=300 if FAST else 500, lr=1e-3,
    network=UNetConfig(channels=8 if FAST else 16), predcp_scale=0.05, num_samples=DRAWS * CHAINS)
print(f"FAST={FAST}: {N_DIGITS} digits, {CHAINS} x {DRAWS} samples per method")
"""),
    ("md", """
## Collect posteriors

Same operator for every digit (20 angles), noise 5 % with seed `i` for digit `i`; every method
is given the true σ. The linearised DIP result keeps its fit (`res.fit`), which the fixed-σ
baseline reuses, so the two DIP methods differ only in their error bars.
"""),
    ("code", """
op = ParallelBeamCT(28, n_angles=20)
prior = load_pretrained("digits-supn")
truths = digits("test", size=28)[:N_DIGITS]
METHODS = ("SUPN (Laplace)", "lin. DIP (TV-MAP)", "fixed-σ DIP")
posteriors = {m: [] for m in METHODS}
measurements, seconds = [], {m: 0.0 for m in METHODS}
for i in range(N_DIGITS):
    truth = truths[i:i + 1]
    meas = simulate(op, truth, relative_noise=0.05, seed=i)
    measurements.append(meas)
    t0 = time.perf_counter()
    posteriors["SUPN (Laplace)"].append(sample_posterior(
        meas.y, op, prior, meas.noise_std, method="laplace", num_samples=DRAWS, num_chains=CHAINS,
        seed=i, config=SUPN_CONFIG, progress=False))
    t1 = time.perf_counter()
    res = linearised_dip(meas.y, op, meas.noise_std, DIP_CONFIG, seed=i, progress=False)
    posteriors["lin. DIP (TV-MAP)"].append(res.posterior)     # one "chain" of independent draws
    t2 = time.perf_counter()
    posteriors["fixed-σ DIP"].append(fixed_noise_posterior(res.fit, op, DRAWS * CHAINS, seed=i))
    seconds["SUPN (Laplace)"] += t1 - t0
    seconds["lin. DIP (TV-MAP)"] += t2 - t1
    print(f"digit {i}: SUPN {t1 - t0:.1f} s, linearised DIP {t2 - t1:.1f} s "
          f"(DIP PSNR {float(psnr(truth, res.fit.x, data_range=1.0)[0]):.2f} dB)")
"""),
    ("md", """
## Pooled metrics

`calibration(list_of_posteriors, list_of_truths)` pools pixel-level metrics over all images
(every digit has 784 pixels, so pooled coverage is the mean of the per-image coverages) and
averages the image-level ones (AUSE); `report.per_image` keeps one report per digit.
"""),
    ("code", """
reports = {m: calibration(posteriors[m], list(truths)) for m in METHODS}
rows = {}
for m, r in reports.items():
    per_image_tll = [p.test_log_likelihood for p in r.per_image]
    rows[m] = {"cov 0.5": r.coverage_at(0.5), "cov 0.9": r.coverage_at(0.9), "cov 0.95": r.coverage_at(0.95),
               "cal. error": r.calibration_error, "test LL": r.test_log_likelihood,
               "test LL min/img": min(per_image_tll), "AUSE": r.ause, "RMSE": r.rmse,
               "mean std": r.mean_std, "PIT KS": r.pit_ks_statistic}
table = pd.DataFrame(rows).T
table.round(3)
"""),
    ("code", "plot_calibration_curve(reports)"),
    ("code", "plot_pit(reports)"),
    ("code", "plot_sparsification(reports)"),
    ("md", """
Per pixel: is the error of the posterior mean of the size of its std? Left, `|error|` against
std (the lines `|error| = std` and `= 2 std`); right, the z-scores `(truth − mean) / std`
against N(0, 1) quantiles (on the diagonal if the marginals are right). First digit, every method.
"""),
    ("code", """
for m in METHODS:
    fig = plot_error_vs_std(posteriors[m][0], truths[0])
    fig.suptitle(m)
    display(fig)
"""),
    ("md", """
## ArviZ's own tools

Every posterior exports to `arviz.InferenceData` with the image as variable `x`, dims
`(chain, draw, channel, row, col)`, and the truth in `constant_data` (so `calibration` can take
the InferenceData alone). `az.summary` on a few pixels (select them with `coords`) gives the
posterior mean, sd, HDI and the MCMC diagnostics; these samples are independent draws, so
ESS ≈ number of draws and R-hat ≈ 1 (a NUTS run, as in `01_quickstart` full mode, is where
these diagnostics earn their keep).
"""),
    ("code", """
pixels = {"row": [14], "col": [8, 14, 20]}
idata_supn = posteriors["SUPN (Laplace)"][0].to_arviz(truth=truths[0], y=measurements[0].y[0])
idata_dip = posteriors["lin. DIP (TV-MAP)"][0].to_arviz(truth=truths[0], y=measurements[0].y[0])
print("truth at those pixels:", truths[0, 0, 14, pixels["col"]].numpy().round(3))
display(az.summary(idata_supn, var_names=["x"], coords=pixels))
az.summary(idata_dip, var_names=["x"], coords=pixels, kind="stats")   # one chain: no R-hat
"""),
    ("code", """
with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # arviz 0.23 trips matplotlib deprecations internally
    az.plot_trace(idata_supn, var_names=["x"], coords={"row": [14], "col": [14]}, compact=False)
"""),
    ("code", """
# The latent of the SUPN posterior is in the same InferenceData; and calibration reads it directly.
display(az.summary(idata_supn, var_names=["z"], coords={"latent": [0, 1, 2]}, kind="diagnostics"))
report_from_idata = calibration(idata_supn)      # truth from constant_data["x_true"]
report_from_posterior = calibration(posteriors["SUPN (Laplace)"][0], truths[0])
print("coverage from InferenceData:", np.round(report_from_idata.coverage, 3))
print("coverage from Posterior:    ", np.round(report_from_posterior.coverage, 3))
"""),
    ("md", """
## Reading the table

* A method with coverage far above nominal is **under-confident** (error bars too wide, PIT
  hump-shaped); far below is **over-confident** (PIT U-shaped).
* The fixed-σ baseline chooses one σ to explain the data residual; residual noise in the
  sinogram is spread over all pixels, so its bars are too wide in the background and carry no
  information about *where* the errors are (high AUSE).
* The test log-likelihood rewards calibrated *and* sharp: between two calibrated methods it
  prefers the one with smaller error bars.
"""),
    ("checks", """
# What this notebook claims, checked (tests/test_notebooks.py re-reads the printed JSON).
for m, r in reports.items():
    assert r.num_images == N_DIGITS and len(r.per_image) == N_DIGITS, m
    cov = np.asarray(r.coverage)
    assert ((cov >= 0) & (cov <= 1)).all() and (np.diff(cov) >= 0).all(), (m, cov)  # nested intervals
    # Equal pixel counts: pooled coverage is the plain mean of the per-image coverages.
    per_image_mean = np.mean([p.coverage for p in r.per_image], axis=0)
    assert np.allclose(cov, per_image_mean, atol=1e-12), (m, cov, per_image_mean)
    assert r.ause >= 0
assert np.allclose(report_from_idata.coverage, report_from_posterior.coverage, atol=1e-12)
assert reports["lin. DIP (TV-MAP)"].calibration_error < reports["fixed-σ DIP"].calibration_error, table
assert reports["SUPN (Laplace)"].test_log_likelihood > reports["fixed-σ DIP"].test_log_likelihood, table
print(json.dumps({m: {"levels": r.levels, "coverage": r.coverage, "calibration_error": r.calibration_error,
                      "test_log_likelihood": r.test_log_likelihood, "ause": r.ause,
                      "num_images": r.num_images} for m, r in reports.items()}))
"""),
]
