"""Inference on the generative programs: MAP, posterior sampling, DIP, linearised Laplace.

Every method returns a :class:`Posterior` (or a point estimate), which
``bayes_recon.diagnostics`` turns into ArviZ data and calibration reports.
"""

from ..models.exact_conditional import GaussianImagePosterior, XSolverConfig
from ..models.marginal import SLQConfig, collapsed_log_likelihood, collapsed_log_posterior
from ..posterior import Posterior
from .bootstrap_scale import BootstrapScale, bootstrap_std_scale, scale_spread
from .diffusion import DIFFUSION_METHODS, DiffPIRConfig, DPSConfig, diffusion_posterior
from .dip import DIPFit, dip_input, fit_dip, pretrain_dip
from .dip_baselines import fixed_noise_posterior, mc_dropout_posterior
from .gmrf import GMRFConfig, GMRFResult, gmrf_posterior
from .hvae import HVAE_MAP_METHODS, HVAEMAPConfig, HVAEReconstruction, hvae_map_estimate
from .hvae_posterior import HVAEPosteriorConfig, hvae_posterior
from .linearised import (
    CholeskyJitterWarning,
    EvidenceConvergenceWarning,
    EvidenceResult,
    LaplaceConfig,
    LinearisedLaplace,
    SubspaceTruncationWarning,
    linearised_dip,
)
from .linearised.pipeline import LinearisedDIPConfig, LinearisedDIPResult
from .map import MAP_METHODS, MAPConfig, Reconstruction, map_estimate
from .sampling import (
    SAMPLING_METHODS,
    ImportanceSamplingWarning,
    LaplaceWarning,
    SamplingConfig,
    sample_posterior,
)

__all__ = [
    "Posterior",
    # SUPN prior: MAP and posterior
    "map_estimate",
    "MAPConfig",
    "Reconstruction",
    "MAP_METHODS",
    "sample_posterior",
    "SamplingConfig",
    "SAMPLING_METHODS",
    "LaplaceWarning",
    "ImportanceSamplingWarning",
    "collapsed_log_likelihood",
    "collapsed_log_posterior",
    "SLQConfig",
    "GaussianImagePosterior",
    "XSolverConfig",
    # diffusion priors: DPS and DiffPIR
    "DIFFUSION_METHODS",
    "DPSConfig",
    "DiffPIRConfig",
    "diffusion_posterior",
    # hierarchical VAE priors: PnP-HVAE and SVI over the latent groups
    "HVAE_MAP_METHODS",
    "HVAEMAPConfig",
    "HVAEReconstruction",
    "hvae_map_estimate",
    "HVAEPosteriorConfig",
    "hvae_posterior",
    # deep image prior and its linearisation
    "fit_dip",
    "DIPFit",
    "dip_input",
    "pretrain_dip",
    "LinearisedLaplace",
    "LaplaceConfig",
    "linearised_dip",
    "LinearisedDIPConfig",
    "LinearisedDIPResult",
    "mc_dropout_posterior",
    "bootstrap_std_scale",
    "BootstrapScale",
    "scale_spread",
    "fixed_noise_posterior",
    "CholeskyJitterWarning",
    "EvidenceConvergenceWarning",
    "SubspaceTruncationWarning",
    "EvidenceResult",
    # the GMRF (Tikhonov-type) prior's exact Gaussian posterior
    "gmrf_posterior",
    "GMRFConfig",
    "GMRFResult",
]
