"""Shared fixtures: seeded generators and a registry of small operators of every kind.

Every operator in ``OPERATOR_FACTORIES`` gets every contract test in
``test_operators.py``: add an operator here and it is tested.
"""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Two cores: keep torch from oversubscribing them when pytest-xdist runs two workers.
torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))

from bayes_recon import operators as ops  # noqa: E402


def _random_mask(shape, fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < fraction


OPERATOR_FACTORIES = {
    "identity": lambda: ops.Identity((1, 8, 8)),
    "identity-2ch": lambda: ops.Identity((2, 5, 7)),
    "blur": lambda: ops.Blur(8, ops.gaussian_kernel(1.0, 5)),
    "blur-rect-2ch": lambda: ops.Blur((6, 9), ops.gaussian_kernel(0.7, 3), channels=2),
    "inpainting": lambda: ops.Inpainting(_random_mask((8, 8), 0.6, 0)),
    "inpainting-2ch": lambda: ops.Inpainting(_random_mask((2, 6, 6), 0.5, 1)),
    "downsampling": lambda: ops.Downsampling(8, 2),
    "downsampling-rect": lambda: ops.Downsampling((6, 9), 3),
    "mri-radial": lambda: ops.MRI(8, ops.radial_mask(8, 3)),
    "mri-cartesian": lambda: ops.MRI((8, 6), ops.cartesian_mask((8, 6), 2.0, 0.2, seed=0)),
    "matrix": lambda: ops.MatrixOperator(
        torch.randn(7, 16, generator=torch.Generator().manual_seed(0)), (1, 4, 4)
    ),
}
if hasattr(ops, "ParallelBeamCT"):
    OPERATOR_FACTORIES.update(
        {
            "ct": lambda: ops.ParallelBeamCT(8, 5),
            "ct-wide-detector": lambda: ops.ParallelBeamCT(8, 7, n_detectors=13),
            "ct-odd": lambda: ops.ParallelBeamCT(9, 4, n_detectors=6),
        }
    )


@pytest.fixture(params=sorted(OPERATOR_FACTORIES))
def operator(request):
    """Each small operator of the registry, freshly built."""
    return OPERATOR_FACTORIES[request.param]()


@pytest.fixture
def generator():
    """A seeded torch generator (seed 0)."""
    return torch.Generator().manual_seed(0)
