"""Run folders: what ``bayes-recon reconstruct`` writes and ``bayes-recon calibrate`` reads.

A run folder holds ``reconstruction.npy`` (+ PNG, + 32-bit TIFF), ``truth.npy``
(+ PNG) when the truth is known, and ``metrics.json``; a Bayesian run adds
``mean``/``std`` as ``.npy``, PNG and 32-bit TIFF, ``samples.npy``, a few
``sample_<i>.png`` and ``posterior.nc`` (ArviZ, with the truth in ``constant_data``
when known and the measurement in ``observed_data``; with the forward operator and a
known or estimated σ also ``posterior_predictive`` and ``log_likelihood``, see
:func:`bayes_recon.diagnostics.to_arviz`). For a Bayesian run ``reconstruction`` is
the posterior mean. ``calibrate`` adds ``calibration.json``/``.md`` and figures.

``panel.png`` shows the run at a glance with a colour bar per image: the truth
(when known), the back-projection (``op.fbp(y)``, else ``op.adjoint(y)``), the
reconstruction or posterior mean, and for a Bayesian run the std, ``|error|`` (when
the truth is known) and three samples. Single-image PNGs are grey levels scaled
to the image's own range (0.5–99.5 percentiles, :func:`bayes_recon.app._io.display_range`),
except a truth in [0, 1] (the built-in images and ``load_image`` are), shown on
[0, 1]; every window is recorded in ``metrics.json`` as ``png_ranges``
(``{file: [lo, hi]}``), so a grey level can be read back as a value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._io import (
    DISPLAY_PERCENTILES,
    display_range,
    write_figure,
    write_json,
    write_netcdf,
    write_npy,
    write_png,
    write_text,
    write_tiff,
)

POSTERIOR_FILE = "posterior.nc"


def write_run(out, truth: torch.Tensor | None, x: torch.Tensor, metrics: dict, posterior=None,
              y: torch.Tensor | None = None, op=None, noise_std: float | None = None) -> Path:
    """Write a run folder.

    Parameters
    ----------
    out : str or Path
        Folder (created if missing).
    truth : torch.Tensor or None
        ``(1, C, H, W)`` ground truth; None for measured data.
    x : torch.Tensor
        ``(1, C, H, W)``: the reconstruction (posterior mean for a Bayesian run).
    metrics : dict
        Written as ``metrics.json``; for a Bayesian run
        :func:`posterior_summary` is merged in (``metrics`` wins on clashes).
    posterior : Posterior, optional
        Samples ``(chains, draws, C, H, W)``.
    y : torch.Tensor, optional
        ``(1, *range_shape)``, stored in ``posterior.nc``'s ``observed_data``.
    op : LinearOperator, optional
        The forward model. With ``y`` and a noise level (``noise_std``, else
        ``posterior.noise_std``) a Bayesian run's ``posterior.nc`` also gets the
        ``posterior_predictive`` and ``log_likelihood`` groups (LOO in ``calibrate``).
    noise_std : float, optional
        σ the method used (given or estimated); None falls back to
        ``posterior.noise_std``. Without a positive σ the predictive groups are left out.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    ranges = {}

    def png(name, image, window=None, cmap="gray"):
        lo, hi = display_range(image) if window is None else window
        write_png(out / name, image, vmin=lo, vmax=hi, cmap=cmap)
        ranges[name] = [lo, hi]

    t = None
    if truth is not None:
        t = truth[0, 0].detach().cpu().numpy()
        write_npy(out / "truth.npy", truth[0].detach().cpu().numpy())
        # A truth in [0, 1] is an image made for it (built-in data, load_image): keep that
        # scale so its PNG reads as the image; anything else gets its own range.
        png("truth.png", t, (0.0, 1.0) if t.min() >= 0 and t.max() <= 1 else None)
    rec = x[0, 0].detach().cpu().numpy()
    write_npy(out / "reconstruction.npy", x[0].detach().cpu().numpy())
    png("reconstruction.png", rec)
    write_tiff(out / "reconstruction.tif", rec)
    back = _back_projection(op, y)
    mean = std = samples = None
    if posterior is not None:
        from ..diagnostics import to_arviz

        mean_t, std_t = posterior.mean, posterior.std
        mean, std = mean_t[0].detach().cpu().numpy(), std_t[0].detach().cpu().numpy()
        write_npy(out / "mean.npy", mean_t.detach().cpu().numpy())
        png("mean.png", mean)
        write_npy(out / "std.npy", std_t.detach().cpu().numpy())
        png("std.png", std, cmap="magma")
        write_tiff(out / "mean.tif", mean)
        write_tiff(out / "std.tif", std)
        write_npy(out / "samples.npy", posterior.samples.detach().cpu().numpy())
        samples = posterior.samples[0, :min(3, posterior.num_draws), 0].detach().cpu().numpy()
        window = display_range(samples)  # one window for all samples, so they compare
        for i, sample in enumerate(samples):
            png(f"sample_{i}.png", sample, window)
        sigma = noise_std if noise_std is not None else posterior.noise_std
        # A likelihood needs the operator, the data and a positive σ; without them the
        # file is what it was before (samples, truth, measurement).
        predictive = op is not None and y is not None and sigma is not None and float(sigma) > 0
        idata = to_arviz(posterior, truth=None if truth is None else truth[0],
                         y=None if y is None else y[0], op=op,
                         noise_std=sigma if predictive else None, predictive=predictive)
        write_netcdf(out / POSTERIOR_FILE, idata)
        metrics = {**posterior_summary(posterior), **metrics}
    write_figure(out / "panel.png", _panel(t, back, rec if mean is None else mean, std, samples))
    metrics = {**metrics, "png_ranges": ranges,
               "png_range_rule": (f"grey level 0..255 = lo..hi; lo, hi = the image's "
                                  f"{DISPLAY_PERCENTILES[0]}-{DISPLAY_PERCENTILES[1]} "
                                  "percentiles ([0, 1] for a truth in [0, 1]; one window "
                                  "for all samples), values outside clipped")}
    write_json(out / "metrics.json", metrics)
    return out


