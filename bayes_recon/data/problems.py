"""Named inverse problems: build the forward operator for a problem by name.

Used by the CLI, the demo and the benchmarks so that "CT at 20 angles" means
the same operator everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._validation import check_choice, check_int, check_positive
from ..operators import (
    MRI,
    Blur,
    Downsampling,
    Identity,
    Inpainting,
    LinearOperator,
    ParallelBeamCT,
    gaussian_kernel,
    radial_mask,
)

PROBLEMS = ("ct", "mri", "denoise", "deblur", "inpaint", "superres")


@dataclass(frozen=True)
class ProblemConfig:
    """Which forward model to build, with its geometry.

    Attributes
    ----------
    problem : str
        One of ``ct``, ``mri``, ``denoise``, ``deblur``, ``inpaint``, ``superres``.
    size : int
        Image side length (square images, one channel).
    angles : int
        CT projection angles in [0, π).
    spokes : int
        MRI radial spokes.
    blur_sigma : float
        Gaussian blur width in pixels (deblurring).
    observed_fraction : float
        Fraction of pixels observed (inpainting), drawn with ``seed``.
    factor : int
        Downsampling factor (super-resolution).
    seed : int
        Seed for random masks.
    """

    problem: str = "ct"
    size: int = 28
    angles: int = 20
    spokes: int = 30
    blur_sigma: float = 1.0
    observed_fraction: float = 0.5
    factor: int = 2
    seed: int = 0

    def __post_init__(self):
        check_choice("problem", self.problem, PROBLEMS)
        check_int("size", self.size, minimum=2)
        check_int("angles", self.angles, minimum=1)
        check_int("spokes", self.spokes, minimum=1)
        check_positive("blur_sigma", self.blur_sigma)
        check_positive("observed_fraction", self.observed_fraction)
        if self.observed_fraction > 1:
            raise ValueError(f"observed_fraction must be in (0, 1], got {self.observed_fraction}")
        check_int("factor", self.factor, minimum=1)


def build_operator(config: ProblemConfig) -> LinearOperator:
    """The forward operator of ``config`` on ``(1, size, size)`` images.

    Examples
    --------
    >>> from bayes_recon.data.problems import ProblemConfig, build_operator
    >>> build_operator(ProblemConfig("mri", size=16, spokes=4)).complex_range
    True
    """
    if not isinstance(config, ProblemConfig):
        raise TypeError(f"config must be a ProblemConfig, got {type(config).__name__}")
    n = config.size
    if config.problem == "ct":
        return ParallelBeamCT(n, config.angles)
    if config.problem == "mri":
        return MRI(n, radial_mask(n, config.spokes))
    if config.problem == "denoise":
        return Identity((1, n, n))
    if config.problem == "deblur":
        return Blur(n, gaussian_kernel(config.blur_sigma))
    if config.problem == "inpaint":
        gen = torch.Generator().manual_seed(config.seed)
        return Inpainting(torch.rand(n, n, generator=gen) < config.observed_fraction)
    return Downsampling(n, config.factor)
