"""Figures that show what a structured prior has learned (returned, saved only if asked)."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .supn_vae import SUPNVAE


def _finish(fig: Figure, path) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _latents(prior: SUPNVAE, num: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    dtype = next(prior.parameters()).dtype
    return torch.randn(num, prior.config.latent_dim, generator=gen, dtype=dtype)


@torch.no_grad()
def plot_prior_samples(prior: SUPNVAE, num: int = 8, seed: int = 0, path=None) -> Figure:
    """Rows: decoded means ``μ(z)`` and one structured sample ``x ~ p(x|z)`` each.

    ``z ~ N(0, I)`` with ``seed``; channel 0 is shown.
    """
    z = _latents(prior, num, seed)
    dist = prior.decode(z)
    samples = dist.sample(generator=torch.Generator().manual_seed(seed + 1))
    fig = Figure(figsize=(1.3 * num, 2.8))
    axes = fig.subplots(2, num, squeeze=False)
    for j in range(num):
        for i, (img, label) in enumerate(((dist.loc[j, 0], "mean μ(z)"),
                                          (samples[j, 0], "sample x"))):
            ax = axes[i, j]
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
    return _finish(fig, path)


@torch.no_grad()
def plot_correlations(prior: SUPNVAE, pixels, z: torch.Tensor | None = None, seed: int = 0,
                      path=None) -> Figure:
    """Correlation of chosen pixels with every other pixel under ``p(x | z)``.

    Red is positive, blue negative (a symmetric ``RdBu_r`` scale in [-1, 1]);
    the chosen pixel is marked. ``z`` defaults to one draw from ``N(0, I)``.

    Parameters
    ----------
    prior : SUPNVAE
    pixels : sequence of (row, col)
    z : torch.Tensor, optional
        ``(1, latent_dim)``.
    """
    if z is None:
        z = _latents(prior, 1, seed)
    dist = prior.decode(z)
    fig = Figure(figsize=(2.6 * (len(pixels) + 1), 2.8))
    axes = fig.subplots(1, len(pixels) + 1, squeeze=False)[0]
    axes[0].imshow(dist.loc[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("mean μ(z)")
    for ax, (r, c) in zip(axes[1:], pixels):
        corr = dist.correlation_map((0, r, c))
        corr = corr.reshape(-1, *dist.event_shape)[0, 0].numpy()
        im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.plot([c], [r], marker="x", color="k")
        ax.set_title(f"corr. with ({r}, {c})")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[1:]), shrink=0.8)
    return fig if path is None else (fig.savefig(path, dpi=100) or fig)


@torch.no_grad()
def plot_mean_and_std(prior: SUPNVAE, z: torch.Tensor | None = None, seed: int = 0,
                      path=None) -> Figure:
    """The decoded mean and the exact marginal standard deviation of ``p(x | z)``."""
    if z is None:
        z = _latents(prior, 1, seed)
    dist = prior.decode(z)
    std = dist.marginal_variance().sqrt().reshape(-1, *dist.event_shape)[0, 0].numpy()
    fig = Figure(figsize=(5.6, 2.8))
    ax_mean, ax_std = fig.subplots(1, 2)
    ax_mean.imshow(dist.loc[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax_mean.set_title("mean μ(z)")
    im = ax_std.imshow(std, cmap="magma", vmin=0, vmax=float(np.max(std)))
    ax_std.set_title("marginal std")
    fig.colorbar(im, ax=ax_std, shrink=0.8)
    for ax in (ax_mean, ax_std):
        ax.set_xticks([]), ax.set_yticks([])
    return fig if path is None else (fig.savefig(path, dpi=100) or fig)