def _back_projection(op, y):
    """``(title, (H, W) array)`` of the data mapped back to the image, or None without op/y.

    FBP where the operator has one (CT), else the adjoint ``Aᵀ y``: the first thing
    to look at when a reconstruction is off (the measurement itself, seen as an image).
    """
    if op is None or y is None:
        return None
    with torch.no_grad():
        if hasattr(op, "fbp"):
            title, image = "FBP of y", op.fbp(y)
        else:
            title, image = "adjoint Aᵀy", op.adjoint(y)
    return title, image[0, 0].detach().cpu().numpy()


def _panel(truth, back, estimate, std, samples):
    """The run at a glance: one image per axes, each on its own colour bar.

    ``estimate`` is the reconstruction, or the posterior mean when ``std`` (and
    ``samples``) are given; truth, estimate and samples share one grey-level window
    (the union of the truth's and the estimate's robust ranges) so they compare.
    """
    from matplotlib.figure import Figure

    window = display_range(estimate)
    if truth is not None:
        t_lo, t_hi = display_range(truth)
        window = (min(window[0], t_lo), max(window[1], t_hi))
    bayesian = std is not None
    panels = []  # (title, image, (lo, hi), cmap)
    if truth is not None:
        panels.append(("truth", truth, window, "gray"))
    if back is not None:
        panels.append((back[0], back[1], display_range(back[1]), "gray"))
    panels.append(("posterior mean" if bayesian else "reconstruction", estimate, window, "gray"))
    if bayesian:
        panels.append(("posterior std", std, (0.0, display_range(std)[1]), "magma"))
    if truth is not None:
        error = np.abs(truth - estimate)
        panels.append(("|error|", error, (0.0, display_range(error)[1]), "magma"))
    for i, sample in enumerate(samples if samples is not None else []):
        panels.append((f"sample {i}", sample, window, "gray"))
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(3.3 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, image, (lo, hi), cmap) in zip(axes, panels):
        shown = ax.imshow(image, vmin=lo, vmax=max(hi, lo + 1e-12), cmap=cmap)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, shrink=0.85)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    return fig


def posterior_summary(posterior) -> dict:
    """Sample counts, mean posterior std and sampler statistics of a ``Posterior``, JSON-ready."""
    summary = {
        "num_chains": posterior.num_chains,
        "num_draws": posterior.num_draws,
        "mean_posterior_std": float(posterior.std.mean()),
    }
    stats = posterior.sample_stats
    if "diverging" in stats:
        summary["divergences"] = int(np.asarray(stats["diverging"]).sum())
    for key in ("accepted", "tree_depth", "step_size"):
        if key in stats:
            summary[f"mean_{key}"] = float(np.asarray(stats[key], dtype=float).mean())
    if "acceptance_rate" in posterior.extras:  # NUTS: Pyro's mean acceptance probability
        summary["acceptance_rate"] = float(np.mean(posterior.extras["acceptance_rate"]))
    return summary


