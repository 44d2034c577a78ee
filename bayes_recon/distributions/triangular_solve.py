"""Sparse triangular solves with the structured factor ``U``, differentiable.

The main path builds, for each batch element, the scipy sparse matrix of ``U``
(layout and orientation: see :mod:`bayes_recon.distributions.stencil`) and calls
:func:`scipy.sparse.linalg.spsolve_triangular` once with every sample as a
right-hand side. It runs in float64 on the CPU and moves the result back to
the device and dtype of the inputs.

To skip scipy's rescaling of the diagonal, the matrix handed to scipy is the
unit-diagonal ``Û = D⁻¹ U`` with ``D = diag(exp(l))``:
``U x = b  ⇔  Û x = D⁻¹ b`` and ``Uᵀ y = b  ⇔  y = D⁻¹ Û⁻ᵀ b``.

Gradients (a custom :class:`torch.autograd.Function`). For ``ε = U⁻¹ u`` and
an upstream gradient ``g = ∂L/∂ε``::

    a = U⁻ᵀ g,    ∂L/∂u = a,    ∂L/∂U_ij = −a_i ε_j   (on the pattern of U)

and for ``y = U⁻ᵀ b``: ``a = U⁻¹ g``, ``∂L/∂b = a``, ``∂L/∂U_ij = −y_i a_j``.
The pattern entries are mapped back to ``log_diag`` (times ``exp(l_i)``) and
``off_diag`` by :func:`~bayes_recon.distributions.stencil.pattern_outer`.
Second derivatives are not implemented (the backward is once-differentiable).

A pure-torch fallback (``solver="dense"``) forms the dense ``U`` and uses
:func:`torch.linalg.solve_triangular`; it runs on any device, is differentiable
by autograd, and is meant for small images (at most :data:`DENSE_MAX_PIXELS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve_triangular
from torch.autograd.function import once_differentiable

from .stencil import cross_channel_pairs, num_offdiag, num_spatial_offdiag, pattern_outer, spatial_offsets

__all__ = [
    "DENSE_MAX_PIXELS",
    "SOLVERS",
    "factor_matrix",
    "dense_cholesky",
    "solve_cholesky",
]

#: Largest event size ``N = C·H·W`` for which dense ``N × N`` matrices are formed.
DENSE_MAX_PIXELS = 4096
#: Accepted values of ``solver``.
SOLVERS = ("scipy", "dense")


@dataclass(frozen=True)
class _Pattern:
    """Sparsity pattern of ``U`` in CSC order (cached per event shape and radius)."""

    n: int
    indptr: np.ndarray  # (n + 1,) int32
    indices: np.ndarray  # (nnz,) int32, row of each entry
    diag_pos: np.ndarray  # positions of diagonal entries in data, in pixel order
    off_pos: np.ndarray  # positions of off-diagonal entries in data
    off_src: np.ndarray  # their slot in off_diag.flatten(-3)
    off_rows: np.ndarray  # their row (the pixel that stores the weight)
    coo_rows: np.ndarray  # all entries, pattern order: diagonal then off-diagonal
    coo_cols: np.ndarray


@lru_cache(maxsize=32)
def _pattern(c: int, h: int, w: int, radius: int) -> _Pattern:
    n = c * h * w
    idx = np.arange(n).reshape(c, h, w)
    f = num_spatial_offdiag(radius)
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols, src = [], [], []
    for k, (dy, dx) in enumerate(spatial_offsets(radius)):
        ok = (hh + dy < h) & (ww + dx >= 0) & (ww + dx < w)
        y0, x0 = hh[ok], ww[ok]
        for ch in range(c):
            rows.append(idx[ch, y0, x0])
            cols.append(idx[ch, y0 + dy, x0 + dx])
            src.append(((ch * f + k) * h + y0) * w + x0)
    for p, (a, b) in enumerate(cross_channel_pairs(c)):
        rows.append(idx[a].ravel())
        cols.append(idx[b].ravel())
        src.append(((c * f + p) * h + hh.ravel()) * w + ww.ravel())
    diag = np.arange(n)
    off_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    off_cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    off_src = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    all_rows = np.concatenate([diag, off_rows])
    all_cols = np.concatenate([diag, off_cols])
    order = np.lexsort((all_rows, all_cols))  # CSC: by column, then row
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(all_cols, minlength=n))])
    return _Pattern(
        n=n,
        indptr=indptr.astype(np.int32),
        indices=all_rows[order].astype(np.int32),
        diag_pos=pos[:n],
        off_pos=pos[n:],
        off_src=off_src,
        off_rows=off_rows,
        coo_rows=all_rows,
        coo_cols=all_cols,
    )


def factor_matrix(log_diag: np.ndarray, off_diag: np.ndarray, radius: int, unit: bool = False):
    """scipy CSC matrix of ``U`` (or of ``Û = D⁻¹ U`` if ``unit``) for one parameter set.

    Parameters
    ----------
    log_diag : numpy.ndarray
        ``(C, H, W)``.
    off_diag : numpy.ndarray
        ``(K, H, W)``.
    radius : int
    unit : bool
        Return the unit-diagonal, row-scaled ``D⁻¹ U``.

    Returns
    -------
    scipy.sparse.csc_matrix
        ``(N, N)``, float64, upper triangular, pattern of the full stencil
        (entries of zero weight are stored).
    """
    c, h, w = log_diag.shape
    pat = _pattern(c, h, w, radius)
    ld = np.asarray(log_diag, dtype=np.float64).ravel()
    off = np.asarray(off_diag, dtype=np.float64).ravel()
    data = np.empty(pat.indices.size, dtype=np.float64)
    if unit:
        data[pat.diag_pos] = 1.0
        data[pat.off_pos] = off[pat.off_src] * np.exp(-ld[pat.off_rows])
    else:
        data[pat.diag_pos] = np.exp(ld)
        data[pat.off_pos] = off[pat.off_src]
    return sp.csc_matrix((data, pat.indices, pat.indptr), shape=(pat.n, pat.n))


def dense_cholesky(log_diag: torch.Tensor, off_diag: torch.Tensor, radius: int) -> torch.Tensor:
    """Dense ``U``, ``(*batch, N, N)``, differentiable, on the parameters' device.

    Raises ``ValueError`` when ``N = C·H·W`` exceeds :data:`DENSE_MAX_PIXELS`.
    """
    c, h, w = log_diag.shape[-3:]
    n = c * h * w
    if n > DENSE_MAX_PIXELS:
        raise ValueError(
            f"dense matrices are limited to N = C*H*W <= {DENSE_MAX_PIXELS} pixels, "
            f"got event shape {(c, h, w)} (N = {n})"
        )
    pat = _pattern(c, h, w, radius)
    dev = log_diag.device
    batch = log_diag.shape[:-3]
    off = off_diag.reshape(*batch, -1)[..., torch.as_tensor(pat.off_src, device=dev)]
    vals = torch.cat([torch.exp(log_diag).reshape(*batch, n), off], dim=-1)
    lin = torch.as_tensor(pat.coo_rows * n + pat.coo_cols, device=dev)
    dense = vals.new_zeros(*batch, n * n).index_add(-1, lin, vals)
    return dense.reshape(*batch, n, n)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _build_unit_factors(log_diag: torch.Tensor, off_diag: torch.Tensor, radius: int):
    c, h, w = log_diag.shape[-3:]
    ld = _to_numpy(log_diag).reshape(-1, c, h, w)
    off = _to_numpy(off_diag).reshape(ld.shape[0], -1, h, w)
    mats = [factor_matrix(ld[b], off[b], radius, unit=True) for b in range(ld.shape[0])]
    dinv = np.exp(-ld.reshape(ld.shape[0], -1))
    return mats, dinv


def _scipy_solve(mats, dinv, rhs: np.ndarray, transpose: bool) -> np.ndarray:
    """Solve with every batch element; ``rhs`` is ``(S, nb, N)``, returns the same shape."""
    out = np.empty_like(rhs)
    for b, mat in enumerate(mats):
        d = dinv[b][:, None]
        rhs_b = rhs[:, b, :].T  # (N, S): all samples in one call
        if not transpose:
            out[:, b, :] = spsolve_triangular(mat, rhs_b * d, lower=False, unit_diagonal=True).T
        else:
            # Û⁻ᵀ: the CSR matrix with Û's CSC arrays is Ûᵀ (no copy).
            mat_t = sp.csr_matrix((mat.data, mat.indices, mat.indptr), shape=mat.shape)
            out[:, b, :] = (spsolve_triangular(mat_t, rhs_b, lower=True, unit_diagonal=True) * d).T
    return out


def _check_finite(sol: np.ndarray) -> None:
    # Back-substitution can grow geometrically when off-diagonal weights dwarf
    # the diagonal; report that instead of handing back inf/NaN samples.
    if not np.isfinite(sol).all():
        raise FloatingPointError(
            "sparse triangular solve with U overflowed (non-finite result): the factor is too "
            "ill-conditioned — off-diagonal weights far larger than exp(log_diag)"
        )


class _TriangularSolve(torch.autograd.Function):
    """``U⁻¹ rhs`` (or ``U⁻ᵀ rhs``) by scipy, with gradients for rhs and the parameters."""

    @staticmethod
    def forward(ctx, rhs, log_diag, off_diag, radius, transpose):
        n_sample = rhs.dim() - log_diag.dim()
        nb = int(np.prod(log_diag.shape[:-3], dtype=np.int64))
        n = log_diag.shape[-3:].numel()
        mats, dinv = _build_unit_factors(log_diag, off_diag, radius)
        arr = _to_numpy(rhs).reshape(-1, nb, n)
        sol = _scipy_solve(mats, dinv, arr, transpose)
        _check_finite(sol)
        out = torch.from_numpy(sol).to(device=rhs.device, dtype=rhs.dtype).reshape(rhs.shape)
        ctx.mats, ctx.dinv = mats, dinv
        ctx.radius, ctx.transpose, ctx.n_sample, ctx.nb = radius, transpose, n_sample, nb
        ctx.save_for_backward(out, log_diag)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        out, log_diag = ctx.saved_tensors
        n = log_diag.shape[-3:].numel()
        arr = _to_numpy(grad).reshape(-1, ctx.nb, n)
        a = _scipy_solve(ctx.mats, ctx.dinv, arr, not ctx.transpose)
        _check_finite(a)
        a = torch.from_numpy(a).to(device=grad.device, dtype=grad.dtype).reshape(grad.shape)
        grad_l = grad_off = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            left, right = (out, a) if ctx.transpose else (a, out)
            grad_l, grad_off = pattern_outer(left, right, log_diag, ctx.radius, ctx.n_sample)
            grad_l, grad_off = -grad_l.to(log_diag.dtype), -grad_off.to(log_diag.dtype)
        grad_rhs = a if ctx.needs_input_grad[0] else None
        return grad_rhs, grad_l, grad_off, None, None


def _dense_solve(rhs, log_diag, off_diag, radius, transpose):
    u = dense_cholesky(log_diag, off_diag, radius)
    batch = log_diag.shape[:-3]
    n = u.shape[-1]
    b = rhs.reshape(-1, *batch, n).movedim(0, -1)  # (*batch, N, S)
    if transpose:
        x = torch.linalg.solve_triangular(u.mT, b, upper=False)
    else:
        x = torch.linalg.solve_triangular(u, b, upper=True)
    return x.movedim(-1, 0).reshape(rhs.shape)


def solve_cholesky(
    rhs: torch.Tensor,
    log_diag: torch.Tensor,
    off_diag: torch.Tensor,
    radius: int,
    transpose: bool = False,
    solver: str = "scipy",
) -> torch.Tensor:
    """``U⁻¹ rhs`` (or ``U⁻ᵀ rhs`` if ``transpose``), differentiable in all tensors.

    Parameters
    ----------
    rhs : torch.Tensor
        ``(*sample, *batch, C, H, W)``; its trailing dimensions must equal the
        shape of ``log_diag`` exactly (no broadcasting).
    log_diag : torch.Tensor
        ``(*batch, C, H, W)``.
    off_diag : torch.Tensor
        ``(*batch, K, H, W)``.
    radius : int
    transpose : bool
        Solve with ``Uᵀ`` instead of ``U``.
    solver : {"scipy", "dense"}
        ``"scipy"``: sparse solve on the CPU, all samples of one batch element
        in one call. ``"dense"``: torch dense triangular solve (small images,
        any device).

    Returns
    -------
    torch.Tensor
        Same shape, device and dtype as ``rhs``.

    Examples
    --------
    >>> import torch
    >>> ld, off = torch.zeros(1, 3, 3), 0.1 * torch.ones(4, 3, 3)
    >>> u = torch.randn(5, 1, 3, 3)
    >>> eps = solve_cholesky(u, ld, off, radius=1)
    >>> from bayes_recon.distributions.stencil import cholesky_matvec
    >>> torch.allclose(cholesky_matvec(eps, ld, off, 1), u, atol=1e-6)
    True
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    k = num_offdiag(radius, log_diag.shape[-3])
    if off_diag.shape != (*log_diag.shape[:-3], k, *log_diag.shape[-2:]):
        raise ValueError(
            f"off_diag must have shape {(*log_diag.shape[:-3], k, *log_diag.shape[-2:])} "
            f"for radius={radius}, got {tuple(off_diag.shape)}"
        )
    if rhs.dim() < log_diag.dim() or rhs.shape[rhs.dim() - log_diag.dim():] != log_diag.shape:
        raise ValueError(
            f"rhs must have shape (*sample, {', '.join(map(str, log_diag.shape))}), "
            f"got {tuple(rhs.shape)}"
        )
    if solver == "dense":
        return _dense_solve(rhs, log_diag, off_diag, radius, transpose)
    return _TriangularSolve.apply(rhs, log_diag, off_diag, radius, transpose)
