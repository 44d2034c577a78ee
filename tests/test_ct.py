"""ParallelBeamCT: exactness of the adjoint, agreement with scikit-image's radon,
FBP quality, torch.func support, bad input.

The generic operator contract (registry in conftest.py) also runs on three small
CT geometries; the tests here add rectangular images, several channels,
arbitrary angle sets and the CT-specific references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import radon

from bayes_recon.data import shepp_logan, simulate
from bayes_recon.operators import (
    ParallelBeamCT,
    SparseMatrix,
    adjointness_error,
    ramp_filter,
    tv_reconstruction,
)
from bayes_recon.metrics import psnr
from conftest import joseph_reference


def _dense_multichannel(op):
    """Dense matrix of a C-channel op, ``I_C ⊗ M``, with ``M`` from the independent
    scalar-loop Joseph reference of conftest.py (not from the package's matrix)."""
    c, h, w = op.domain_shape
    m = joseph_reference(h, w, op.angles, op.range_shape[-1])
    return torch.from_numpy(np.kron(np.eye(c), m))


# Geometries: square/rectangular, even/odd, detectors fewer or more than the
# default, several channels, angles beyond [0, π).
GEOMETRIES = {
    "square-even": dict(image_size=8, n_angles=5),
    "square-odd-narrow-detector": dict(image_size=9, n_angles=4, n_detectors=6),
    "rect-wide-detector": dict(image_size=(7, 12), n_angles=6, n_detectors=21),
    "rect-tall-2ch": dict(image_size=(12, 5), n_angles=3, channels=2),
    "explicit-angles": dict(image_size=10, angles=[-0.3, 0.0, math.pi / 4, 2.0, 4.5]),
    "single-angle-single-detector": dict(image_size=(3, 4), n_angles=1, n_detectors=1),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_adjointness_float64_and_float32(name):
    op = ParallelBeamCT(**GEOMETRIES[name])
    # float64: the adjoint is the stored transpose, only rounding remains.
    assert adjointness_error(op, trials=5, seed=1) < 1e-6
    # float32: one rounding of ~nnz-per-row products, relative ~1e-7.
    assert adjointness_error(op, trials=5, seed=2, dtype=torch.float32) < 1e-4


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    n_angles=st.integers(1, 9),
    extra=st.integers(-3, 6),
    offset=st.floats(-4.0, 4.0),
)
def test_adjointness_random_geometries(h, w, n_angles, extra, offset):
    d = max(1, int(math.ceil(math.hypot(h, w))) + extra)
    angles = offset + np.arange(n_angles) * np.pi / n_angles
    op = ParallelBeamCT((h, w), angles=angles, n_detectors=d)
    assert adjointness_error(op, trials=2) < 1e-6
    assert adjointness_error(op, trials=2, dtype=torch.float32) < 1e-4


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_matrix_matches_scalar_joseph_reference(name):
    # Vectorised chunked CSR build vs a plain loop over rays and steps: float64, the
    # same sums in a different order, so they agree to rounding.
    op = ParallelBeamCT(**GEOMETRIES[name])
    h, w = op.domain_shape[1:]
    ref = joseph_reference(h, w, op.angles, op.range_shape[-1])
    np.testing.assert_allclose(op.matrix.scipy.toarray(), ref, rtol=0, atol=1e-12)
    assert op.matrix.scipy.nnz == np.count_nonzero(ref)  # no stored zeros, no missing entries


@pytest.mark.parametrize("name", ["rect-tall-2ch", "rect-wide-detector"])
def test_multichannel_matches_dense_matrix(name):
    op = ParallelBeamCT(**GEOMETRIES[name])
    dense = _dense_multichannel(op)
    torch.testing.assert_close(op.to_dense(), dense)
    # Spectral norm by power iteration vs the SVD (power iteration tol 1e-10).
    assert op.norm() == pytest.approx(torch.linalg.matrix_norm(dense, ord=2).item(), rel=1e-6)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, *op.domain_shape), generator=gen, dtype=torch.float64)
    y = torch.randn((3, *op.range_shape), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op(x).reshape(3, -1), x.reshape(3, -1) @ dense.T)
    torch.testing.assert_close(op.adjoint(y).reshape(3, -1), y.reshape(3, -1) @ dense)


