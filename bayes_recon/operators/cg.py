"""Batched conjugate gradients for symmetric positive-definite systems."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .._validation import check_int, check_positive


class CGConvergenceWarning(RuntimeWarning):
    """Conjugate gradients stopped before reaching the requested tolerance."""


@dataclass(frozen=True)
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes
    ----------
    x : torch.Tensor
        Solution, same shape as ``b``.
    converged : bool
        Whether every system in the batch reached ``tol``.
    relative_residual : torch.Tensor
        ``||b - M x|| / ||b||`` per batch element, shape ``(B,)``.
    iterations : int
    """

    x: torch.Tensor
    converged: bool
    relative_residual: torch.Tensor
    iterations: int


def _dot(a, b):
    return (a * b).flatten(1).sum(1)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 500,
    preconditioner: Callable[[torch.Tensor], torch.Tensor] | None = None,
    warn: bool = True,
) -> CGResult:
    """Solve ``M x = b`` for SPD ``M`` by (preconditioned) conjugate gradients.

    Each leading-dimension slice ``b[i]`` is an independent system (batched
    scalars), so ``matvec`` must act slice-wise, as operators do.

    Parameters
    ----------
    matvec : callable
        ``v -> M v`` on tensors shaped like ``b``.
    b : torch.Tensor
        ``(B, ...)`` right-hand sides.
    x0 : torch.Tensor, optional
        Initial guess (zeros by default).
    tol : float
        Relative residual ``||b - M x|| / ||b||`` to reach.
    max_iter : int
    preconditioner : callable, optional
        ``r -> P^{-1} r`` with ``P`` SPD.
    warn : bool
        Emit :class:`CGConvergenceWarning` (with the residual) when not converged.

    Returns
    -------
    CGResult

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import conjugate_gradient
    >>> M = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> res = conjugate_gradient(lambda v: v @ M, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    >>> torch.allclose(res.x @ M, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    True
    """
    tol = check_positive("tol", tol)
    check_int("max_iter", max_iter, minimum=1)
    precond = preconditioner or (lambda r: r)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    b_norm = b.flatten(1).norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    z = precond(r)
    p = z.clone()
    rz = _dot(r, z)
    shape = (-1,) + (1,) * (b.dim() - 1)
    rel = r.flatten(1).norm(dim=1) / b_norm
    it = 0
    while it < max_iter and bool((rel > tol).any()):
        mp = matvec(p)
        pmp = _dot(p, mp)
        active = rel > tol
        # Finished systems take zero steps, so they stay exactly where they are.
        alpha = torch.where(active & (pmp > 0), rz / torch.where(pmp > 0, pmp, 1.0), 0.0)
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * mp
        z = precond(r)
        rz_new = _dot(r, z)
        beta = torch.where(active & (rz != 0), rz_new / torch.where(rz != 0, rz, 1.0), 0.0)
        p = z + beta.reshape(shape) * p
        rz = rz_new
        rel = r.flatten(1).norm(dim=1) / b_norm
        it += 1
    converged = bool((rel <= tol).all())
    if not torch.isfinite(x).all():
        raise FloatingPointError("conjugate_gradient produced non-finite values; is M SPD?")
    if not converged and warn:
        warnings.warn(
            f"CG stopped after {it} iterations with relative residual "
            f"{float(rel.max()):.3e} > tol={tol:.1e}",
            CGConvergenceWarning,
            stacklevel=2,
        )
    return CGResult(x=x, converged=converged, relative_residual=rel, iterations=it)
