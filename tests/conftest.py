"""Shared fixtures: seeded generators and a registry of small operators of every kind.

Every operator in ``OPERATOR_FACTORIES`` gets every contract test in
``test_operators.py``: add an operator here and it is tested. Each one also needs
an entry in ``REFERENCE_MATRICES``: its dense matrix built independently of the
package (numpy/scipy primitives, or a loop from the operator's definition), against
which the forward, the adjoint, ``to_dense`` and ``norm`` are checked.
"""

from __future__ import annotations

import math
import os

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
# Two cores: keep torch from oversubscribing them when pytest-xdist runs two workers.
torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))

from bayes_recon import operators as ops  # noqa: E402


def _random_mask(shape, fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) < fraction


def _matrix(seed=0):
    return torch.randn(7, 16, generator=torch.Generator().manual_seed(seed))


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
    "matrix": lambda: ops.MatrixOperator(_matrix(), (1, 4, 4)),
}
if hasattr(ops, "ParallelBeamCT"):
    OPERATOR_FACTORIES.update(
        {
            "ct": lambda: ops.ParallelBeamCT(8, 5),
            "ct-wide-detector": lambda: ops.ParallelBeamCT(8, 7, n_detectors=13),
            "ct-odd": lambda: ops.ParallelBeamCT(9, 4, n_detectors=6),
            "ct-fan": lambda: ops.FanBeamCT(8, 6, source_distance=12.0, detector_distance=6.0),
            "ct-fan-short-rect": lambda: ops.FanBeamCT((6, 9), 5, 10.0, 4.0, n_detectors=9,
                                                       detector_spacing=1.3, scan="short"),
            "sparse-matrix": lambda: ops.SparseMatrixOperator(
                ops.ParallelBeamCT(6, 3).matrix.scipy, (6, 6), range_shape=(3, 9)),
        }
    )


# ------------------------------------------------------ independent references
# Dense matrices of the registry's operators built without the package's operator
# code: numpy/scipy primitives and loops written from each operator's definition.
# Complex ranges are stacked [Re; Im] as in ``LinearOperator.to_dense``.
def _gaussian_kernel_np(sigma, size):
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _blur_reference(shape, kernel):
    """Zero-padded 'same' correlation, one column per basis image (scipy.signal)."""
    from scipy.signal import correlate2d

    c, h, w = shape
    single = np.empty((h * w, h * w))
    for j in range(h * w):
        e = np.zeros(h * w)
        e[j] = 1.0
        single[:, j] = correlate2d(e.reshape(h, w), kernel, mode="same", boundary="fill").ravel()
    return np.kron(np.eye(c), single)


