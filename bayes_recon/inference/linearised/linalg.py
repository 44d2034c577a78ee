"""Dense float64 helpers: Cholesky with jitter escalation and its named warning."""

from __future__ import annotations

import warnings

import torch

__all__ = ["CholeskyJitterWarning", "CholeskyError", "robust_cholesky"]


class CholeskyJitterWarning(RuntimeWarning):
    """A Cholesky factorisation needed diagonal jitter to succeed (the jitter is in the message)."""


class CholeskyError(FloatingPointError):
    """A matrix stayed not positive definite for every jitter tried."""


def robust_cholesky(matrix: torch.Tensor, name: str = "matrix",
                    jitters=(1e-10, 1e-8, 1e-6, 1e-4)) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric matrix, adding jitter only if needed.

    Tries the matrix as given, then ``matrix + j · mean(diag) · I`` for each
    relative jitter ``j`` in turn, warning with :class:`CholeskyJitterWarning`
    when one is used; differentiable (the jitter is a constant).

    Parameters
    ----------
    matrix : torch.Tensor
        ``(n, n)``, symmetric (only the lower triangle is read), finite.
    name : str
        Used in messages.
    jitters : sequence of float
        Relative jitters, increasing.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` lower-triangular factor, never NaN.

    Raises
    ------
    CholeskyError
        Non-finite input, or no jitter made the matrix positive definite; the
        message lists the jitters tried.
    """
    if not bool(torch.isfinite(matrix).all()):
        raise CholeskyError(f"{name} contains NaN or inf entries; cannot factorise it")
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0 and bool(torch.isfinite(factor).all()):
        return factor
    scale = float(matrix.diagonal().abs().mean().detach()) or 1.0
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    tried = []
    for j in jitters:
        tried.append(j * scale)
        factor, info = torch.linalg.cholesky_ex(matrix + (j * scale) * eye)
        if int(info) == 0 and bool(torch.isfinite(factor).all()):
            warnings.warn(f"{name} was not numerically positive definite; added jitter "
                          f"{j * scale:.3g} ({j:g} x mean diagonal) to its diagonal",
                          CholeskyJitterWarning, stacklevel=2)
            return factor
    raise CholeskyError(f"{name} is not positive definite: Cholesky failed with absolute "
                        f"jitters {[f'{t:.3g}' for t in tried]} on the diagonal")
