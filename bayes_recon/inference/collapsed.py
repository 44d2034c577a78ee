"""The collapsed likelihood ``log p(y | z)`` (``x`` marginalised), re-exported from ``models``.

The linear algebra moved to :mod:`bayes_recon.models.marginal` so that the
Pyro program :func:`bayes_recon.models.collapsed_model` (layer 3) can use it;
every name stays importable from here.
"""

from ..models.marginal import (  # noqa: F401  (re-exports)
    DENSE_EVIDENCE_MAX_PIXELS,
    EVIDENCE_METHODS,
    NotPositiveDefiniteError,
    PosteriorPrecisionOperator,
    SLQConfig,
    choose_evidence_method,
    collapsed_log_likelihood,
    collapsed_log_posterior,
    decode64,
    gram_matrix,
    latent_log_prior,
)

__all__ = [
    "EVIDENCE_METHODS",
    "DENSE_EVIDENCE_MAX_PIXELS",
    "SLQConfig",
    "PosteriorPrecisionOperator",
    "NotPositiveDefiniteError",
    "collapsed_log_likelihood",
    "collapsed_log_posterior",
    "latent_log_prior",
    "choose_evidence_method",
    "decode64",
    "gram_matrix",
]
