"""Cells of notebook 02 SUPN prior: ``(kind, source)`` pairs read by ``../build_notebooks.py``.

``FAST``, ``INLINE`` and ``THREADS`` (shared cell preambles) are given by the builder.
"""

# ruff: noqa: F821
CELLS = [
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
