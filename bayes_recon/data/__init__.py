"""Datasets that ship with the package's dependencies, and measurement simulation.

Nothing here touches the network: digits come from scikit-learn, photographs
and the Shepp-Logan phantom from scikit-image, ellipses are generated.
"""

from .digits import digits
from .ellipses import ellipses
from .files import load_image, load_measurement
from .medical import MedicalImage, read_dicom, read_medical, read_nifti
from .patches import NATURAL_TEST_IMAGES, NATURAL_TRAIN_IMAGES, natural_patches
from .phantoms import shepp_logan
from .prior_sets import PRIOR_DATASETS, PriorData, prior_training_data
from .problems import PROBLEMS, ProblemConfig, build_operator
from .simulate import Measurement, ZeroSignalWarning, simulate

__all__ = [
    "digits",
    "ellipses",
    "shepp_logan",
    "load_image",
    "load_measurement",
    "MedicalImage",
    "read_dicom",
    "read_nifti",
    "read_medical",
    "natural_patches",
    "NATURAL_TRAIN_IMAGES",
    "NATURAL_TEST_IMAGES",
    "simulate",
    "Measurement",
    "ZeroSignalWarning",
    "ProblemConfig",
    "build_operator",
    "PROBLEMS",
    "prior_training_data",
    "PriorData",
    "PRIOR_DATASETS",
]
