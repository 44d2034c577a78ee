"""Run folders: what ``bayes-recon reconstruct`` writes and ``bayes-recon calibrate`` reads.

A run folder holds ``reconstruction.npy`` (+ PNG, + 32-bit TIFF), ``truth.npy``
(+ PNG) when the truth is known, and ``metrics.json``; a Bayesian run adds
``mean``/``std`` as ``.npy``, PNG and 32-bit TIFF, ``samples.npy``, a few
``sample_<i>.png`` and ``posterior.nc`` (ArviZ, with the truth in ``constant_data``
when known and the measurement in ``observed_data``). For a Bayesian run
``reconstruction`` is the posterior mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._io import write_json, write_netcdf, write_npy, write_png, write_text, write_tiff

POSTERIOR_FILE = "posterior.nc"


def write_run(out, truth: torch.Tensor | None, x: torch.Tensor, metrics: dict, posterior=None,
              y: torch.Tensor | None = None) -> Path:
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

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if truth is not None:
        write_npy(out / "truth.npy", truth[0].detach().cpu().numpy())
        write_png(out / "truth.png", truth[0, 0].detach().cpu().numpy(), vmin=0.0, vmax=1.0)
    write_npy(out / "reconstruction.npy", x[0].detach().cpu().numpy())
    write_png(out / "reconstruction.png", x[0, 0].detach().cpu().numpy(), vmin=0.0, vmax=1.0)
    write_tiff(out / "reconstruction.tif", x[0, 0].detach().cpu().numpy())
    if posterior is not None:
        from ..diagnostics import to_arviz

        mean, std = posterior.mean, posterior.std
        write_npy(out / "mean.npy", mean.detach().cpu().numpy())
        write_png(out / "mean.png", mean[0].detach().cpu().numpy(), vmin=0.0, vmax=1.0)
        write_npy(out / "std.npy", std.detach().cpu().numpy())
        write_png(out / "std.png", std[0].detach().cpu().numpy(), cmap="magma")
        write_tiff(out / "mean.tif", mean[0].detach().cpu().numpy())
        write_tiff(out / "std.tif", std[0].detach().cpu().numpy())
        write_npy(out / "samples.npy", posterior.samples.detach().cpu().numpy())
        for i in range(min(3, posterior.num_draws)):
            write_png(out / f"sample_{i}.png", posterior.samples[0, i, 0].detach().cpu().numpy(),
                      vmin=0.0, vmax=1.0)
        idata = to_arviz(posterior, truth=None if truth is None else truth[0],
                         y=None if y is None else y[0])
        write_netcdf(out / POSTERIOR_FILE, idata)
        metrics = {**posterior_summary(posterior), **metrics}
    write_json(out / "metrics.json", metrics)
    return out


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

    Raises
    ------
    ValueError
        The folder or its ``posterior.nc`` is missing (a point-estimate run has
        nothing to calibrate), or the file is unreadable.
    """
    from ..diagnostics import (
        calibration,
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
    if "constant_data" not in idata.groups() or "x_true" not in idata.constant_data:
        raise ValueError(f"{path} carries no truth (constant_data['x_true']) to calibrate against")
    report = calibration(idata)
    write_json(run_dir / "calibration.json", report.to_dict(include_pit=False))
    write_text(run_dir / "calibration.md", report.to_markdown())
    plot_calibration_curve(report).savefig(run_dir / "calibration_curve.png", dpi=90)
    plot_pit(report).savefig(run_dir / "pit.png", dpi=90)
    plot_sparsification(report).savefig(run_dir / "sparsification.png", dpi=90)
    truth = np.asarray(idata.constant_data["x_true"].values)
    plot_error_vs_std(idata, truth).savefig(run_dir / "error_vs_std.png", dpi=90)
    return report.to_dict(include_pit=False)
