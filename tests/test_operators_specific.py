"""Operator-specific behaviour: masks, MRI inverse, blur, downsampling, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayes_recon import operators as ops


def test_mri_fully_sampled_adjoint_is_inverse():
    op = ops.MRI(12, torch.ones(12, 12, dtype=torch.bool))
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(op.adjoint(op(x)), x)
    # Orthonormal FFT: energy preserved.
    torch.testing.assert_close(op(x).abs().pow(2).sum(), x.pow(2).sum())


def test_mri_matches_numpy_fft():
    mask = ops.radial_mask(16, 5)
    op = ops.MRI(16, mask)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    ref = np.fft.fftshift(np.fft.fft2(x[0, 0].numpy(), norm="ortho"))[mask.numpy()]
    np.testing.assert_allclose(op(x)[0, 0].numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_spokes", [3, 8, 15])
def test_radial_mask_has_requested_spokes(n_spokes):
    size = 96
    mask = ops.radial_mask(size, n_spokes).numpy()
    assert mask[size // 2, size // 2]
    rows, cols = np.nonzero(mask)
    dy, dx = rows - size // 2, cols - size // 2
    r = np.hypot(dy, dx)
    ring = (r > 0.3 * size) & (r < 0.45 * size)
    # Angles of the sampled points on a ring, folded to [0, pi): one cluster per spoke.
    ang = np.sort(np.mod(np.arctan2(dy[ring], dx[ring]), np.pi))
    gaps = np.diff(np.concatenate([ang, [ang[0] + np.pi]]))
    clusters = int((gaps > 0.5 * np.pi / n_spokes).sum())
    assert clusters == n_spokes


def test_radial_mask_grows_with_spokes():
    sizes = [int(ops.radial_mask(32, n).sum()) for n in (2, 5, 10, 20)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_cartesian_mask_acceleration_and_centre():
    mask = ops.cartesian_mask((32, 40), acceleration=4, center_fraction=0.1, seed=1)
    cols = mask.any(0)
    assert bool((mask == cols[None]).all())  # whole phase-encode lines
    assert int(cols.sum()) == 10
    assert bool(cols[40 // 2 - 2 : 40 // 2 + 2].all())  # centre band sampled
    again = ops.cartesian_mask((32, 40), acceleration=4, center_fraction=0.1, seed=1)
    other = ops.cartesian_mask((32, 40), acceleration=4, center_fraction=0.1, seed=2)
    assert bool((mask == again).all()) and not bool((mask == other).all())


def test_blur_matches_scipy_convolution():
    from scipy.ndimage import correlate

    kernel = torch.rand(3, 3, dtype=torch.float64)
    op = ops.Blur(10, kernel)
    x = torch.rand(1, 1, 10, 10, dtype=torch.float64)
    ref = correlate(x[0, 0].numpy(), kernel.numpy(), mode="constant", cval=0.0)
    np.testing.assert_allclose(op(x)[0, 0].numpy(), ref, rtol=1e-12)


def test_gaussian_kernel_closed_form():
    k = ops.gaussian_kernel(1.5, 7)
    r = np.arange(7) - 3
    g = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(k.numpy(), g / g.sum(), rtol=1e-12)


def test_downsampling_is_block_average():
    op = ops.Downsampling(4, 2)
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]], dtype=torch.float64)
    torch.testing.assert_close(op(x)[0, 0], expected)


def test_inpainting_observes_masked_pixels_in_order():
    mask = torch.tensor([[True, False], [False, True]])
    op = ops.Inpainting(mask)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    torch.testing.assert_close(op(x), torch.tensor([[1.0, 4.0]]))
    torch.testing.assert_close(op.adjoint(op(x)), x * mask)


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: ops.Inpainting(torch.ones(4, 4)), TypeError, "mask must be a boolean"),
        (lambda: ops.Inpainting(torch.zeros(4, 4, dtype=torch.bool)), ValueError, "at least one"),
        (lambda: ops.Inpainting(torch.ones(4, dtype=torch.bool)), ValueError, "mask must have shape"),
        (lambda: ops.MRI(8, torch.ones(8, 7, dtype=torch.bool)), ValueError, r"mask must have shape \(8, 8\)"),
        (lambda: ops.MRI(8, torch.ones(8, 8)), TypeError, "mask must be a boolean"),
        (lambda: ops.Downsampling(9, 2), ValueError, "divisible by factor"),
        (lambda: ops.Downsampling(8, 0), ValueError, "factor must be >= 1"),
        (lambda: ops.Blur(8, torch.ones(2, 2)), ValueError, "odd"),
        (lambda: ops.Blur(8, torch.full((3, 3), float("nan"))), ValueError, "kernel contains NaN"),
        (lambda: ops.gaussian_kernel(-1.0), ValueError, "sigma must be finite and > 0"),
        (lambda: ops.radial_mask(8, 0), ValueError, "n_spokes must be >= 1"),
        (lambda: ops.cartesian_mask(8, 0.5), ValueError, "acceleration must be >= 1"),
        (lambda: ops.Identity((8, 8)), TypeError, "shape must be a"),
        (lambda: ops.MatrixOperator(torch.ones(3, 5), (1, 2, 2)), ValueError, "columns"),
    ],
)
def test_constructor_bad_input(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_adjointness_error_rejects_non_operator():
    with pytest.raises(TypeError, match="op must be a LinearOperator"):
        ops.adjointness_error(np.eye(3))


def test_conjugate_gradient_solves_spd_batch():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    m = q @ q.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    res = ops.conjugate_gradient(lambda v: v @ m, b, tol=1e-12)
    assert res.converged
    torch.testing.assert_close(res.x, torch.linalg.solve(m, b.T).T)


def test_conjugate_gradient_warns_when_short():
    m = torch.diag(torch.logspace(0, 6, 50, dtype=torch.float64))
    b = torch.ones(1, 50, dtype=torch.float64)
    with pytest.warns(ops.CGConvergenceWarning, match="relative residual"):
        res = ops.conjugate_gradient(lambda v: v @ m, b, tol=1e-12, max_iter=3)
    assert not res.converged and float(res.relative_residual[0]) > 1e-12


def test_tikhonov_matches_closed_form():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(10, 16, generator=gen, dtype=torch.float64)
    op = ops.MatrixOperator(a, (1, 4, 4))
    y = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    x = ops.tikhonov(op, y, weight=0.3)
    ref = torch.linalg.solve(a.T @ a + 0.3 * torch.eye(16, dtype=torch.float64), (y @ a).T).T
    torch.testing.assert_close(x.reshape(2, -1), ref, rtol=1e-6, atol=1e-8)


def test_tikhonov_complex_mri():
    op = ops.MRI(8, torch.ones(8, 8, dtype=torch.bool))
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    # A^T A = I for the full mask, so the solution is x / (1 + weight).
    torch.testing.assert_close(ops.tikhonov(op, op(x), weight=1.0), x / 2, rtol=1e-6, atol=1e-8)


def test_gradient_divergence_adjoint():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 7, 5, generator=gen, dtype=torch.float64)
    g = torch.randn(2, 2, 1, 7, 5, generator=gen, dtype=torch.float64)
    lhs = (ops.image_gradient(x) * g).sum()
    rhs = -(x * ops.image_divergence(g)).sum()
    assert abs(float(lhs - rhs)) < 1e-10


def test_tv_of_step_image_closed_form():
    x = torch.zeros(1, 1, 6, 6)
    x[..., :, 3:] = 2.0
    assert float(ops.total_variation(x)) == pytest.approx(2.0 * 6)


def test_tv_reconstruction_minimises_objective():
    # TV denoising: the result must have lower objective than the data and than tikhonov.
    gen = torch.Generator().manual_seed(3)
    truth = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    truth[..., 4:12, 4:12] = 1.0
    y = truth + 0.2 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)
    op = ops.Identity((1, 16, 16))
    weight = 0.15

    def objective(x):
        return 0.5 * (x - y).pow(2).sum() + weight * ops.total_variation(x).sum()

    x_tv = ops.tv_reconstruction(op, y, weight, iterations=400, progress=False)
    x_tik = ops.tikhonov(op, y, weight=0.5)
    assert objective(x_tv) < objective(y.clamp_min(0)) and objective(x_tv) < objective(x_tik)
    assert (x_tv - truth).pow(2).mean() < (y - truth).pow(2).mean() / 3


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda op, y: ops.tikhonov(op, y, weight=0.0), ValueError, "weight must be finite and > 0"),
        (lambda op, y: ops.tikhonov(op, y[:, :, :3], weight=1.0), ValueError, "y must have shape"),
        (lambda op, y: ops.tv_reconstruction(op, y, 0.1, iterations=0), ValueError, "iterations must be >= 1"),
        (lambda op, y: ops.tv_reconstruction(op, y * float("nan"), 0.1), ValueError, "y contains NaN"),
        (lambda op, y: ops.tv_reconstruction("A", y, 0.1), TypeError, "op must be a LinearOperator"),
    ],
)
def test_classical_bad_input(call, exc, match):
    op = ops.Identity((1, 4, 4))
    with pytest.raises(exc, match=match):
        call(op, torch.zeros(1, 1, 4, 4))
