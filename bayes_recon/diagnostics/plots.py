"""Diagnostic figures. Every function returns a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, not through
``pyplot``: no backend is switched, nothing is registered with pyplot's figure
manager (so nothing leaks or pops up), and saving works headless. In Jupyter a
returned Figure renders inline once the inline backend is active (``%matplotlib
inline``). A file is written only when ``path`` is given.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Mapping

import numpy as np
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from scipy import stats

from ..posterior import Posterior
from ._inputs import az, samples_array, truth_array
from .calibration import CalibrationReport

__all__ = [
    "plot_reconstruction",
    "plot_calibration_curve",
    "plot_pit",
    "plot_error_vs_std",
    "plot_sparsification",
    "plot_trace",
    "plot_rank",
]


@contextmanager
def _quiet_arviz():
    # arviz 0.23 trips matplotlib 3.11 deprecations inside its own code; not the user's business.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning)
        yield


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _named_reports(reports) -> dict:
    # Held-out validation has the same levels/coverage/pit, in measurement space.
    from .validation import HeldoutValidation

    kinds = (CalibrationReport, HeldoutValidation)
    if isinstance(reports, kinds):
        return {"posterior": reports}
    if isinstance(reports, Mapping) and reports and all(
        isinstance(r, kinds) for r in reports.values()
    ):
        return dict(reports)
    raise TypeError(
        "reports must be a CalibrationReport or HeldoutValidation, or a non-empty dict of "
        f"name -> those, got {type(reports).__name__}"
    )


def plot_reconstruction(
    posterior,
    truth=None,
    back_projection=None,
    *,
    num_samples: int = 3,
    channel: int = 0,
    cmap: str = "gray",
    var_name: str = "x",
    path=None,
) -> Figure:
    """Panel: truth, back-projection, posterior mean, std, |error|, a few samples.

    Parameters
    ----------
    posterior : Posterior or arviz.InferenceData
    truth, back_projection : array of shape (C, H, W) or (1, C, H, W), optional
        Panels (and the |error| panel, which needs the truth) are skipped when absent.
    num_samples : int
        Samples shown, evenly spaced through the (chain-merged) draws.
    channel : int
        Channel displayed.

    Returns
    -------
    Figure
        Axes in order truth?, back-projection?, mean, std, |error|?, samples,
        then one colorbar axes each for std and |error| (four image panels per row).
    """
    arr = samples_array(posterior, var_name)
    c, h, w = arr.shape[2:]
    flat = arr.reshape(-1, c, h, w)
    if not 0 <= channel < c:
        raise ValueError(f"channel must be in [0, {c}), got {channel}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    num_samples = min(num_samples, flat.shape[0])
    mean = flat.mean(axis=0)[channel]
    std = flat.std(axis=0, ddof=1)[channel] if flat.shape[0] > 1 else np.zeros_like(mean)
    t = truth_array(truth, (c, h, w))[channel] if truth is not None else None
    bp = truth_array(back_projection, (c, h, w), argname="back_projection")[channel] if back_projection is not None else None

    lo, hi = (t.min(), t.max()) if t is not None else (mean.min(), mean.max())
    panels = []  # (title, image, imshow kwargs, colorbar?)
    if t is not None:
        panels.append(("truth", t, dict(vmin=lo, vmax=hi, cmap=cmap), False))
    if bp is not None:
        panels.append(("back-projection", bp, dict(cmap=cmap), False))
    panels.append(("posterior mean", mean, dict(vmin=lo, vmax=hi, cmap=cmap), False))
    panels.append(("posterior std", std, dict(cmap="magma"), True))
    if t is not None:
        panels.append(("|error|", np.abs(t - mean), dict(cmap="magma"), True))
    idx = np.linspace(0, flat.shape[0] - 1, num_samples).round().astype(int) if num_samples else []
    for i in idx:
        panels.append((f"sample {i}", flat[i, channel], dict(vmin=lo, vmax=hi, cmap=cmap), False))

    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.0 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    for ax, (title, img, kw, bar) in zip(axes, panels):
        im = ax.imshow(img, **kw)
        ax.set_title(title)
        ax.set_axis_off()
        if bar:
            fig.colorbar(im, ax=ax, fraction=0.046)
    return _finish(fig, path)


def plot_calibration_curve(reports, *, path=None) -> Figure:
    """Observed versus nominal coverage, one line per report, with the diagonal.

    Parameters
    ----------
    reports : CalibrationReport or HeldoutValidation, or dict of name -> either

    Returns
    -------
    Figure
        One axes.
    """
    named = _named_reports(reports)
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
    for name, rep in named.items():
        order = np.argsort(rep.levels)
        ax.plot(
            np.asarray(rep.levels)[order],
            np.asarray(rep.coverage)[order],
            marker="o",
            label=f"{name} (err {rep.calibration_error:.3f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage", ylabel="observed coverage")
    ax.set_aspect("equal")
    ax.set_title("calibration")
    # Over-dispersed methods crowd the top left, under-dispersed the bottom right.
    ax.legend(loc="lower right", fontsize="small", framealpha=0.8)
    return _finish(fig, path)


def plot_pit(reports, *, bins: int = 20, seed: int = 0, path=None) -> Figure:
    """PIT histogram and ECDF difference (ArviZ's ``plot_ecdf`` with simultaneous bands).

    Parameters
    ----------
    reports : CalibrationReport or HeldoutValidation, or dict of name -> either
    bins : int
        Histogram bins.
    seed : int
        Seed of ArviZ's simulated 95% simultaneous confidence band.

    Returns
    -------
    Figure
        Two axes: histogram (density, with the uniform line) and ECDF - identity.
    """
    named = _named_reports(reports)
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax_h, ax_e = fig.subplots(1, 2)
    uniform = stats.uniform(0, 1)
    grid = np.linspace(0, 1, 201)  # explicit eval points: ArviZ's default is changing
    for i, (name, rep) in enumerate(named.items()):
        color = f"C{i}"
        ax_h.hist(rep.pit, bins=bins, range=(0, 1), density=True, histtype="step", color=color, label=name)
        with _quiet_arviz():
            az.plot_ecdf(
                rep.pit,
                eval_points=grid,
                cdf=uniform.cdf,
                rvs=uniform.rvs,
                difference=True,
                confidence_bands=True,
                random_state=seed,
                plot_kwargs={"color": color, "label": name},
                fill_kwargs={"color": color, "alpha": 0.15},
                ax=ax_e,
            )
    ax_h.axhline(1.0, color="0.5", ls="--", lw=1)
    ax_h.set(xlabel="PIT", ylabel="density", title="PIT histogram")
    ax_h.legend(fontsize="small")
    ax_e.axhline(0.0, color="0.5", ls="--", lw=1)
    ax_e.set(xlabel="PIT", ylabel="ECDF - uniform CDF", title="PIT ECDF difference (95% band)")
    return _finish(fig, path)


def plot_error_vs_std(
    posterior, truth, *, max_points: int = 5000, seed: int = 0, var_name: str = "x", path=None
) -> Figure:
    """|error| versus posterior std per pixel, and a QQ plot of z-scores.

    Parameters
    ----------
    posterior : Posterior or arviz.InferenceData
    truth : array of shape (C, H, W) or (1, C, H, W)
    max_points : int
        Pixels drawn (seeded, without replacement) for the scatter when there are more.

    Returns
    -------
    Figure
        Two axes: scatter with the lines |error| = std and = 2 std; QQ of
        ``(truth - mean) / std`` against N(0, 1) over all pixels.
    """
    arr = samples_array(posterior, var_name)
    c, h, w = arr.shape[2:]
    flat = arr.reshape(-1, c * h * w)
    if flat.shape[0] < 2:
        raise ValueError(f"posterior must hold at least 2 samples for a std, got shape {arr.shape}")
    t = truth_array(truth, (c, h, w)).reshape(-1)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0, ddof=1)
    err = np.abs(t - mean)
    keep = np.arange(t.size)
    if t.size > max_points:
        keep = np.random.default_rng(seed).choice(t.size, size=max_points, replace=False)

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax_s, ax_q = fig.subplots(1, 2)
    ax_s.scatter(std[keep], err[keep], s=4, alpha=0.4)
    top = float(max(std.max(), err.max() / 2, 1e-12))
    ax_s.plot([0, top], [0, top], color="k", lw=1, label="|error| = std")
    ax_s.plot([0, top], [0, 2 * top], color="k", lw=1, ls="--", label="|error| = 2 std")
    ax_s.set(xlabel="posterior std", ylabel="|truth - mean|", title="error vs std")
    ax_s.legend(fontsize="small")

    z = (t - mean) / np.maximum(std, 1e-12)
    probs = (np.arange(1, t.size + 1) - 0.5) / t.size
    ax_q.plot(stats.norm.ppf(probs), np.sort(z), ".", ms=2)
    lim = 4.0
    ax_q.plot([-lim, lim], [-lim, lim], color="k", lw=1)
    ax_q.set(xlabel="N(0, 1) quantile", ylabel="z-score quantile", title="z-score QQ")
    return _finish(fig, path)


def plot_sparsification(reports, *, path=None) -> Figure:
    """Sparsification curves: normalised RMSE versus fraction of pixels removed.

    Solid: removal by predicted std; dashed: oracle (by true error); dotted: random.

    Returns
    -------
    Figure
        One axes.
    """
    named = _named_reports(reports)
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, rep) in enumerate(named.items()):
        sp = rep.sparsification
        ax.plot(sp["fractions"], sp["uncertainty"], color=f"C{i}", label=f"{name} (AUSE {rep.ause:.3f})")
        ax.plot(sp["fractions"], sp["oracle"], color=f"C{i}", ls="--")
    first = next(iter(named.values())).sparsification
    ax.plot(first["fractions"], first["random"], color="0.5", ls=":", label="random")
    ax.set(xlabel="fraction of pixels removed", ylabel="RMSE / RMSE(all)", title="sparsification")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def _idata_for(source):
    if isinstance(source, Posterior):
        return source.to_arviz()
    if isinstance(source, az.InferenceData):
        return source
    raise TypeError(f"source must be a Posterior or an InferenceData, got {type(source).__name__}")


def _latent_coords(idata, var_name: str, max_latent: int) -> dict:
    if "posterior" not in idata.groups() or var_name not in idata.posterior:
        raise ValueError(f"source has no posterior variable {var_name!r} (a method without latents?)")
    if isinstance(max_latent, bool) or not isinstance(max_latent, int) or max_latent < 1:
        raise ValueError(f"max_latent must be an int >= 1, got {max_latent!r}")
    extra = [d for d in idata.posterior[var_name].dims if d not in ("chain", "draw")]
    if extra != ["latent"]:
        raise ValueError(f"{var_name} must have dims (chain, draw, latent), got {idata.posterior[var_name].dims}")
    n = idata.posterior.sizes["latent"]
    return {"latent": list(range(min(n, max_latent)))}


def plot_trace(source, *, var_name: str = "z", max_latent: int = 4, path=None) -> Figure:
    """MCMC trace of the first ``max_latent`` latent coordinates via ``az.plot_trace``.

    Returns
    -------
    Figure
        Two axes (density and trace, latent coordinates overlaid).
    """
    idata = _idata_for(source)
    coords = _latent_coords(idata, var_name, max_latent)
    fig = Figure(figsize=(9, 3), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)
    with _quiet_arviz():
        az.plot_trace(idata, var_names=[var_name], coords=coords, axes=axes)
    return _finish(fig, path)


def plot_rank(source, *, var_name: str = "z", max_latent: int = 4, path=None) -> Figure:
    """Rank plots (per chain) of the first ``max_latent`` latent coordinates via ``az.plot_rank``.

    Returns
    -------
    Figure
        One axes per latent coordinate shown.
    """
    idata = _idata_for(source)
    coords = _latent_coords(idata, var_name, max_latent)
    k = len(coords["latent"])
    fig = Figure(figsize=(3.2 * k, 3), layout="constrained")
    axes = fig.subplots(1, k, squeeze=False).ravel()
    with _quiet_arviz():
        az.plot_rank(idata, var_names=[var_name], coords=coords, ax=axes)
    return _finish(fig, path)
