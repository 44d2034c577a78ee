"""An explicit sparse matrix applied to batches of images, with an exact transpose.

The matrix ``M`` is built once by scipy (float64 CSR); ``M`` and an explicitly
stored ``Mᵀ`` are converted lazily to torch CSR tensors, once per device and
dtype of the input, and cached. The transpose is stored rather than taken
because torch's product with a transposed CSR tensor is about 50× slower.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .._validation import check_tensor


def _to_torch_csr(mat: sp.csr_matrix, dtype: torch.dtype, device) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags CSR as beta on every construction; the matrix comes from
        # scipy in canonical form, so its invariants hold.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            # int32 indices: torch's CPU kernels run 2-4x faster than with int64.
            # (No copy when scipy already uses int32: the cache shares its arrays.)
            torch.from_numpy(mat.indptr.astype(np.int32, copy=False)),
            torch.from_numpy(mat.indices.astype(np.int32, copy=False)),
            torch.from_numpy(mat.data).to(dtype),
            size=mat.shape,
            check_invariants=False,
        ).to(device)


class _SparseMatmul(torch.autograd.Function):
    """``rows (k, n) -> rows @ Mᵀ (k, m)`` (or ``rows @ M`` when ``transpose``).

    Backward is the product with the other stored matrix, so the gradient is the
    exact transpose; jvp is the product itself (the map is linear). The matrix
    travels as a plain Python object, not a tensor argument, because torch.func
    lifts tensor arguments and CSR tensors cannot be lifted.
    """

    @staticmethod
    def forward(rows, matrix, transpose):
        # Runs with torch.func's wrappers peeled off, so creating the CSR
        # tensors here (first call on a device/dtype) is allowed.
        mat = matrix.torch_pair(rows)[1 if transpose else 0]
        if rows.shape[0] == 1:  # one image: the matrix-vector kernel is ~2x faster
            return torch.mv(mat, rows[0])[None]
        # One sparse @ dense product for all rows; it wants them as columns.
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

    @staticmethod
    def vmap(info, in_dims, rows, matrix, transpose):
        # Fold the vmapped dimension into the rows: still one sparse product
        # (torch has no batching rule for sparse.mm and would loop with a warning).
        dim = in_dims[0]
        if dim is None:
            return _SparseMatmul.apply(rows, matrix, transpose), None
        rows = rows.movedim(dim, 0)
        v, k = rows.shape[:2]
        out = _SparseMatmul.apply(rows.reshape(v * k, -1), matrix, transpose)
        return out.reshape(v, k, -1), 0


class SparseMatrix:
    """A fixed real sparse matrix ``M (m, n)`` acting on batches of rows.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape ``(m, n)``
        Converted to float64 CSR; its transpose is stored as well.

    Notes
    -----
    ``matmul(rows)`` maps ``(k, n) -> (k, m)`` (``rows @ Mᵀ``, i.e. ``M`` applied
    to each row) and ``rmatmul(rows)`` maps ``(k, m) -> (k, n)`` (``rows @ M``).
    Both follow the device and dtype of their input, are differentiable in
    reverse and forward mode, and work under ``torch.func.vmap``/``jvp``/``vjp``.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> m = SparseMatrix(sp.eye(3, 4, format="csr"))
    >>> m.matmul(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, matrix):
        if not sp.issparse(matrix):
            raise TypeError(f"matrix must be a scipy sparse matrix, got {type(matrix).__name__}")
        if max(matrix.shape) >= 2**31 or matrix.nnz >= 2**31:
            raise ValueError(f"matrix must have < 2**31 rows, columns and entries, got "
                             f"shape {matrix.shape} with {matrix.nnz} entries")
        self.scipy = sp.csr_matrix(matrix, dtype=np.float64)
        self.scipy.sum_duplicates()
        self.scipy_t = sp.csr_matrix(self.scipy.T)
        self.scipy_t.sort_indices()
        self.shape = self.scipy.shape
        self._cache: dict = {}

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.scipy.nnz)

    def torch_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, Mᵀ)`` as torch CSR tensors on ``x``'s device and dtype (cached)."""
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = (_to_torch_csr(self.scipy, x.dtype, x.device),
                                _to_torch_csr(self.scipy_t, x.dtype, x.device))
        return self._cache[key]

    def matmul(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows @ Mᵀ``: ``(k, n) -> (k, m)``."""
        check_tensor("rows", rows, shape=(None, self.shape[1]), finite=False)
        return _SparseMatmul.apply(rows, self, False)

    def rmatmul(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows @ M``: ``(k, m) -> (k, n)``."""
        check_tensor("rows", rows, shape=(None, self.shape[0]), finite=False)
        return _SparseMatmul.apply(rows, self, True)

    def to_dense(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``M`` as a dense ``(m, n)`` tensor (small matrices only)."""
        return torch.from_numpy(self.scipy.toarray()).to(dtype)