def calibrate_run(run_dir) -> dict:
    """Calibrate a saved Bayesian run; writes ``calibration.json``/``.md`` and figures.

    With the truth in ``posterior.nc``: the calibration report (coverage, PIT,
    test log-likelihood, sparsification) and its figures. With a
    ``log_likelihood`` group: PSIS-LOO under the key ``"loo"``
    (:func:`bayes_recon.diagnostics.loo_summary`), ``ppc.png`` (``az.plot_ppc``)
    and ``loo_pit.png`` (``az.plot_loo_pit``). A measured scan (no truth) with the
    predictive groups gets the LOO part only.

    Raises
    ------
    ValueError
        The folder or its ``posterior.nc`` is missing (a point-estimate run has
        nothing to calibrate), the file is unreadable, or it holds neither a
        truth nor a log-likelihood.
    """
    from ..diagnostics import (
        calibration,
        loo_summary,
        plot_calibration_curve,
        plot_error_vs_std,
        plot_pit,
        plot_sparsification,
    )
    from ..diagnostics._inputs import az

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir {run_dir} is not a folder")
    path = run_dir / POSTERIOR_FILE
    if not path.is_file():
        present = sorted(p.name for p in run_dir.iterdir())
        raise ValueError(
            f"run_dir {run_dir} has no {POSTERIOR_FILE} (found {present}); only runs of "
            "Bayesian methods can be calibrated"
        )
    try:
        idata = az.from_netcdf(str(path))
    except Exception as err:  # netCDF/HDF5 raise many types for a damaged file
        raise ValueError(f"{path} could not be read as ArviZ InferenceData: {err}") from None
    has_truth = "constant_data" in idata.groups() and "x_true" in idata.constant_data
    has_loglik = "log_likelihood" in idata.groups()
    if not has_truth and not has_loglik:
        raise ValueError(
            f"{path} carries no truth (constant_data['x_true']) to calibrate against and no "
            "log_likelihood group for LOO (written when the run knows its operator and σ)"
        )
    result, markdown = {}, []
    if has_truth:
        report = calibration(idata)
        result = report.to_dict(include_pit=False)
        markdown.append(report.to_markdown())
    if has_loglik:
        result["loo"] = loo_summary(idata)
        markdown.append(loo_markdown(result["loo"]))
    write_json(run_dir / "calibration.json", result)
    write_text(run_dir / "calibration.md", "\n\n".join(m.rstrip("\n") for m in markdown) + "\n")
    if has_truth:
        plot_calibration_curve(report).savefig(run_dir / "calibration_curve.png", dpi=90)
        plot_pit(report).savefig(run_dir / "pit.png", dpi=90)
        plot_sparsification(report).savefig(run_dir / "sparsification.png", dpi=90)
        truth = np.asarray(idata.constant_data["x_true"].values)
        plot_error_vs_std(idata, truth).savefig(run_dir / "error_vs_std.png", dpi=90)
    if has_loglik:
        _save_predictive_plots(idata, run_dir, az)
    return result


def loo_markdown(loo: dict) -> str:
    """The LOO part of ``calibration.md``: estimates and the Pareto k̂ table."""
    lines = [
        "## Leave-one-out predictive check (PSIS-LOO, ArviZ)",
        "",
        f"{loo['num_observations']} measurement entries"
        + (f" ({loo['measurement_subset']} of {loo['measurement_total']})"
           if loo.get("measurement_subset") == "random subset" else "")
        + f", {loo['num_samples']} posterior draws.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| elpd_loo (nats) | {loo['elpd_loo']:.3f} |",
        f"| SE of elpd_loo | {loo['elpd_loo_se']:.3f} |",
        f"| p_loo | {loo['p_loo']:.3f} |",
        "| largest Pareto k̂ | "
        + ("not estimable (too few draws in the tail)" if loo["pareto_k_max"] is None
           else f"{loo['pareto_k_max']:.3f}") + " |",
        "",
        "| Pareto k̂ | entries |",
        "|---|---|",
    ]
    lines += [f"| {label} | {count} |" for label, count in loo["pareto_k_counts"].items()]
    if loo["warning"]:
        lines += ["", f"Some k̂ exceed {loo['good_k']:.2f}: the importance-sampling LOO is "
                      "unreliable for those entries (too few draws, or influential data)."]
    return "\n".join(lines) + "\n"


def _save_predictive_plots(idata, run_dir: Path, az) -> None:
    """``ppc.png`` and ``loo_pit.png`` (one panel per observed variable: y, or y_real/y_imag)."""
    import matplotlib.pyplot as plt

    names = list(idata.observed_data.data_vars)
    num_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    # 100 replicated curves show the spread; thousands only slow the KDE down.
    axes = az.plot_ppc(idata, num_pp_samples=min(100, num_draws), random_seed=0)
    fig = np.ravel(axes)[0].get_figure()
    fig.savefig(run_dir / "ppc.png", dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, var in zip(axes[0], names):
        az.plot_loo_pit(idata, y=var, ax=ax)
        ax.set_title(f"LOO-PIT of {var}")
    fig.tight_layout()
    fig.savefig(run_dir / "loo_pit.png", dpi=90)
    plt.close(fig)
