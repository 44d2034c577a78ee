"""An explicit sparse matrix applied to batches of images, with an exact transpose.

The matrix and its transpose are both stored as torch CSR tensors (converted
lazily per device and dtype of the input): torch's product with a transposed
CSR tensor is about 50× slower than with a stored transpose.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def _to_torch_csr(mat: sp.csr_matrix, dtype, device) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags CSR as beta on every construction; the matrix is built by
        # scipy, so its invariants hold.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            # int32 indices: torch's CPU kernels run 2-4x faster than with int64.
            torch.from_numpy(mat.indptr.astype(np.int32)),
            torch.from_numpy(mat.indices.astype(np.int32)),
            torch.from_numpy(mat.data).to(dtype),
            size=mat.shape,
            check_invariants=False,
        ).to(device)


class _SparseMatmul(torch.autograd.Function):
    """``rows (k, n) -> rows @ Mᵀ (k, m)``; backward and jvp use the stored transpose.

    The matrix travels as a plain Python object (not a tensor argument) because
    torch.func lifts tensor arguments, which CSR tensors do not support.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(rows, matrix, transpose):
        mat = matrix.torch_pair(rows)[1 if transpose else 0]
        if rows.shape[0] == 1:  # one image: the matrix-vector kernel is ~2x faster
            return torch.mv(mat, rows[0])[None]
        # (M rowsᵀ)ᵀ: the sparse product wants the dense operand as columns.
        return torch.sparse.mm(mat, rows.T.contiguous()).T

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.matrix, ctx.transpose = inputs

    @staticmethod
    def backward(ctx, grad):
        return _SparseMatmul.apply(grad, ctx.matrix, not ctx.transpose), None, None

    @staticmethod
    def jvp(ctx, rows_t, _matrix_t, _transpose_t):
        return _SparseMatmul.apply(rows_t, ctx.matrix, ctx.transpose)


class SparseMatrix:
    """A fixed real sparse matrix ``M (m, n)`` acting on row batches.

    ``matmul(rows)`` maps ``(k, n) -> (k, m)`` (``rows @ Mᵀ``) and
    ``rmatmul(rows)`` maps ``(k, m) -> (k, n)`` (``rows @ M``); both are
    differentiable (including forward mode) and follow the device and dtype of
    their input.
    """

    def __init__(self, matrix: sp.spmatrix):
        self.scipy = sp.csr_matrix(matrix, dtype=np.float64)
        self.scipy_t = sp.csr_matrix(self.scipy.T)
        self.shape = self.scipy.shape
        self._cache: dict = {}
        # Built eagerly for the CPU dtypes: torch cannot create CSR tensors inside
        # torch.func transforms (jvp / vjp / vmap), where the first call may happen.
        cpu = torch.device("cpu")
        for dtype in (torch.float32, torch.float64):
            self._cache[(cpu, dtype)] = (_to_torch_csr(self.scipy, dtype, cpu),
                                         _to_torch_csr(self.scipy_t, dtype, cpu))

    def torch_pair(self, x: torch.Tensor):
        """``(M, Mᵀ)`` as torch CSR tensors on ``x``'s device and dtype (cached)."""
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = (_to_torch_csr(self.scipy, x.dtype, x.device),
                                _to_torch_csr(self.scipy_t, x.dtype, x.device))
        return self._cache[key]

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(rows, self, False)

    def rmatmul(self, rows: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(rows, self, True)

    def to_dense(self, dtype=torch.float64) -> torch.Tensor:
        return torch.from_numpy(self.scipy.toarray()).to(dtype)
