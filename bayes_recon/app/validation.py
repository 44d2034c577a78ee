"""Held-out-measurement validation of a registry method, and the files it writes.

:func:`validate_method` runs a method of :mod:`bayes_recon.app.methods` on each
fold's kept measurements (same settings) and scores its prediction of the
held-out ones (:func:`bayes_recon.diagnostics.validation.heldout_validation`);
:func:`write_validation` writes ``validation.json``, ``validation.md`` and the
figures into a run folder. No ground truth is used anywhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ._io import write_json, write_text
from .methods import POSTERIOR_METHODS, MethodSettings, run_method

__all__ = ["ValidationSettings", "validate_method", "write_validation", "VALIDATION_FILE"]

VALIDATION_FILE = "validation.json"


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """How to hold measurements out.

    Attributes
    ----------
    folds : int
        ``K >= 2``; each fold holds out about ``1/K`` of the projections, spokes,
        lines or entries.
    scheme : str or None
        ``projection``, ``spoke``, ``line`` or ``random``; None picks the
        operator's physical scheme (:func:`bayes_recon.operators.holdout.default_scheme`).
    quick : bool
        Run fold 0 only (``1/K`` of the cost of all folds).
    seed : int
        Seeds the random schemes.
    """

    folds: int = 5
    scheme: str | None = None
    quick: bool = False
    seed: int = 0

    def __post_init__(self):
        from .._validation import check_choice, check_int
        from ..operators.holdout import HOLDOUT_SCHEMES

        check_int("--folds", self.folds, minimum=2)
        if self.scheme is not None:
            check_choice("--holdout-scheme", self.scheme, HOLDOUT_SCHEMES)
        check_int("--seed", self.seed, minimum=0)

    def check(self, op) -> None:
        """Raise now, before any reconstruction, if the scheme does not fit ``op``
        (wrong kind of operator, fewer projections/spokes/lines than folds)."""
        from ..operators.holdout import split_measurements

        for fold in ([0] if self.quick else range(self.folds)):
            split_measurements(op, fold, self.folds, self.scheme, self.seed)


def validate_method(settings: MethodSettings, op, y, noise_std, prior=None,
                    validation: ValidationSettings | None = None, progress: bool = True):
    """Held-out validation of ``settings.method`` on ``(op, y)``.

    Parameters
    ----------
    settings : MethodSettings
        A method with posterior samples (:data:`~bayes_recon.app.methods.POSTERIOR_METHODS`).
    op : LinearOperator
    y : torch.Tensor
        ``(1, *op.range_shape)``.
    noise_std : float or None
        As for :func:`~bayes_recon.app.methods.run_method`; with
        ``settings.noise == "estimate"`` each fold estimates its own σ and the
        held-out predictive uses that estimate.
    prior : optional
        The SUPN prior of prior methods.
    validation : ValidationSettings, optional
    progress : bool
        A bar over the folds (the folds' own bars are hidden).

    Returns
    -------
    HeldoutValidation

    Raises
    ------
    ValueError
        The method has no posterior samples, or the scheme leaves too few measurements.
    """
    from ..diagnostics.validation import heldout_validation

    if not isinstance(settings, MethodSettings):
        raise TypeError(f"settings must be a MethodSettings, got {type(settings).__name__}")
    if settings.method not in POSTERIOR_METHODS:
        raise ValueError(f"--validate needs a method with posterior samples, one of "
                         f"{list(POSTERIOR_METHODS)}; method {settings.method!r} gives a point "
                         "estimate only")
    validation = ValidationSettings() if validation is None else validation
    quiet = dataclasses.replace(settings, progress=False)

    def reconstruct(fit_op, y_fit):
        return run_method(quiet, fit_op, y_fit, noise_std, prior).posterior

    # A known σ holds for the held-out measurements too; an estimated one comes from
    # each fold's own posterior (posterior.noise_std).
    known = float(noise_std) if settings.noise == "known" and noise_std is not None else None
    return heldout_validation(reconstruct, op, y, folds=validation.folds,
                              fold_indices=[0] if validation.quick else None,
                              scheme=validation.scheme, noise_std=known, seed=validation.seed,
                              progress=progress)


def write_validation(out, result, seconds_full: float | None = None) -> dict:
    """Write ``validation.json``, ``validation.md`` and figures into the run folder ``out``.

    Parameters
    ----------
    out : str or Path
        A run folder; when its ``posterior.nc`` has a ``log_likelihood`` group,
        PSIS-LOO of the full-data posterior is added under the key ``loo`` and
        ArviZ's PPC and LOO-PIT figures are written.
    result : HeldoutValidation
    seconds_full : float, optional
        Time of the full-data reconstruction, for the cost ratio.

    Returns
    -------
    dict
        What ``validation.json`` holds.
    """
    from ..diagnostics import plot_calibration_curve, plot_pit

    out = Path(out)
    record = result.to_dict()
    seconds = [f["seconds"] for f in result.per_fold]
    record["seconds_folds"] = float(sum(seconds))
    if seconds_full:
        record["seconds_full"] = float(seconds_full)
        record["cost_ratio"] = float(sum(seconds) / seconds_full)
    figures = ["heldout_calibration.png", "heldout_pit.png"]
    plot_calibration_curve({"held-out measurements": result}).savefig(
        out / figures[0], dpi=90)
    plot_pit({"held-out measurements": result}).savefig(out / figures[1], dpi=90)
    loo_text = ""
    idata = _full_posterior(out)
    if idata is not None and "log_likelihood" in idata.groups():
        from ..diagnostics import loo_summary

        record["loo"] = loo_summary(idata)
        figures += _arviz_figures(out, idata)
        loo = record["loo"]
        loo_text = ("\nPSIS-LOO of the full-data posterior (ArviZ): elpd_loo "
                    f"{loo['elpd_loo']:.2f} (SE {loo['elpd_loo_se']:.2f}), p_loo {loo['p_loo']:.2f}, "
                    f"Pareto k̂ counts {loo['pareto_k_counts']}.\n")
    write_json(out / VALIDATION_FILE, record)
    images = "\n".join(f"![{name[:-4]}]({name})" for name in figures)
    cost = (f"\nCost: {record['seconds_folds']:.1f} s for the folds"
            + (f", {record['cost_ratio']:.2f}x the full reconstruction.\n"
               if "cost_ratio" in record else ".\n"))
    write_text(out / "validation.md", "# Held-out-measurement validation (no ground truth)\n\n"
               + result.to_markdown() + loo_text + cost + "\n" + images + "\n")
    return record


def _full_posterior(out: Path):
    from .runs import POSTERIOR_FILE

    path = out / POSTERIOR_FILE
    if not path.is_file():
        return None
    from ..diagnostics._inputs import az

    return az.from_netcdf(str(path))


def _arviz_figures(out: Path, idata) -> list:
    """ArviZ's PPC and LOO-PIT of the full-data posterior (the figures ``calibrate`` makes)."""
    from ..diagnostics._inputs import az
    from .runs import _save_predictive_plots

    _save_predictive_plots(idata, out, az)
    return ["ppc.png", "loo_pit.png"]
