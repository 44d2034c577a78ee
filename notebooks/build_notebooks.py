"""Write the example notebooks from the cell sources below (run after editing).

Usage: python notebooks/build_notebooks.py

Each notebook reads ``BAYES_RECON_FAST`` (set by the test suite) to shrink its
loops, so CI executes every notebook top to bottom in seconds. A cell of kind
``"checks"`` is a code cell tagged ``checks``: it asserts what the notebook
claims and prints one JSON line that ``tests/test_notebooks.py`` checks again.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).parent
FAST = "import os\nFAST = os.environ.get('BAYES_RECON_FAST', '0') == '1'"
# The diagnostics return matplotlib Figures without touching pyplot; the inline backend's
# display hook is what renders a returned Figure as an image in Jupyter.
INLINE = "%matplotlib inline\n"
CHECKS_TAG = "checks"


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook from ``(kind, source)`` pairs; kind is ``"md"``, ``"code"`` or ``"checks"``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(src))
        elif kind == "checks":
            nb.cells.append(nbformat.v4.new_code_cell(src, metadata={"tags": [CHECKS_TAG]}))
        else:
            raise ValueError(f"cell kind must be 'md', 'code' or 'checks', got {kind!r}")
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating gives no spurious diff
    return nb


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

THREADS = """
import torch
# The problems here are tiny (784 pixels). On a busy 2-core machine one thread ran the
# dense float64 linear algebra several times faster than two (oversubscription), so we
# pin it; raise it on a machine of your own.
torch.set_num_threads(1)
"""

NOTEBOOKS["01_quickstart"] = [
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
if "sample_stats" in idata.groups():  # NUTS only: Laplace draws have no sampler statistics
    stats = idata.sample_stats
    print(f"divergent transitions: {int(stats['diverging'].sum())}, "
          f"mean acceptance {float(stats['acceptance_rate'].mean()):.2f}, "
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
scores = {name: (float(psnr(x, truth, data_range=1.0)[0]), float(ssim(x, truth, data_range=1.0)[0]))
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


NOTEBOOKS["02_supn_prior"] = [
    ("md", """
# 02 · The structured (SUPN) prior

A SUPN-VAE decodes a latent `z` into a Gaussian over images, `N(μ(z), (UᵀU)⁻¹)`, whose
precision has a sparse Cholesky factor `U` on a local stencil. Here: samples, the learned
pixel correlations, and exact conditional sampling ("what does the model believe here,
given that?").
"""),
    ("code", INLINE + FAST + """
import torch
from bayes_recon.models import load_pretrained
from bayes_recon.models.introspection import plot_prior_samples, plot_correlations, plot_mean_and_std
prior = load_pretrained("digits-supn")
prior.config, prior.metadata["test_bpp"]
"""),
    ("md", "Decoded means and one structured sample each: the sample's errors are correlated, not pixel noise."),
    ("code", "plot_prior_samples(prior, num=4 if FAST else 8, seed=0)"),
    ("md", "Correlations of two pixels with the whole image under `p(x | z)` (red positive, blue negative)."),
    ("code", "plot_correlations(prior, [(14, 14), (8, 10)], seed=0)"),
    ("code", "plot_mean_and_std(prior, seed=0)"),
    ("md", """
## Conditional sampling

Observe the left half of a decoded sample exactly and sample the right half from the
Gaussian conditional `x_U | x_K` (precision form, exact samples).
"""),
    ("code", """
z = torch.randn(1, prior.config.latent_dim, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    dist = prior.decode(z)
    x = dist.sample(generator=torch.Generator().manual_seed(2))
observed = torch.zeros(1, 28, 28, dtype=torch.bool)
observed[..., :14] = True
cond = dist.condition(observed, x)
samples = cond.sample((4,), seed=0)
samples.shape, cond.num_unobserved
"""),
    ("code", """
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, 6, figsize=(12, 2.2))
panels = [x[0, 0], cond.mean.reshape(-1, 1, 28, 28)[0, 0]] + [s.reshape(-1, 1, 28, 28)[0, 0] for s in samples]
titles = ["sample (truth)", "conditional mean"] + [f"cond. sample {i}" for i in range(4)]
for ax, img, t in zip(axes, panels, titles):
    ax.imshow(img.detach().numpy(), cmap="gray", vmin=0, vmax=1); ax.set_title(t, fontsize=8); ax.axis("off")
"""),
    ("checks", """
# Exactness of the conditional, checked (tests/test_notebooks.py re-reads the printed JSON):
# observed pixels are copied, and many draws match the exact conditional mean and variance.
import json
draws = cond.sample((400,), seed=1).reshape(400, 28, 28).double()
free = ~observed[0]
assert bool((draws[:, observed[0]] == x[0, 0][observed[0]].double()).all())
exact_mean = cond.mean.reshape(28, 28).double()[free]
exact_var = cond.marginal_variance().reshape(28, 28).double()[free]
z_mean = float(((draws[:, free].mean(0) - exact_mean) / (exact_var / 400).sqrt()).abs().max())
var_ratio = float((draws[:, free].var(0) / exact_var).mean())
assert cond.num_unobserved == int(free.sum()) == 28 * 14
assert z_mean < 5.0, z_mean                # 5 standard errors, over all 392 free pixels
assert abs(var_ratio - 1.0) < 0.15, var_ratio  # per-pixel relative MC error sqrt(2/399) = 7 %
print(json.dumps({"num_unobserved": cond.num_unobserved, "mean_error_in_se": z_mean,
                  "variance_ratio": var_ratio}))
"""),
]


NOTEBOOKS["03_linearised_dip_ct"] = [
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
from bayes_recon.inference import LinearisedLaplace, fit_dip, fixed_noise_posterior, mc_dropout_posterior
from bayes_recon.metrics import psnr
from bayes_recon.models import UNetConfig
from bayes_recon.operators import ParallelBeamCT

CHANNELS = 16 if FAST else 32          # U-Net channels per scale (the papers use 32)
ITERATIONS, LR = (300, 1e-3) if FAST else (1000, 1e-4)
NUM_SAMPLES = 500 if FAST else 2000
PREDCP_SCALE = 0.05                   # κ of the TV-PredCP (the papers' recommended value)
print(f"FAST={FAST}: {CHANNELS}-channel U-Net, {ITERATIONS} DIP iterations, {NUM_SAMPLES} samples")
"""),
    ("md", "The problem of `01_quickstart`: a held-out digit, 20 angles, 5 % noise (σ known)."),
    ("code", """
truth = digits("test", size=28)[:1]
op = ParallelBeamCT(28, n_angles=20)
meas = simulate(op, truth, relative_noise=0.05, seed=0)
y, sigma = meas.y, meas.noise_std
x_fbp = op.fbp(y)
print(f"noise_std = {sigma:.4f}, FBP PSNR = {float(psnr(x_fbp, truth, 1.0)[0]):.2f} dB")
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
      f"DIP PSNR {float(psnr(fit.x, truth, 1.0)[0]):.2f} dB")
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
    p = float(psnr(posteriors[name].mean[None], truth, 1.0)[0])
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
dip_psnr = float(psnr(fit.x, truth, 1.0)[0])
fbp_psnr = float(psnr(x_fbp, truth, 1.0)[0])
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


NOTEBOOKS["04_calibration"] = [
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
          f"(DIP PSNR {float(psnr(res.fit.x, truth, 1.0)[0]):.2f} dB)")
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


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
