"""Cells of notebook 03 linearised DIP on CT: ``(kind, source)`` pairs read by ``../build_notebooks.py``.

``FAST``, ``INLINE`` and ``THREADS`` (shared cell preambles) are given by the builder.
"""

# ruff: noqa: F821
CELLS = [
    ("md", """
# 03 · The linearised deep image prior on sparse-view CT

A deep image prior (DIP) needs no training data: a U-Net `f_θ(z₀)` with a fixed input `z₀`
(here the FBP) is fitted to the one measurement `y`, with a TV penalty,
`min_θ ‖A f_θ(z₀) − y‖² + γ TV(f_θ(z₀))`. The network's structure is the prior.
The result is a point estimate `x* = f_θ*(z₀)`. To get error bars we **linearise the network
in its weights** around the fit:

`x ≈ x* + J (θ − θ*)`, with `θ ~ N(0, Σ_θ(φ))` and `y = A x + N(0, σ_y² I)`.

That is a Gaussian-linear model, a Gaussian process over images with kernel `K = J Σ_θ Jᵀ`,
so its posterior is exact and its evidence `log p(y | φ)` is available in closed form. The
prior `Σ_θ` puts a **Matérn-½ covariance on the 9 taps of every 3×3 filter**, with one
lengthscale `ℓ_b` and one variance `σ_b²` per U-Net block `b`. The hyperparameters `φ` are
fitted by

* **MLL**: type-II maximum likelihood (maximise the evidence), or
* **TV-MAP**: evidence plus the *TV predictive-complexity prior* on the lengthscales, which
  asks prior draws of the image to have small total variation (`predcp_scale = κ > 0`).
  The library's default `κ = 20` was chosen on training digits so that 90 % intervals cover
  about 90 % of the pixels of held-out digits; MLL's intervals are too wide (0.99–1.00).

We compare both with two cheap baselines that share the DIP code: **MC dropout** (dropout kept
on at test time) and a **fixed σ** (`x ~ N(x*, σ² I)` with σ fitted to the data residual).
`FAST=1` uses a smaller U-Net and fewer iterations.
"""),
    ("code", INLINE + FAST + THREADS + """
import json
import time

import matplotlib.pyplot as plt
import numpy as np

from bayes_recon.data import digits, simulate
from bayes_recon.diagnostics import calibration, plot_calibration_curve
from bayes_recon.inference import (LinearisedDIPConfig, LinearisedLaplace, fit_dip, fixed_noise_posterior,
                                   mc_dropout_posterior)
from bayes_recon.metrics import psnr
from bayes_recon.models import UNetConfig
from bayes_recon.operators import ParallelBeamCT

CHANNELS = 16 if FAST else 32          # U-Net channels per scale (the papers use 32)
ITERATIONS, LR = (300, 1e-3) if FAST else (1000, 1e-4)
NUM_SAMPLES = 500 if FAST else 2000
PREDCP_SCALE = LinearisedDIPConfig.predcp_scale  # κ = 20: chosen on training digits for calibrated intervals
print(f"FAST={FAST}: {CHANNELS}-channel U-Net, {ITERATIONS} DIP iterations, {NUM_SAMPLES} samples")
"""),
    ("md", "The problem of `01_quickstart`: a held-out digit, 20 angles, 5 % noise (σ known)."),
    ("code", """
truth = digits("test", size=28)[:1]
op = ParallelBeamCT(28, n_angles=20)
meas = simulate(op, truth, relative_noise=0.05, seed=0)
y, sigma = meas.y, meas.noise_std
x_fbp = op.fbp(y)
print(f"noise_std = {sigma:.4f}, FBP PSNR = {float(psnr(truth, x_fbp, data_range=1.0)[0]):.2f} dB")
"""),
    ("md", """
## 1. Fit the DIP

TV weight `γ = 3σ` (the papers' scaling); `fit_dip` keeps the iterate with the lowest loss.
Passing `truth=` only records a PSNR curve for the plot; the fit never sees the truth.
"""),
    ("code", """
t0 = time.perf_counter()
fit = fit_dip(y, op, tv_weight=3 * sigma, iterations=ITERATIONS, lr=LR, seed=0,
              network_config=UNetConfig(channels=CHANNELS), progress=False, truth=truth)
print(f"{time.perf_counter() - t0:.1f} s; best iteration {fit.best_iteration}, "
      f"DIP PSNR {float(psnr(truth, fit.x, data_range=1.0)[0]):.2f} dB")
fig, (a0, a1) = plt.subplots(1, 2, figsize=(9, 3))
a0.semilogy(fit.loss_history); a0.set(xlabel="iteration", ylabel="loss", title="DIP loss")
a1.plot(fit.psnr_history); a1.set(xlabel="iteration", ylabel="PSNR (dB)", title="PSNR vs truth (monitoring only)");
"""),
    ("md", """
## 2. Linearise

`LinearisedLaplace(fit, op, noise_std=σ)` computes the Jacobian `J` of the output with
respect to all 3×3 filters (dense here: 784 pixels × a few ten thousand weights) and
precomputes the kernel pieces `J_b (I ⊗ M_δ) J_bᵀ` for every block `b` and every distinct
tap distance `δ` of a 3×3 grid (0, 1, √2, 2, √5, √8). Any hyperparameter setting is then a
weighted sum of these pieces plus one Cholesky: that is what makes evidence optimisation
cheap. We pass the known σ (leave `noise_std=None` to fit `σ_y` too).
"""),
    ("code", """
la = LinearisedLaplace(fit, op, noise_std=sigma, progress=False)
num_weights = sum(g.size for g in la.groups)
print(f"path={la.path!r}, blocks {la.block_names}, {num_weights} linearised weights")
print({k: round(v, 2) for k, v in la.timings.items()}, "seconds")
log_evidence_init = la.log_evidence()
print(f"log evidence at the initial hyperparameters: {log_evidence_init:.1f}")
"""),
    ("md", """
## 3. Hyperparameters by evidence (MLL), then with the TV-PredCP (TV-MAP)

`optimise_evidence` runs L-BFGS on the log-hyperparameters; its objective is deterministic, so
it converges in tens of iterations. The second call starts from the MLL solution and adds the
TV-PredCP log-prior. `sample` then draws exact posterior samples (Cholesky of the `N × N`
posterior covariance); their mean is `x*`.
"""),
    ("code", """
ev_mll = la.optimise_evidence(progress=False)
phi_mll = (la.log_lengthscale.clone(), la.log_variance.clone())
hp_mll = la.hyperparameters
post_mll = la.sample(NUM_SAMPLES, seed=0, num_chains=2)
print(f"MLL:    {ev_mll.iterations} iterations, {ev_mll.seconds:.1f} s, log evidence {ev_mll.log_evidence:.1f}")

ev_tv = la.optimise_evidence(predcp_scale=PREDCP_SCALE, progress=False)
phi_tv = (la.log_lengthscale.clone(), la.log_variance.clone())
hp_tv = la.hyperparameters
post_tv = la.sample(NUM_SAMPLES, seed=0, num_chains=2)
print(f"TV-MAP: {ev_tv.iterations} iterations, {ev_tv.seconds:.1f} s, log evidence {ev_tv.log_evidence:.1f}"
      " (it maximises evidence + log prior, so the evidence alone is usually a little below MLL's)")

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(ev_mll.trace, label="MLL: log evidence")
ax.plot(np.arange(len(ev_tv.trace)) + len(ev_mll.trace), ev_tv.trace, label="TV-MAP: evidence + log PredCP")
ax.set(xlabel="function evaluation", ylabel="objective", title="evidence optimisation"); ax.legend(fontsize="small");
"""),
    ("md", """
## 4. The learned Matérn filter prior

Each 3×3 filter of block `b` is `N(0, σ_b² C(ℓ_b))` with `C(ℓ)_ij = exp(−‖c_i − c_j‖ / ℓ)` over
the tap coordinates. `la.prior.filter_covariance(b, log ℓ, log σ²)` returns that 9×9 matrix;
below: the lengthscales and variances per block, the correlation of the centre tap with the
others, and what the prior means in *image* space, the pixel-wise prior std
`sqrt(diag K)` with `K = J Σ_θ Jᵀ` (`la.kernel.image_kernel`).
"""),
    ("code", """
blocks = [la.groups[gi].name for gi in la.prior.matern_groups]
print("| block | ℓ (MLL) | ℓ (TV-MAP) | σ² (MLL) | σ² (TV-MAP) |\\n|---|---|---|---|---|")
for b in blocks:
    print(f"| {b} | {hp_mll['lengthscale/' + b]:.3f} | {hp_tv['lengthscale/' + b]:.3f} "
          f"| {hp_mll['variance/' + b]:.3g} | {hp_tv['variance/' + b]:.3g} |")

fig, axes = plt.subplots(2, len(blocks) + 1, figsize=(2.4 * (len(blocks) + 1), 5))
for row, (name, (log_ls, log_var)) in enumerate([("MLL", phi_mll), ("TV-MAP", phi_tv)]):
    for col, gi in enumerate(la.prior.matern_groups):
        cov = la.prior.filter_covariance(gi, log_ls, log_var)
        corr = (cov[4] / cov[4, 4]).reshape(3, 3).numpy()       # tap 4 is the centre of 3x3
        axes[row, col].imshow(corr, cmap="viridis", vmin=0, vmax=1)
        axes[row, col].set_title(f"{name}: {la.groups[gi].name}", fontsize=8); axes[row, col].axis("off")
    with torch.no_grad():
        prior_std = la.kernel.image_kernel(log_ls, log_var).diagonal().sqrt().reshape(28, 28)
    im = axes[row, -1].imshow(prior_std.numpy(), cmap="magma")
    axes[row, -1].set_title(f"{name}: image prior std", fontsize=8); axes[row, -1].axis("off")
    fig.colorbar(im, ax=axes[row, -1], fraction=0.046)
fig.suptitle("correlation of the centre tap with each tap (left), prior std of J θ (right)");
"""),
    ("md", """
The lengthscales are in filter-pixel units: at `ℓ = 0.05` neighbouring taps are essentially
independent (`e^{−1/ℓ} ≈ 0`), at `ℓ ≈ 1` they are strongly correlated and the filters are
smooth. Compare the two rows above: the evidence alone tends to pick short lengthscales,
and the TV-PredCP, which penalises prior draws with large total variation, moves them
towards smoother filters. The image-space prior std shows where the linearised network
*can* change the image at all.

## 5. Baselines

Fixed σ: `x ~ N(x*, σ² I)` with σ chosen so that pushed through `A` it explains the data
residual; one number for the whole image, no structure. MC dropout: the same DIP fitted with
`Dropout2d(p = 0.05)` after every activation, sampled with dropout on.
"""),
    ("code", """
post_fixed = fixed_noise_posterior(fit, op, NUM_SAMPLES, seed=0)
t0 = time.perf_counter()
fit_do = fit_dip(y, op, tv_weight=3 * sigma, iterations=ITERATIONS, lr=LR, seed=0,
                 network_config=UNetConfig(channels=CHANNELS, dropout=0.05), progress=False)
post_mc = mc_dropout_posterior(fit_do, NUM_SAMPLES, seed=0)
print(f"fixed σ = {post_fixed.extras['image_std']:.4f}; MC-dropout fit {time.perf_counter() - t0:.1f} s")
"""),
    ("md", """
## 6. Compare: test log-likelihood and coverage

Per method: PSNR of the posterior mean, mean per-pixel test log-likelihood
`log N(truth; mean, std²)` (higher is better: it punishes both over- and under-confidence),
coverage of the central 50/90/95 % intervals (ideal: the nominal value) and the mean
posterior std.
"""),
    ("code", """
posteriors = {"lin. DIP (MLL)": post_mll, "lin. DIP (TV-MAP)": post_tv,
              "MC dropout": post_mc, "fixed σ": post_fixed}
reports = {name: calibration(p, truth[0]) for name, p in posteriors.items()}
print("| method | PSNR mean (dB) | test log-lik. | cov. 50 % | cov. 90 % | cov. 95 % | cal. error | mean std |")
print("|---|---|---|---|---|---|---|---|")
for name, r in reports.items():
    p = float(psnr(truth, posteriors[name].mean[None], data_range=1.0)[0])
    print(f"| {name} | {p:.2f} | {r.test_log_likelihood:.3f} | {r.coverage_at(0.5):.3f} | "
          f"{r.coverage_at(0.9):.3f} | {r.coverage_at(0.95):.3f} | {r.calibration_error:.3f} | {r.mean_std:.4f} |")
"""),
    ("code", "plot_calibration_curve(reports)"),
    ("md", """
Coverage far above nominal means error bars wider than the errors (under-confident), far
below means too narrow (over-confident); the test log-likelihood penalises both. In our runs
MC dropout is strongly over-confident, and its mean is also a worse reconstruction, because
dropout perturbs the fit itself. The linearised DIP's bars depend on the fitted network:
with the small fast-mode U-Net they were close to nominal on this digit, with the papers'
32-channel U-Net (full mode) they came out wider than the errors (coverage near 1 at 90 %),
yet still with the best test log-likelihood of the four. `04_calibration` pools several digits.
"""),
    ("code", """
fig, axes = plt.subplots(1, len(posteriors) + 1, figsize=(3 * (len(posteriors) + 1), 3))
err = (truth[0, 0] - fit.x[0, 0]).abs().numpy()
im = axes[0].imshow(err, cmap="magma"); axes[0].set_title("|truth − x*|"); fig.colorbar(im, ax=axes[0], fraction=0.046)
for ax, (name, p) in zip(axes[1:], posteriors.items()):
    im = ax.imshow(p.std[0].numpy(), cmap="magma"); ax.set_title(f"std: {name}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
for ax in axes:
    ax.axis("off")
"""),
    ("md", """
A good error map looks like the error: large where the reconstruction is wrong (edges of the
strokes), small in the flat background. The fixed-σ baseline cannot do that by construction.

The whole pipeline is also one call, `linearised_dip(y, op, noise_std, LinearisedDIPConfig(...))`,
which `04_calibration` uses.
"""),
    ("checks", """
# What this notebook claims, checked (tests/test_notebooks.py re-reads the printed JSON).
dip_psnr = float(psnr(truth, fit.x, data_range=1.0)[0])
fbp_psnr = float(psnr(truth, x_fbp, data_range=1.0)[0])
assert dip_psnr > fbp_psnr, (dip_psnr, fbp_psnr)
# Type-II maximum likelihood raised the evidence above its value at the initial hyperparameters.
assert ev_mll.log_evidence > log_evidence_init, (ev_mll.log_evidence, log_evidence_init)
# Exact samples: their mean is x* up to Monte Carlo error (5 standard errors, all pixels) ...
se = post_tv.std[0] / NUM_SAMPLES ** 0.5
mean_err = float(((post_tv.mean[0] - fit.x[0, 0]).abs() / se).max())
assert mean_err < 5.0, mean_err
# ... and their std matches the exact marginal std (relative MC error ~ 1/sqrt(2S) = 3 % at S=500).
exact_std = la.posterior_covariance().diagonal().sqrt().reshape(28, 28).float()
std_rel_err = float(((post_tv.std[0] - exact_std).abs() / exact_std).max())
assert std_rel_err < 0.2, std_rel_err
for r in reports.values():
    assert all(0.0 <= c <= 1.0 for c in r.coverage), r.coverage
tll = {name: r.test_log_likelihood for name, r in reports.items()}
assert tll["lin. DIP (TV-MAP)"] > tll["MC dropout"], tll
print(json.dumps({"psnr_dip": dip_psnr, "psnr_fbp": fbp_psnr, "test_log_likelihood": tll,
                  "coverage_90": {n: r.coverage_at(0.9) for n, r in reports.items()},
                  "mean_error_in_se": mean_err, "std_relative_error": std_rel_err,
                  "log_evidence": {"init": log_evidence_init, "mll": ev_mll.log_evidence,
                                   "tv_map": ev_tv.log_evidence}}))
"""),
]
