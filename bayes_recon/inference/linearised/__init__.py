"""Linearised Laplace for the deep image prior (the probabilistic DIP).

Entry point::

    fit = fit_dip(y, op, tv_weight, iterations)            # bayes_recon.inference.dip
    la = LinearisedLaplace(fit, op)                          # Jacobian + kernel pieces
    la.optimise_evidence(predcp_scale=...)                   # MLL (0) or TV-MAP (> 0)
    posterior = la.sample(1000, seed=0)                      # -> Posterior

or all at once with :func:`linearised_dip`.
"""

from .baselines import fixed_noise_posterior, mc_dropout_posterior
from .evidence import ExactKernel, data_kernel_operator, direct_image_kernel
from .jacobian import NetworkJacobian, ParameterGroup, linearised_groups
from .config import EvidenceConvergenceWarning, EvidenceResult, LaplaceConfig
from .laplace import LinearisedLaplace
from .linalg import CholeskyError, CholeskyJitterWarning, robust_cholesky
from .pipeline import linearised_dip
from .predcp import TVPredCP
from .weight_prior import MaternFilterPrior, distance_classes

__all__ = [
    "LinearisedLaplace",
    "LaplaceConfig",
    "EvidenceResult",
    "EvidenceConvergenceWarning",
    "linearised_dip",
    "NetworkJacobian",
    "ParameterGroup",
    "linearised_groups",
    "MaternFilterPrior",
    "distance_classes",
    "ExactKernel",
    "direct_image_kernel",
    "data_kernel_operator",
    "TVPredCP",
    "CholeskyJitterWarning",
    "CholeskyError",
    "robust_cholesky",
    "mc_dropout_posterior",
    "fixed_noise_posterior",
]