def test_batch_and_channels_equal_per_image():
    # B=3, C=2: one sparse product for all 6 columns == each image and channel alone.
    op2 = ParallelBeamCT((10, 7), 6, channels=2)
    op1 = ParallelBeamCT((10, 7), 6, channels=1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 10, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(3, *op2.range_shape, generator=gen, dtype=torch.float64)
    fx, ay = op2(x), op2.adjoint(y)
    for b in range(3):
        for c in range(2):
            torch.testing.assert_close(fx[b, c], op1(x[b : b + 1, c : c + 1])[0, 0])
            torch.testing.assert_close(ay[b, c], op1.adjoint(y[b : b + 1, c : c + 1])[0, 0])


def test_autograd_through_op_and_adjoint_matches_dense():
    op = ParallelBeamCT((6, 9), 5, channels=2)
    dense = _dense_multichannel(op)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((2, *op.domain_shape), generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn((2, *op.range_shape), generator=gen, dtype=torch.float64, requires_grad=True)
    # d<Ax, y>/dx = Aᵀy and d<x, Aᵀy>/dy = Ax, both from the dense matrix.
    (gx,) = torch.autograd.grad((op(x) * y.detach()).sum(), x)
    (gy,) = torch.autograd.grad((op.adjoint(y) * x.detach()).sum(), y)
    torch.testing.assert_close(gx.reshape(2, -1), y.detach().reshape(2, -1) @ dense)
    torch.testing.assert_close(gy.reshape(2, -1), x.detach().reshape(2, -1) @ dense.T)
    # Second order: the Hessian of ||Ax||²/2 is AᵀA.
    hess = torch.autograd.functional.hessian(
        lambda v: 0.5 * op(v.reshape(1, *op.domain_shape)).pow(2).sum(),
        x.detach()[0].reshape(-1),
    )
    torch.testing.assert_close(hess, dense.T @ dense)


def test_torch_func_jvp_vjp_jacrev_match_dense():
    from torch.func import jacrev, jvp, vjp

    op = ParallelBeamCT(7, 4, n_detectors=9)
    dense = op.matrix.to_dense()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 7, 7, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 1, 7, 7, generator=gen, dtype=torch.float64)
    out, tangent = jvp(op, (x,), (v,))
    torch.testing.assert_close(out.reshape(2, -1), x.reshape(2, -1) @ dense.T)
    torch.testing.assert_close(tangent.reshape(2, -1), v.reshape(2, -1) @ dense.T)
    y, pullback = vjp(op, x)
    u = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(pullback(u)[0].reshape(2, -1), u.reshape(2, -1) @ dense)
    # jacrev vmaps the pullback, i.e. the vmap rule of the sparse product.
    jac = jacrev(op)(x[:1]).reshape(dense.shape)
    torch.testing.assert_close(jac, dense)


def test_sparse_matrix_under_vmap_and_forward_mode():
    from torch.func import jacfwd, vmap

    mat = sp.random(12, 9, density=0.3, format="csr", random_state=0)
    m = SparseMatrix(mat)
    dense = torch.from_numpy(mat.toarray())
    rows = torch.randn(4, 3, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(vmap(m.matmul)(rows), rows @ dense.T)
    torch.testing.assert_close(vmap(m.matmul, in_dims=1, out_dims=1)(rows), rows @ dense.T)
    torch.testing.assert_close(vmap(m.rmatmul)(rows @ dense.T), rows @ dense.T @ dense)
    torch.testing.assert_close(jacfwd(m.matmul)(rows[0, :1])[0, :, 0], dense)
    with pytest.raises(ValueError, match="rows must have shape"):
        m.matmul(rows[0, :, :-1])
    with pytest.raises(TypeError, match="matrix must be a scipy sparse matrix"):
        SparseMatrix(dense.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    op = ParallelBeamCT(8, 5)
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    y = op(x)
    assert y.dtype == dtype and op.adjoint(y).dtype == dtype and op.fbp(y).dtype == dtype
    # Both precisions are cached side by side and give the same numbers.
    torch.testing.assert_close(op(x.double()).to(dtype), y)


def test_angle_zero_and_right_angle_are_axis_sums():
    # (9, 7) image, 11 detectors at s = -5..5: columns sit at x = -3..3 and rows
    # at y = 4..-4, exactly on detectors, so Joseph's sums are exact.
    x = torch.rand(1, 1, 9, 7, dtype=torch.float64)
    op = ParallelBeamCT((9, 7), angles=[0.0, math.pi / 2], n_detectors=11)
    sino = op(x)[0, 0]
    # θ=0: integrals down the columns, left to right.
    torch.testing.assert_close(sino[0, 2:9], x[0, 0].sum(0))
    assert sino[0, :2].abs().sum() == 0 and sino[0, 9:].abs().sum() == 0
    # θ=π/2: integrals along rows; detector s grows with y, i.e. bottom row first.
    torch.testing.assert_close(sino[1, 1:10], x[0, 0].sum(1).flip(0))


def _compare_with_radon(ours, ref):
    """Correlation and least-squares scale of our sinogram vs skimage's."""
    scale = (ours * ref).sum() / (ours * ours).sum()
    return np.corrcoef(ours.ravel(), ref.ravel())[0, 1], scale


@pytest.mark.parametrize(
    "size, n_detectors, circle",
    # odd N: skimage rotates about pixel N//2 = (N-1)/2, our centre; circle=True
    # has N detectors. N=67: circle=False pads to ceil(√2·67)=95 detectors
    # symmetrically, which is our default n_detectors.
    [(65, 65, True), (129, 129, True), (67, None, False)],
)
def test_sinogram_matches_skimage_radon(size, n_detectors, circle):
    op = ParallelBeamCT(size, 60, n_detectors=n_detectors)
    x = shepp_logan(size).double()
    ours = op(x)[0, 0].numpy().T  # (detectors, angles), as skimage lays it out
    ref = radon(x[0, 0].numpy(), theta=np.rad2deg(op.angles), circle=circle)
    assert ours.shape == ref.shape
    corr, scale = _compare_with_radon(ours, ref)
    assert corr > 0.99
    # Both integrate in pixel units; the interpolations differ by ~0.1%.
    assert scale == pytest.approx(1.0, abs=0.01)


def test_sinogram_matches_skimage_radon_even_size():
    # Even N: skimage rotates about pixel (N/2, N/2), half a pixel from the image
    # centre. Padding a zero row below and a zero column to the right gives an
    # (N+1)² image whose centre is that pixel; its first N of N+1 detectors are
    # skimage's N detectors.
    n = 128
    x = shepp_logan(n).double()
    padded = torch.zeros(1, 1, n + 1, n + 1, dtype=torch.float64)
    padded[..., :n, :n] = x
    op = ParallelBeamCT(n + 1, 60, n_detectors=n + 1)
    ours = op(padded)[0, 0, :, :n].numpy().T
    ref = radon(x[0, 0].numpy(), theta=np.rad2deg(op.angles), circle=True)
    corr, scale = _compare_with_radon(ours, ref)
    assert corr > 0.99
    assert scale == pytest.approx(1.0, abs=0.01)


def test_orientation_matches_skimage_off_centre_blob():
    # An off-centre, asymmetric blob pins the angle direction and detector order;
    # the flipped-detector control shows the comparison would catch a mirror.
    n = 33
    img = np.zeros((n, n))
    img[5:9, 20:23] = 1.0
    img[24:26, 6:8] = 0.5
    op = ParallelBeamCT(n, 37, n_detectors=n)
    ours = op(torch.from_numpy(img)[None, None])[0, 0].numpy().T
    ref = radon(img, theta=np.rad2deg(op.angles), circle=True)
    assert _compare_with_radon(ours, ref)[0] > 0.99
    assert _compare_with_radon(ours[::-1], ref)[0] < 0.5
    ref_negative_angles = radon(img, theta=-np.rad2deg(op.angles), circle=True)
    assert _compare_with_radon(ours, ref_negative_angles)[0] < 0.5


def test_fbp_full_angles_psnr():
    x = shepp_logan(128)
    op = ParallelBeamCT(128, 180)
    rec = op.fbp(op(x))
    value = peak_signal_noise_ratio(x[0, 0].numpy(), rec[0, 0].numpy(), data_range=1.0)
    assert value >= 28.0, value  # ~30.8 dB measured


def test_fbp_filters_and_scale():
    # A constant disc: both filters must reproduce its level in the interior,
    # which checks the π/n_angles weight and the DC gain of the filter.
    n = 65
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disc = torch.from_numpy((np.hypot(yy, xx) < 20).astype(np.float64))[None, None]
    inner = torch.from_numpy(np.hypot(yy, xx) < 15)
    op = ParallelBeamCT(n, 180)
    for name in ("ramp", "hann"):
        rec = op.fbp(op(disc), filter=name)[0, 0]
        assert float(rec[inner].mean()) == pytest.approx(1.0, abs=0.03), name
        assert float(rec[inner].std()) < 0.03, name


def test_ramp_filter_response():
    ramp = ramp_filter(40, "ramp")
    hann = ramp_filter(40, "hann")
    freq = np.fft.fftfreq(ramp.size)
    assert ramp.size == 128  # next power of two >= 2 * 40 (zero padding)
    # Kak & Slaney: DC gain 1/4 - 2 Σ_odd 1/(πn)² -> small positive, not 0;
    # elsewhere close to |f| (cycles per detector).
    assert 0 < ramp[0] < 0.01
    assert np.allclose(ramp[1:], np.abs(freq[1:]), atol=0.01)
    assert abs(hann[ramp.size // 2]) < 1e-12  # Hann vanishes at Nyquist
    assert np.all(hann <= ramp + 1e-15)


def test_fbp_is_differentiable_and_batched():
    op = ParallelBeamCT(12, 10, channels=2)
    y = torch.rand(3, *op.range_shape, dtype=torch.float64, requires_grad=True)
    rec = op.fbp(y)
    assert rec.shape == (3, 2, 12, 12)
    torch.testing.assert_close(rec[1:2], op.fbp(y[1:2]))
    # FBP is linear, so d(sum fbp(y))/dy_j = sum fbp(e_j): autograd against the forward
    # evaluated on every basis sinogram (one batched call, float64 rounding only).
    (g,) = torch.autograd.grad(rec.sum(), y)
    m = math.prod(op.range_shape[1:])
    basis = torch.eye(m, dtype=torch.float64).reshape(m, 1, *op.range_shape[1:])
    op1 = ParallelBeamCT(12, 10)
    per_channel = op1.fbp(basis).reshape(m, -1).sum(1).reshape(op.range_shape[1:])
    torch.testing.assert_close(g, per_channel.expand(3, 2, *op.range_shape[1:]))


def test_tv_beats_fbp_sparse_view():
    x = shepp_logan(64)
    op = ParallelBeamCT(64, 20)
    meas = simulate(op, x, relative_noise=0.05, seed=0)
    x_fbp = op.fbp(meas.y)
    x_tv = tv_reconstruction(op, meas.y, weight=0.03 * meas.noise_std * op.norm(),
                             iterations=500, progress=False)
    gain = float(psnr(x, x_tv, data_range=1.0)[0] - psnr(x, x_fbp, data_range=1.0)[0])
    assert gain > 3.0, gain


def test_matrix_build_is_deterministic_and_sparse():
    a = ParallelBeamCT(32, 30).matrix.scipy
    b = ParallelBeamCT(32, 30).matrix.scipy
    assert (a != b).nnz == 0
    # Joseph: at most two weights per step, one step per pixel column/row.
    assert a.nnz <= 2 * 30 * 46 * 32
    assert a.min() >= 0 and a.max() <= math.sqrt(2) + 1e-12  # weight ≤ step length


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: ParallelBeamCT(16, 0), ValueError, "n_angles must be >= 1, got 0"),
        (lambda: ParallelBeamCT(16, -3), ValueError, "n_angles must be >= 1"),
        (lambda: ParallelBeamCT(16, 2.0), TypeError, "n_angles must be an int"),
        (lambda: ParallelBeamCT(16, None), ValueError, "n_angles must be given"),
        (lambda: ParallelBeamCT(16, 3, angles=[0.0, 1.0]), ValueError, "n_angles must equal"),
        (lambda: ParallelBeamCT(16, 3, n_detectors=0), ValueError, "n_detectors must be >= 1"),
        (lambda: ParallelBeamCT(0, 3), ValueError, "image_size must be positive"),
        (lambda: ParallelBeamCT(16.5, 3), TypeError, "image_size must be an int"),
        (lambda: ParallelBeamCT(16, 3, channels=0), ValueError, "channels must be >= 1"),
        (lambda: ParallelBeamCT(16, angles=[0.0, float("nan")]), ValueError, "angles must be"),
        (lambda: ParallelBeamCT(16, angles=[]), ValueError, "angles must be"),
        (lambda: ParallelBeamCT(16, angles=[[0.0, 1.0]]), ValueError, "angles must be"),
    ],
)
def test_bad_geometry(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_bad_input_to_op_and_fbp():
    op = ParallelBeamCT(16, 4)
    x = torch.rand(1, 1, 16, 16)
    y = op(x)
    with pytest.raises(ValueError, match="filter must be one of"):
        op.fbp(y, filter="shepp")
    with pytest.raises(ValueError, match=r"y must have shape \(B, 1, 4, 23\)"):
        op.fbp(y[..., :-1])
    with pytest.raises(ValueError, match="y contains NaN"):
        op.fbp(y * float("nan"))
    with pytest.raises(TypeError, match="y must be a real"):
        op.fbp(y.to(torch.complex64))
    with pytest.raises(ValueError, match=r"y must have shape"):
        op.adjoint(y[:, :, :-1])
    x_nan = x.clone()
    x_nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        op(x_nan)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 16, 16\)"):
        op(x[0])
