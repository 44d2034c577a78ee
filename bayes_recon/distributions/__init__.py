"""Image distributions: the structured Gaussian of SUPN and its conditionals.

``StructuredGaussian(loc, log_diag, off_diag, radius)`` is a Pyro distribution
``N(loc, (UᵀU)⁻¹)`` over images of event shape ``(C, H, W)`` with ``U`` a sparse
upper-triangular factor on a local stencil; the layout and orientation of its
parameters are documented in :mod:`bayes_recon.distributions.stencil` and in the
class docstring.
"""

from .conditional import ConditionalStructuredGaussian
from .stencil import (
    cross_channel_pairs,
    num_cross_channel,
    num_offdiag,
    num_spatial_offdiag,
    spatial_offsets,
)
from .structured_gaussian import LOG_DIAG_BOUND, StructuredGaussian, soft_clip_log_diag
from .triangular_solve import DENSE_MAX_PIXELS, solve_cholesky
from .variance import DEFAULT_VARIANCE_SAMPLES

__all__ = [
    "StructuredGaussian",
    "ConditionalStructuredGaussian",
    "soft_clip_log_diag",
    "LOG_DIAG_BOUND",
    "DENSE_MAX_PIXELS",
    "DEFAULT_VARIANCE_SAMPLES",
    "num_offdiag",
    "num_spatial_offdiag",
    "num_cross_channel",
    "spatial_offsets",
    "cross_channel_pairs",
    "solve_cholesky",
]
