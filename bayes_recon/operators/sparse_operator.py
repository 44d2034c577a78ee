"""Any linear forward model given as a sparse matrix, e.g. exported by another toolbox.

A user with a geometry this package does not build (cone- or helical-beam
slices, a curved detector, a measured system matrix from ASTRA, ODL, tomosipo
or their own code) saves the matrix with ``scipy.sparse.save_npz`` and loads it
here; the adjoint is the matrix's exact, stored transpose
(:class:`~bayes_recon.operators.SparseMatrix`).
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import scipy.sparse as sp

from .base import LinearOperator, adjointness_error
from .sparse import SparseMatrix

#: Largest ``adjointness_error`` (float64) accepted on load; an exact transpose gives ~1e-16.
ADJOINT_TOLERANCE = 1e-10


def _shape_tuple(name: str, shape, ndims: tuple[int, ...]) -> tuple[int, ...]:
    if (not isinstance(shape, (tuple, list)) or len(shape) not in ndims
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                       for s in shape)):
        raise TypeError(f"{name} must be a tuple of {' or '.join(map(str, ndims))} ints, "
                        f"got {shape!r}")
    if min(shape) < 1:
        raise ValueError(f"{name} must have positive entries, got {tuple(shape)}")
    return tuple(int(s) for s in shape)


class SparseMatrixOperator(LinearOperator):
    """A real sparse matrix ``M (m, n)`` as a forward model on images.

    ``A x = M vec(x)``: the image ``(C, H, W)`` is flattened row-major (for one
    channel: ``x[0, i, j]`` is column ``i * W + j``), and the ``m`` results are
    laid out as ``range_shape`` (row-major). The adjoint is the stored
    transpose ``Mᵀ``, exact to rounding.

    Parameters
    ----------
    matrix : scipy sparse matrix or SparseMatrix
        Real, ``(m, n)`` with ``n = prod(image_shape)``.
    image_shape : (H, W) or (C, H, W)
    range_shape : tuple of int, optional
        Layout of one measurement, ``prod(range_shape) = m``; default ``(m,)``.
        E.g. ``(n_angles, n_detectors)`` when row ``a * n_detectors + k`` is
        the ray of view ``a`` and detector ``k``.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> from bayes_recon.operators import SparseMatrixOperator, adjointness_error
    >>> op = SparseMatrixOperator(sp.random(30, 64, density=0.2, random_state=0), (8, 8))
    >>> op.domain_shape, op.range_shape
    ((1, 8, 8), (30,))
    >>> op(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 30])
    >>> adjointness_error(op) < 1e-12
    True
    """

    def __init__(self, matrix, image_shape, range_shape=None):
        if isinstance(matrix, SparseMatrix):
            sparse = matrix
        else:
            if not sp.issparse(matrix):
                raise TypeError(f"matrix must be a scipy sparse matrix, got "
                                f"{type(matrix).__name__}")
            if np.iscomplexobj(matrix.data):
                raise TypeError(f"matrix must be real, got dtype {matrix.dtype}")
            if matrix.nnz and not np.isfinite(matrix.data).all():
                raise ValueError("matrix contains NaN or inf entries")
            sparse = SparseMatrix(matrix)
        shape = _shape_tuple("image_shape", image_shape, (2, 3))
        if len(shape) == 2:
            shape = (1, *shape)
        m, n = sparse.shape
        if math.prod(shape) != n:
            raise ValueError(
                f"image_shape {tuple(image_shape)} has {math.prod(shape)} pixels, but the "
                f"matrix has {n} columns (shape {sparse.shape}); image_shape must match the "
                "number of columns")
        if range_shape is None:
            range_shape = (m,)
        range_shape = _shape_tuple("range_shape", range_shape, tuple(range(1, 9)))
        if math.prod(range_shape) != m:
            raise ValueError(f"range_shape {range_shape} must hold the matrix's {m} rows, "
                             f"got {math.prod(range_shape)}")
        super().__init__(shape, range_shape)
        self.matrix = sparse

    @classmethod
    def from_npz(cls, path, image_shape, range_shape=None,
                 check: bool = True) -> "SparseMatrixOperator":
        """Load a matrix written by ``scipy.sparse.save_npz`` (see :func:`load_sparse_operator`)."""
        return load_sparse_operator(path, image_shape, range_shape, check=check)

    def _forward(self, x):
        out = self.matrix.matmul(x.reshape(x.shape[0], -1))
        return out.reshape(x.shape[0], *self.range_shape)

    def _adjoint(self, y):
        out = self.matrix.rmatmul(y.reshape(y.shape[0], -1))
        return out.reshape(y.shape[0], *self.domain_shape)

    def to_dense(self, dtype=None, device=None):
        import torch

        out = self.matrix.to_dense(torch.float64 if dtype is None else dtype)
        return out if device is None else out.to(device)

    def extra_repr(self):
        return f"nnz={self.matrix.nnz}"


def load_sparse_operator(path, image_shape, range_shape=None,
                         check: bool = True) -> SparseMatrixOperator:
    """A :class:`SparseMatrixOperator` from a ``scipy.sparse.save_npz`` file.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npz`` file written by ``scipy.sparse.save_npz`` (any sparse format;
        converted to CSR). Rows are measurements, columns pixels in row-major
        order of ``image_shape``.
    image_shape : (H, W) or (C, H, W)
        Must have as many pixels as the matrix has columns.
    range_shape : tuple of int, optional
        Layout of one measurement (default ``(m,)``).
    check : bool
        Check on load that the adjoint is the transpose to
        ``ADJOINT_TOLERANCE`` (float64; costs a power iteration for ``‖A‖``,
        which is cached and used by the reconstructions anyway).

    Returns
    -------
    SparseMatrixOperator

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a scipy sparse ``.npz`` (corrupt, a plain ``numpy``
        archive, ...), has NaN/inf entries, or its columns do not match
        ``image_shape``; the message names the file.
    TypeError
        The matrix is complex.

    Examples
    --------
    >>> import os, tempfile, scipy.sparse as sp
    >>> from bayes_recon.operators import ParallelBeamCT, load_sparse_operator
    >>> path = os.path.join(tempfile.mkdtemp(), "A.npz")
    >>> sp.save_npz(path, ParallelBeamCT(16, 10).matrix.scipy)
    >>> op = load_sparse_operator(path, (16, 16), range_shape=(10, 23))
    >>> op.domain_shape, op.range_shape
    ((1, 16, 16), (10, 23))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sparse matrix file {path} does not exist")
    try:
        matrix = sp.load_npz(path)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable scipy sparse matrix (.npz written by "
                         f"scipy.sparse.save_npz): {type(err).__name__}: {err}") from None
    try:
        op = SparseMatrixOperator(matrix, image_shape, range_shape)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{path}: {err}") from None
    if check:
        error = adjointness_error(op, trials=3)
        if not error < ADJOINT_TOLERANCE:
            raise ValueError(f"{path}: adjointness check failed, relative error {error:.3g} "
                             f"> {ADJOINT_TOLERANCE:g}")
    return op
