"""Forward models ``A`` with exact adjoints, and classical reconstructions.

Every operator maps real images ``(B, C, H, W)`` to measurements
``(B, *range_shape)`` and back with an exact adjoint (see
:class:`LinearOperator`).
"""

from .base import AdjointOperator, LinearOperator, adjointness_error
from .cg import CGConvergenceWarning, CGResult, conjugate_gradient
from .classical import (
    image_divergence,
    image_gradient,
    rough_noise_std,
    rough_reconstruction,
    tikhonov,
    total_variation,
    tv_reconstruction,
)
from .ct import ParallelBeamCT, RayTransform, joseph_matrix, ramp_filter, ray_matrix
from .fanbeam import FanBeamCT, parker_weights
from .holdout import HOLDOUT_SCHEMES, MeasurementSplit, RangeSubset, default_scheme, split_measurements
from .mri import MRI, cartesian_mask, radial_mask
from .sparse import SparseMatrix
from .sparse_operator import SparseMatrixOperator, load_sparse_operator
from .simple import Blur, Downsampling, Identity, Inpainting, MatrixOperator, gaussian_kernel, motion_kernel


__all__ = [
    "LinearOperator",
    "AdjointOperator",
    "adjointness_error",
    "ParallelBeamCT",
    "joseph_matrix",
    "ramp_filter",
    "RayTransform",
    "ray_matrix",
    "FanBeamCT",
    "parker_weights",
    "HOLDOUT_SCHEMES",
    "MeasurementSplit",
    "RangeSubset",
    "default_scheme",
    "split_measurements",
    "MRI",
    "radial_mask",
    "cartesian_mask",
    "Blur",
    "gaussian_kernel",
    "motion_kernel",
    "Inpainting",
    "Downsampling",
    "Identity",
    "MatrixOperator",
    "SparseMatrix",
    "SparseMatrixOperator",
    "load_sparse_operator",
    "conjugate_gradient",
    "CGResult",
    "CGConvergenceWarning",
    "tikhonov",
    "rough_reconstruction",
    "rough_noise_std",
    "tv_reconstruction",
    "total_variation",
    "image_gradient",
    "image_divergence",
]

