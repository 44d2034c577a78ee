"""Cells of notebook 01 quickstart: ``(kind, source)`` pairs read by ``../build_notebooks.py``.

``FAST``, ``INLINE`` and ``THREADS`` (shared cell preambles) are given by the builder.
"""

# ruff: noqa: F821
CELLS = [
    ("md", """
# 01 · Quickstart: sparse-view CT of a digit, with error bars

One held-out test digit (28×28), measured by parallel-beam CT at only 20 angles with 5 %
Gaussian noise: `y = A x + ε`. That is 20 angles × 40 detectors = 800 noisy numbers for 784
unknowns, and with so few angles whole directions of image space are barely measured: the
problem is ill-posed, a reconstruction needs a prior, and an honest one comes with error
bars. This notebook walks the whole pipeline once:

1. classical baselines: filtered back-projection (FBP) and total variation (TV);
2. the shipped structured prior `digits-supn` (a SUPN-VAE, see `02_supn_prior`);
3. the MAP reconstruction (`map_estimate`, method `"jpmap"`);
4. the posterior (`sample_posterior`: a Laplace approximation in fast mode, NUTS in full mode);
5. ArviZ export and a calibration check against the truth.

`FAST` (the environment variable `BAYES_RECON_FAST=1`, set by the test suite) shrinks
iteration and sample counts so the notebook runs in well under a minute; full mode took about
6 minutes on one core, nearly all of it NUTS.
"""),
    ("code", INLINE + FAST + THREADS + """
import time

import matplotlib.pyplot as plt
import numpy as np

from bayes_recon.data import digits, simulate
from bayes_recon.diagnostics import calibration, plot_calibration_curve, plot_reconstruction, plot_trace
from bayes_recon.inference import MAPConfig, SamplingConfig, map_estimate, sample_posterior
from bayes_recon.metrics import psnr, ssim
from bayes_recon.models import load_pretrained
from bayes_recon.operators import ParallelBeamCT, adjointness_error, tv_reconstruction

MAP_ITERATIONS = 5 if FAST else 30
POSTERIOR_METHOD = "laplace" if FAST else "nuts"
NUM_SAMPLES, NUM_CHAINS = 50, 2   # draws per chain (after as many warm-up steps for NUTS), chains
SAMPLING = SamplingConfig(map_steps=20) if FAST else SamplingConfig(warmup=50, max_tree_depth=6)
print(f"FAST={FAST}: MAP {MAP_ITERATIONS} iterations, posterior {POSTERIOR_METHOD!r}, "
      f"{NUM_CHAINS} x {NUM_SAMPLES} draws")
"""),
    ("md", """
## The problem

`digits("test", 28)` are scikit-learn's digits (held-out split) upsampled to 28×28 in [0, 1].
`ParallelBeamCT` is an explicit sparse matrix with an exact adjoint (the adjointness error
below is at round-off level), and `simulate` adds white noise with
`noise_std = 0.05 · mean|A x|`. The noise level is known here; every method below is given it.
"""),
    ("code", """
truth = digits("test", size=28)[:1]                       # (1, 1, 28, 28)
op = ParallelBeamCT(28, n_angles=20)
meas = simulate(op, truth, relative_noise=0.05, seed=0)
y, sigma = meas.y, meas.noise_std
print("image", tuple(truth.shape), "-> sinogram", tuple(y.shape), f"noise_std = {sigma:.4f}")
print(f"adjointness error {adjointness_error(op):.1e}, ||A|| = {op.norm():.2f}")
"""),
    ("md", """
## Classical baselines

FBP inverts the ray transform as if all angles were measured; with 20 of them it streaks.
TV (Chambolle–Pock on `½‖Ax − y‖² + λ TV(x)`) prefers piecewise-constant images. Its weight
`λ = 0.2 · σ · ‖A‖` is the one the `bayes-recon demo` uses, chosen on *training* digits so
that the test digit plays no part in tuning.
"""),
    ("code", """
x_fbp = op.fbp(y)
x_tv = tv_reconstruction(op, y, weight=0.2 * sigma * op.norm(), iterations=300 if FAST else 1000,
                         progress=False)
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for ax, img, title in zip(axes, [truth, y, x_fbp, x_tv], ["truth", "sinogram y", "FBP", "TV"]):
    ax.imshow(img[0, 0].numpy(), cmap="gray", aspect="auto" if title == "sinogram y" else "equal")
    ax.set_title(title); ax.axis("off")
"""),
    ("md", """
## The learned prior

`load_pretrained("digits-supn")` is a SUPN-VAE trained on the digits' *training* split:
a latent `z ~ N(0, I)` (16-d) decodes to a Gaussian over images `N(μ(z), (UᵀU)⁻¹)` whose
precision has a sparse Cholesky factor on a 5×5 stencil. With the linear forward model this
is the Pyro program `z → x → y`. Because `x | z` is Gaussian and `y | x` is linear-Gaussian,
`x` can be integrated out exactly: only the 16 latent numbers need an iterative optimiser
or sampler, and `x` given `z` follows by (sparse) linear algebra.
"""),
    ("code", """
prior = load_pretrained("digits-supn")
print(prior.config)
print("held-out negative ELBO (bits/pixel):", round(prior.metadata["test_bpp"], 3))
"""),
    ("md", """
## MAP reconstruction (`jpmap`)

`map_estimate` minimises `J(x, z) = ‖Ax − y‖²/(2σ²) − log p(x | z) + ‖z‖²/2`. The `"jpmap"`
method alternates an *exact* x-step (for fixed `z` the minimiser in `x` solves the linear
system `(AᵀA/σ² + Λ(z)) x = Aᵀy/σ² + Λ(z) μ(z)`) with an L-BFGS z-step that is accepted only
if it lowers `J`, so `J` never increases. `objective_history` shows it.
"""),
    ("code", """
t0 = time.perf_counter()
rec = map_estimate(y, op, prior, sigma, method="jpmap", config=MAPConfig(max_iterations=MAP_ITERATIONS),
                   progress=False)
print(f"{time.perf_counter() - t0:.1f} s, converged={rec.converged}, "
      f"J per iteration: {np.round(rec.objective_history, 1)}")
"""),
    ("md", """
## The posterior

`sample_posterior` samples `z` from the *collapsed* posterior `p(z | y) ∝ p(y | z) p(z)`, in
which `x` is marginalised exactly, and follows every `z` draw by one exact draw of `x | z, y`
(a Gaussian). `method="nuts"` runs Pyro's NUTS over `z` (full mode); `method="laplace"`
replaces it by a Gaussian at the collapsed MAP of `z` with the Hessian as precision (fast
mode: no warm-up, independent draws). Either way the image samples carry the prior's
pixel correlations *and* the latent uncertainty.
"""),
    ("code", """
t0 = time.perf_counter()
post = sample_posterior(y, op, prior, sigma, method=POSTERIOR_METHOD, num_samples=NUM_SAMPLES,
                        num_chains=NUM_CHAINS, seed=0, config=SAMPLING, progress=False)
print(f"{time.perf_counter() - t0:.1f} s:", post)
"""),
    ("md", """
## ArviZ

`post.to_arviz(truth=..., y=...)` gives an `arviz.InferenceData`: the image `x` with dims
`(chain, draw, channel, row, col)`, the latent `z`, sampler statistics (NUTS), the
measurement in `observed_data` and the truth in `constant_data`. Every ArviZ tool applies;
here the convergence summary of the latent (R-hat near 1 and a reasonable ESS are what to
look for after NUTS; Laplace draws are independent, so there ESS ≈ number of draws).
"""),
    ("code", """
import arviz as az

idata = post.to_arviz(truth=truth[0], y=y[0])
print(idata.groups(), idata.posterior["x"].dims)
az.summary(idata, var_names=["z"], coords={"latent": [0, 1, 2, 3]}, kind="diagnostics")
"""),
    ("code", """
stats = idata.sample_stats if "sample_stats" in idata.groups() else {}
if "diverging" in stats:  # NUTS only: Laplace draws have no transitions
    print(f"divergent transitions: {int(stats['diverging'].sum())}, "
          f"moved in {float(stats['accepted'].mean()):.0%} of transitions, "
          f"mean tree depth {float(stats['tree_depth'].mean()):.1f}")
plot_trace(post, max_latent=4)
"""),
    ("md", """
## Are the error bars right?

`calibration(post, truth)` compares the samples with the truth pixel by pixel:

* **coverage**: the fraction of truth pixels inside the central `p`-interval of their
  posterior marginal, for several nominal `p` (well calibrated: coverage ≈ `p`);
* **calibration error**: the mean of `|coverage − p|` over the levels;
* **test log-likelihood**: mean per-pixel `log N(truth; mean, std²)`, which rewards error
  bars that are both honest and tight;
* **PIT** values, z-score statistics and **AUSE** (does the std rank the errors?).

Pixels of one image are correlated, so these are descriptive numbers for one digit;
`04_calibration` pools several.
"""),
    ("code", """
report = calibration(post, truth[0])
print(report.to_markdown())
"""),
    ("code", "plot_reconstruction(post, truth=truth[0], back_projection=x_fbp[0], num_samples=3)"),
    ("code", "plot_calibration_curve({f'SUPN {POSTERIOR_METHOD}': report})"),
    ("md", """
## Summary

PSNR (dB, data range 1) and SSIM of every point estimate against the truth; the posterior
mean (the MMSE estimate) comes with its coverage at 90 %.
"""),
    ("code", """
estimates = {"FBP": x_fbp, "TV": x_tv, "MAP (jpmap)": rec.x, f"posterior mean ({POSTERIOR_METHOD})": post.mean[None]}
scores = {name: (float(psnr(truth, x, data_range=1.0)[0]), float(ssim(truth, x, data_range=1.0)[0]))
          for name, x in estimates.items()}
print("| method | PSNR (dB) | SSIM |\\n|---|---|---|")
for name, (p, s) in scores.items():
    print(f"| {name} | {p:.2f} | {s:.3f} |")
print(f"\\nposterior: coverage at 90 % = {report.coverage_at(0.9):.3f}, "
      f"calibration error = {report.calibration_error:.3f}, "
      f"test log-likelihood = {report.test_log_likelihood:.3f} nats/pixel")
"""),
    ("checks", """
# What this notebook claims, checked (tests/test_notebooks.py re-reads the printed JSON).
import json

psnrs = {name: p for name, (p, _) in scores.items()}
assert psnrs["MAP (jpmap)"] > psnrs["FBP"] and psnrs["MAP (jpmap)"] > psnrs["TV"], psnrs
assert all(0.0 <= c <= 1.0 for c in report.coverage), report.coverage
assert idata.posterior["x"].dims == ("chain", "draw", "channel", "row", "col")
assert idata.posterior["x"].shape == (NUM_CHAINS, NUM_SAMPLES, 1, 28, 28)
print(json.dumps({"psnr": psnrs, "levels": report.levels, "coverage": report.coverage,
                  "calibration_error": report.calibration_error,
                  "test_log_likelihood": report.test_log_likelihood,
                  "map_objective": rec.objective_history}))
"""),
]
