"""Linearised Laplace for the deep image prior (the probabilistic DIP).

Entry point::

    fit = fit_dip(y, op, tv_weight, iterations)            # bayes_recon.inference.dip
    la = LinearisedLaplace(fit, op)                          # Jacobian + kernel pieces
    la.optimise_evidence()                                   # L-BFGS (exact path) or sample-based EM
    la.backend                                               # the path's numerics (.backends)
    posterior = la.sample(1000, seed=0)                      # -> Posterior

or all at once with :func:`linearised_dip`.
"""

from .backends import ExactBackend, LinearModelBackend, MatrixFreeBackend, SubspaceBackend
from .gp import (LinearisedGaussianLikelihood, LinearisedGP, LinearisedHyperparameters,
                 MacKayMarginalLogLikelihood, TVPredCPPrior)
from .resources import PathEstimate, available_memory, choose_path, estimate_paths
from .sampling import RunningMoments
from .discrepancy import DiscrepancyFit, DiscrepancyModel, HeldoutEvidence, fit_discrepancy
from .evidence import ExactKernel, NystromPreconditioner, direct_image_kernel
from .jacobian import NetworkJacobian, ParameterGroup, linearised_groups
from .config import (LOG_LENGTHSCALE_BOUNDS, AdjointMismatchWarning, EvidenceConvergenceWarning, EvidenceResult, LaplaceConfig,
                     NumericalRecord)
from .laplace import LinearisedLaplace
from .linalg import CholeskyError, CholeskyJitterWarning, recording_warnings, robust_cholesky
from .optimise import LBFGSResult, lbfgs_maximise
from .pipeline import linearised_dip
from .predcp import TVPredCP
from .subspace import JacobianSubspace, SubspaceTruncationWarning, jacobian_subspace
from .weight_prior import MaternFilterPrior, distance_classes

__all__ = [
    "LinearisedLaplace",
    "DiscrepancyModel",
    "DiscrepancyFit",
    "HeldoutEvidence",
    "fit_discrepancy",
    "LinearisedHyperparameters",
    "LinearisedGP",
    "LinearisedGaussianLikelihood",
    "MacKayMarginalLogLikelihood",
    "TVPredCPPrior",
    "PathEstimate",
    "available_memory",
    "estimate_paths",
    "choose_path",
    "RunningMoments",
    "LaplaceConfig",
    "EvidenceResult",
    "EvidenceConvergenceWarning",
    "AdjointMismatchWarning",
    "SubspaceTruncationWarning",
    "JacobianSubspace",
    "jacobian_subspace",
    "NumericalRecord",
    "LOG_LENGTHSCALE_BOUNDS",
    "linearised_dip",
    "NetworkJacobian",
    "ParameterGroup",
    "linearised_groups",
    "MaternFilterPrior",
    "distance_classes",
    "ExactKernel",
    "direct_image_kernel",
    "NystromPreconditioner",
    "TVPredCP",
    "CholeskyJitterWarning",
    "CholeskyError",
    "robust_cholesky",
    "recording_warnings",
    "lbfgs_maximise",
    "LBFGSResult",
    "LinearModelBackend",
    "ExactBackend",
    "SubspaceBackend",
    "MatrixFreeBackend",
]
