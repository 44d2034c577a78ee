"""ParallelBeamCT: agreement with scikit-image's radon, FBP quality, TV vs FBP, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.transform import radon

from bayes_recon.data import shepp_logan, simulate
from bayes_recon.metrics import psnr
from bayes_recon.operators import ParallelBeamCT, adjointness_error, tv_reconstruction


@pytest.mark.parametrize("size", [65, 129])
def test_sinogram_matches_skimage_radon(size):
    # skimage rotates about pixel N//2, which is our centre (N-1)/2 only for odd N;
    # its circle=True geometry has N detectors of one pixel, angles in degrees.
    op = ParallelBeamCT(size, 60, n_detectors=size)
    x = shepp_logan(size).double()
    ours = op(x)[0, 0].numpy().T  # (detectors, angles) as skimage lays it out
    ref = radon(x[0, 0].numpy(), theta=np.rad2deg(op.angles), circle=True)
    scale = (ours * ref).sum() / (ours * ours).sum()
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
    assert scale == pytest.approx(1.0, abs=0.01)  # both integrate in pixel units


def test_angle_zero_is_column_sums():
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    op = ParallelBeamCT(9, 4, n_detectors=9)
    torch.testing.assert_close(op(x)[0, 0, 0], x[0, 0].sum(0))


def test_fbp_full_angles_psnr():
    x = shepp_logan(128)
    op = ParallelBeamCT(128, 180)
    assert float(psnr(op.fbp(op(x)), x, data_range=1.0)[0]) >= 28.0


def test_fbp_filters_and_scale():
    # A constant disc: the ramp FBP must reproduce its level in the interior.
    n = 65
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disc = torch.from_numpy((np.hypot(yy, xx) < 20).astype(np.float64))[None, None]
    op = ParallelBeamCT(n, 180)
    inner = torch.from_numpy(np.hypot(yy, xx) < 15)
    for name in ("ramp", "hann"):
        rec = op.fbp(op(disc), filter=name)[0, 0]
        assert float(rec[inner].mean()) == pytest.approx(1.0, abs=0.03), name


def test_tv_beats_fbp_sparse_view():
    x = shepp_logan(64)
    op = ParallelBeamCT(64, 20)
    meas = simulate(op, x, relative_noise=0.05, seed=0)
    x_fbp = op.fbp(meas.y)
    x_tv = tv_reconstruction(op, meas.y, weight=0.03 * meas.noise_std * op.norm(),
                             iterations=500, progress=False)
    gain = float(psnr(x_tv, x, 1.0)[0] - psnr(x_fbp, x, 1.0)[0])
    assert gain > 3.0, gain


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(3, 12),
    w=st.integers(3, 12),
    n_angles=st.integers(1, 9),
    extra=st.integers(-2, 6),
    offset=st.floats(0.0, 3.0),
)
def test_adjointness_random_geometries(h, w, n_angles, extra, offset):
    d = max(1, int(math.ceil(math.hypot(h, w))) + extra)
    angles = offset + np.arange(n_angles) * np.pi / n_angles
    op = ParallelBeamCT((h, w), angles=angles, n_detectors=d)
    assert adjointness_error(op, trials=2) < 1e-6


def test_matrix_build_is_deterministic_and_sparse():
    a = ParallelBeamCT(32, 30).matrix.scipy
    b = ParallelBeamCT(32, 30).matrix.scipy
    assert (a != b).nnz == 0
    assert a.nnz < 3 * 30 * 46 * 32  # two weights per step, one step per pixel column


def test_jvp_vjp_through_torch_func():
    from torch.func import jvp, vjp

    op = ParallelBeamCT(10, 6)
    x = torch.rand(2, 1, 10, 10, dtype=torch.float64)
    v = torch.rand_like(x)
    torch.testing.assert_close(jvp(op, (x,), (v,))[1], op(v))
    y, pullback = vjp(op, x)
    u = torch.rand_like(y)
    torch.testing.assert_close(pullback(u)[0], op.adjoint(u))


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: ParallelBeamCT(16, 0), ValueError, "n_angles must be >= 1"),
        (lambda: ParallelBeamCT(16, None), ValueError, "n_angles must be given"),
        (lambda: ParallelBeamCT(16, 3, angles=[0.0, 1.0]), ValueError, "n_angles must equal"),
        (lambda: ParallelBeamCT(16, 3, n_detectors=0), ValueError, "n_detectors must be >= 1"),
        (lambda: ParallelBeamCT(0, 3), ValueError, "image_size must be positive"),
        (lambda: ParallelBeamCT(16.5, 3), TypeError, "image_size must be an int"),
        (lambda: ParallelBeamCT(16, angles=[0.0, float("nan")]), ValueError, "angles must be"),
    ],
)
def test_bad_geometry(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_fbp_bad_input():
    op = ParallelBeamCT(16, 4)
    y = op(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="filter must be one of"):
        op.fbp(y, filter="shepp")
    with pytest.raises(ValueError, match="y must have shape"):
        op.fbp(y[..., :-1])
    with pytest.raises(ValueError, match="y contains NaN"):
        op.fbp(y * float("nan"))
