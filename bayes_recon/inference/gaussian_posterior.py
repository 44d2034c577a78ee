"""Exact samples of ``x | z, y``, re-exported from ``models``.

The sampler moved to :mod:`bayes_recon.models.exact_conditional` so that the
Pyro program :func:`bayes_recon.models.collapsed_model` can draw ``x`` for
``pyro.infer.Predictive``; every name stays importable from here.
"""

from ..models.exact_conditional import (  # noqa: F401  (re-exports)
    AUTO_CHOLESKY_MAX_PIXELS,
    X_SOLVERS,
    GaussianImagePosterior,
    XSolverConfig,
)

__all__ = ["X_SOLVERS", "AUTO_CHOLESKY_MAX_PIXELS", "XSolverConfig", "GaussianImagePosterior"]
