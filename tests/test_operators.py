"""Contract tests that every registered operator must pass (see conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch

from bayes_recon.operators import LinearOperator, adjointness_error


def _random_range(op, batch, dtype, gen):
    y = torch.randn((batch, *op.range_shape), generator=gen, dtype=dtype)
    if op.complex_range:
        y = torch.complex(y, torch.randn(y.shape, generator=gen, dtype=dtype))
    return y


def test_adjointness_float64(operator):
    # Exact transpose: only rounding error of float64 arithmetic remains.
    assert adjointness_error(operator, trials=5, seed=3) < 1e-6


def test_adjointness_float32(operator):
    assert adjointness_error(operator, trials=5, seed=4, dtype=torch.float32) < 1e-4


def test_norm_matches_reference_singular_value(operator, reference_matrix):
    # Power iteration (tol 1e-10 on the eigenvalue) vs the SVD of the independent matrix.
    sigma_max = torch.linalg.matrix_norm(reference_matrix, ord=2).item()
    assert math.isclose(operator.norm(), sigma_max, rel_tol=1e-6)


def test_forward_adjoint_and_dense_match_reference_matrix(operator, reference_matrix, generator):
    # float64 throughout: the package's op and the reference agree to rounding
    # (torch.testing's float64 defaults, rtol 1e-7, atol 1e-7).
    dense = reference_matrix
    assert dense.shape == (operator.range_size, operator.domain_size)
    torch.testing.assert_close(operator.to_dense(), dense)
    x = torch.randn((3, *operator.domain_shape), generator=generator, dtype=torch.float64)
    y = _random_range(operator, 3, torch.float64, generator)
    ax = operator(x).reshape(3, -1)
    if operator.complex_range:
        ax = torch.cat([ax.real, ax.imag], dim=1)
        y_flat = torch.cat([y.real.reshape(3, -1), y.imag.reshape(3, -1)], dim=1)
    else:
        y_flat = y.reshape(3, -1)
    torch.testing.assert_close(ax, x.reshape(3, -1) @ dense.T)
    torch.testing.assert_close(operator.adjoint(y).reshape(3, -1), y_flat @ dense)


def test_batching_equals_per_image(operator, generator):
    x = torch.randn((4, *operator.domain_shape), generator=generator, dtype=torch.float64)
    batched = operator(x)
    single = torch.cat([operator(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single)
    y = _random_range(operator, 4, torch.float64, generator)
    torch.testing.assert_close(
        operator.adjoint(y), torch.cat([operator.adjoint(y[i : i + 1]) for i in range(4)])
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(operator, generator, dtype):
    x = torch.randn((2, *operator.domain_shape), generator=generator, dtype=dtype)
    y = operator(x)
    expected = {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]
    assert y.dtype == (expected if operator.complex_range else dtype)
    assert y.shape == (2, *operator.range_shape)
    assert operator.adjoint(y).dtype == dtype
    assert y.device == x.device


def test_autograd_matches_dense(operator, reference_matrix, generator):
    dense = reference_matrix
    x = torch.randn((2, *operator.domain_shape), generator=generator, dtype=torch.float64,
                    requires_grad=True)
    y = _random_range(operator, 2, torch.float64, generator)
    # d/dx Re<A x, y> = A^T y
    inner = (operator(x).conj() * y).real.sum() if operator.complex_range else (operator(x) * y).sum()
    (grad,) = torch.autograd.grad(inner, x)
    y_flat = (torch.cat([y.real.reshape(2, -1), y.imag.reshape(2, -1)], 1)
              if operator.complex_range else y.reshape(2, -1))
    torch.testing.assert_close(grad.reshape(2, -1), y_flat @ dense)
    # d/dy <x, A^T y> = A x (real part pairs with Re y)
    w = torch.randn((2, *operator.domain_shape), generator=generator, dtype=torch.float64)
    y_req = y.detach().clone().requires_grad_(True)
    (gy,) = torch.autograd.grad((operator.adjoint(y_req) * w).sum(), y_req)
    expected = w.reshape(2, -1) @ dense.T
    if operator.complex_range:
        m = expected.shape[1] // 2
        torch.testing.assert_close(gy.real.reshape(2, -1), expected[:, :m])
        torch.testing.assert_close(gy.imag.reshape(2, -1), expected[:, m:])
    else:
        torch.testing.assert_close(gy.reshape(2, -1), expected)


def test_transpose_view(operator, generator):
    if operator.complex_range:
        with pytest.raises(TypeError, match="complex"):
            operator.T
        return
    y = torch.randn((2, *operator.range_shape), generator=generator, dtype=torch.float64)
    torch.testing.assert_close(operator.T(y), operator.adjoint(y))
    assert operator.T.T is operator
    assert isinstance(operator.T, LinearOperator)


def test_rejects_nan(operator):
    x = torch.zeros((1, *operator.domain_shape))
    x.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        operator(x)
    y = _random_range(operator, 1, torch.float32, torch.Generator().manual_seed(0))
    y.view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        operator.adjoint(y)


def test_rejects_wrong_shape(operator):
    c, h, w = operator.domain_shape
    with pytest.raises(ValueError, match=r"x must have shape"):
        operator(torch.zeros(1, c, h + 1, w))
    with pytest.raises(ValueError, match=r"x must have shape"):
        operator(torch.zeros(c, h, w))  # no batch dimension: not broadcast
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        operator([[0.0]])


def test_rejects_wrong_measurement_kind(operator):
    y = torch.zeros((1, *operator.range_shape))
    if operator.complex_range:
        with pytest.raises(TypeError, match="complex"):
            operator.adjoint(y)
    else:
        with pytest.raises(TypeError, match="real"):
            operator.adjoint(y.to(torch.complex64))
