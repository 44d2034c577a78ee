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
    FanBeamCT,
    Identity,
    Inpainting,
    LinearOperator,
    ParallelBeamCT,
    gaussian_kernel,
    radial_mask,
)

PROBLEMS = ("ct", "ct-fan", "mri", "denoise", "deblur", "inpaint", "superres")


@dataclass(frozen=True)
class ProblemConfig:
    """Which forward model to build, with its geometry.

    Attributes
    ----------
    problem : str
        One of ``ct`` (parallel beam), ``ct-fan`` (fan beam, flat detector), ``mri``,
        ``denoise``, ``deblur``, ``inpaint``, ``superres``.
    size : int
        Image side length (square images, one channel).
    angles : int
        CT projection angles: in [0, π) for ``ct``; source positions over the full
        circle (or a short scan) for ``ct-fan``.
    detectors : int or None
        CT detector count (None: each geometry's default, covering the image).
    source_distance, detector_distance : float or None
        ``ct-fan``: source and detector distances from the rotation centre, in
        pixels (None: ``2·size`` and ``size``).
    detector_spacing : float or None
        ``ct-fan``: detector pitch in pixels (None: the default that covers the image).
    scan : {"full", "short"}
        ``ct-fan``: full circle or short scan (π plus the fan angle, Parker-weighted FBP).
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
    detectors: int | None = None
    source_distance: float | None = None
    detector_distance: float | None = None
    detector_spacing: float | None = None
    scan: str = "full"
    spokes: int = 30
    blur_sigma: float = 1.0
    observed_fraction: float = 0.5
    factor: int = 2
    seed: int = 0

    def __post_init__(self):
        check_choice("problem", self.problem, PROBLEMS)
        check_int("size", self.size, minimum=2)
        check_int("angles", self.angles, minimum=1)
        if self.detectors is not None:
            check_int("detectors", self.detectors, minimum=1)
        fan = {"source_distance": self.source_distance, "detector_distance": self.detector_distance,
               "detector_spacing": self.detector_spacing}
        if self.problem != "ct-fan":
            given = [k for k, v in fan.items() if v is not None] + (["scan"] if self.scan != "full" else [])
            if given:
                raise ValueError(f"{', '.join(given)} only apply to problem 'ct-fan', "
                                 f"got problem {self.problem!r}")
        check_choice("scan", self.scan, ("full", "short"))
        if self.detectors is not None and self.problem not in ("ct", "ct-fan"):
            raise ValueError(f"detectors only applies to CT problems, got problem {self.problem!r}")
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
        return ParallelBeamCT(n, config.angles, n_detectors=config.detectors)
    if config.problem == "ct-fan":
        source = 2.0 * n if config.source_distance is None else config.source_distance
        detector = 1.0 * n if config.detector_distance is None else config.detector_distance
        return FanBeamCT(n, config.angles, source_distance=source, detector_distance=detector,
                         n_detectors=config.detectors, detector_spacing=config.detector_spacing,
                         scan=config.scan)
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
