"""bayes_recon.diagnostics: ArviZ export, calibration metrics and plots.

Diagnostics know nothing about how samples were made, only the ``Posterior``
(or ``arviz.InferenceData``) they are handed.
"""

from .arviz_export import loo_summary, to_arviz
from .calibration import DEFAULT_LEVELS, CalibrationReport, calibration
from .calibration_metrics import CalibrationWarning
from .plots import (
    plot_calibration_curve,
    plot_error_vs_std,
    plot_pit,
    plot_rank,
    plot_reconstruction,
    plot_sparsification,
    plot_trace,
)
from .validation import HeldoutFold, HeldoutValidation, heldout_predictive, heldout_validation

__all__ = [
    "to_arviz",
    "loo_summary",
    "calibration",
    "CalibrationReport",
    "CalibrationWarning",
    "DEFAULT_LEVELS",
    "plot_reconstruction",
    "plot_calibration_curve",
    "plot_pit",
    "plot_error_vs_std",
    "plot_sparsification",
    "plot_trace",
    "plot_rank",
    "heldout_validation",
    "heldout_predictive",
    "HeldoutValidation",
    "HeldoutFold",
]