def _block_average_reference(h, w, f):
    """Average over f x f blocks: kron of 1-D averaging matrices (row-major pixels)."""
    avg = lambda n: np.kron(np.eye(n // f), np.full((1, f), 1.0 / f))  # noqa: E731
    return np.kron(avg(h), avg(w))


def _mri_reference(h, w, mask):
    """Centred orthonormal 2-D DFT (scipy.linalg.dft), rows at the mask, [Re; Im]."""
    from scipy.linalg import dft

    full = np.kron(dft(h, scale="sqrtn"), dft(w, scale="sqrtn"))  # fft2 of a row-major image
    shifted = full[np.fft.fftshift(np.arange(h * w).reshape(h, w)).ravel()]  # fftshift
    rows = shifted[np.asarray(mask).ravel()]
    return np.concatenate([rows.real, rows.imag])


def joseph_reference(h, w, angles, n_detectors):
    """Joseph's ray-transform matrix by a scalar loop over rays and steps.

    Written from the geometry in ``bayes_recon.operators.ct`` (pixel centres at
    x = j - (W-1)/2, y = (H-1)/2 - i; ray x cos t + y sin t = s; detectors
    s_k = k - (D-1)/2): each ray steps one pixel along the axis it is most aligned
    with, interpolates linearly between the two pixels straddling it on the other
    axis, and weights the step by its length 1 / max(|sin t|, |cos t|).
    """
    a = np.zeros((len(angles) * n_detectors, h * w))
    for ia, t in enumerate(angles):
        c, s_ = math.cos(t), math.sin(t)
        for k in range(n_detectors):
            s = k - (n_detectors - 1) / 2
            row = ia * n_detectors + k
            if abs(s_) >= abs(c):  # march over columns
                for j in range(w):
                    x = j - (w - 1) / 2
                    pos = (h - 1) / 2 - (s - x * c) / s_
                    i0 = math.floor(pos)
                    for i, wt in ((i0, 1 - (pos - i0)), (i0 + 1, pos - i0)):
                        if 0 <= i < h and wt > 0:
                            a[row, i * w + j] += wt / abs(s_)
            else:  # march over rows
                for i in range(h):
                    y = (h - 1) / 2 - i
                    pos = (w - 1) / 2 + (s - y * s_) / c
                    j0 = math.floor(pos)
                    for j, wt in ((j0, 1 - (pos - j0)), (j0 + 1, pos - j0)):
                        if 0 <= j < w and wt > 0:
                            a[row, i * w + j] += wt / abs(c)
    return a


def fan_reference(h, w, n_angles, span, r, d, n_det, spacing):
    """Fan-beam Joseph matrix by a scalar loop, from ``bayes_recon.operators.fanbeam``'s
    geometry: source R (sin b, -cos b), detector point D (-sin b, cos b) + u (cos b, sin b),
    u_k = (k - (N-1)/2) spacing; each ray is the line through both, marched as above."""
    a = np.zeros((n_angles * n_det, h * w))
    for ia in range(n_angles):
        b = ia * span / n_angles
        sx, sy = r * math.sin(b), -r * math.cos(b)
        for k in range(n_det):
            u = (k - (n_det - 1) / 2) * spacing
            px, py = -d * math.sin(b) + u * math.cos(b), d * math.cos(b) + u * math.sin(b)
            norm = math.hypot(px - sx, py - sy)
            c, s_ = (py - sy) / norm, -(px - sx) / norm  # unit normal of the ray
            s = c * sx + s_ * sy
            row = ia * n_det + k
            big = abs(s_) >= abs(c)
            for t in range(w if big else h):
                if big:
                    x = t - (w - 1) / 2
                    pos, n_other, step = (h - 1) / 2 - (s - x * c) / s_, h, 1 / abs(s_)
                else:
                    y = (h - 1) / 2 - t
                    pos, n_other, step = (w - 1) / 2 + (s - y * s_) / c, w, 1 / abs(c)
                i0 = math.floor(pos)
                for i, wt in ((i0, 1 - (pos - i0)), (i0 + 1, pos - i0)):
                    if 0 <= i < n_other and wt > 0:
                        a[row, (i * w + t) if big else (t * w + i)] += wt * step
    return a


REFERENCE_MATRICES = {
    "identity": lambda: np.eye(64),
    "identity-2ch": lambda: np.eye(70),
    "blur": lambda: _blur_reference((1, 8, 8), _gaussian_kernel_np(1.0, 5)),
    "blur-rect-2ch": lambda: _blur_reference((2, 6, 9), _gaussian_kernel_np(0.7, 3)),
    "inpainting": lambda: np.eye(64)[_random_mask((8, 8), 0.6, 0).numpy().ravel()],
    "inpainting-2ch": lambda: np.eye(72)[_random_mask((2, 6, 6), 0.5, 1).numpy().ravel()],
    "downsampling": lambda: _block_average_reference(8, 8, 2),
    "downsampling-rect": lambda: _block_average_reference(6, 9, 3),
    "mri-radial": lambda: _mri_reference(8, 8, ops.radial_mask(8, 3)),
    "mri-cartesian": lambda: _mri_reference(8, 6, ops.cartesian_mask((8, 6), 2.0, 0.2, seed=0)),
    "matrix": lambda: _matrix().double().numpy(),
    "ct": lambda: joseph_reference(8, 8, np.arange(5) * np.pi / 5, 12),  # ceil(sqrt(128))
    "ct-wide-detector": lambda: joseph_reference(8, 8, np.arange(7) * np.pi / 7, 13),
    "ct-odd": lambda: joseph_reference(9, 9, np.arange(4) * np.pi / 4, 6),
    # 13 detectors: the shadow of the circumscribed circle, 2 (R+D) tan(asin(r/R)) / spacing.
    "ct-fan": lambda: fan_reference(8, 8, 6, 2 * np.pi, 12.0, 6.0, 13, 18.0 / 12.0),
    # short scan: π + 2δ, δ the half fan angle of the outer detector centres.
    "ct-fan-short-rect": lambda: fan_reference(
        6, 9, 5, np.pi + 2 * math.atan(4 * 1.3 / 14.0), 10.0, 4.0, 9, 1.3),
    "sparse-matrix": lambda: joseph_reference(6, 6, np.arange(3) * np.pi / 3, 9),
}
assert set(REFERENCE_MATRICES) >= set(OPERATOR_FACTORIES), "every operator needs a reference"


@pytest.fixture(params=sorted(OPERATOR_FACTORIES))
def operator(request):
    """Each small operator of the registry, freshly built."""
    return OPERATOR_FACTORIES[request.param]()


@pytest.fixture
def reference_matrix(operator, request):
    """The independent dense matrix (float64 torch) of the current ``operator``."""
    name = request.node.callspec.params["operator"]
    return torch.from_numpy(np.ascontiguousarray(REFERENCE_MATRICES[name]()))


@pytest.fixture
def generator():
    """A seeded torch generator (seed 0)."""
    return torch.Generator().manual_seed(0)
