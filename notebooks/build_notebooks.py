"""Write the example notebooks from the cell sources below (run after editing).

Usage: python notebooks/build_notebooks.py

Each notebook reads ``BAYES_RECON_FAST`` (set by the test suite) to shrink its
loops, so CI executes every notebook top to bottom in seconds.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).parent
FAST = "import os\nFAST = os.environ.get('BAYES_RECON_FAST', '0') == '1'"


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md"
                        else nbformat.v4.new_code_cell(src))
    return nb


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["02_supn_prior"] = [
    ("md", """
# 02 · The structured (SUPN) prior

A SUPN-VAE decodes a latent `z` into a Gaussian over images, `N(μ(z), (UᵀU)⁻¹)`, whose
precision has a sparse Cholesky factor `U` on a local stencil. Here: samples, the learned
pixel correlations, and exact conditional sampling ("what does the model believe here,
given that?").
"""),
    ("code", FAST + """
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
]


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(notebook(cells), HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
