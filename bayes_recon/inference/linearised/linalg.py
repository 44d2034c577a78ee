"""Dense float64 helpers: Cholesky with jitter escalation, and recording numerical warnings."""

from __future__ import annotations

import contextlib
import warnings

import torch

from .config import NumericalRecord

__all__ = ["CholeskyJitterWarning", "CholeskyError", "robust_cholesky", "recording_warnings"]


class CholeskyJitterWarning(RuntimeWarning):
    """A Cholesky factorisation needed diagonal jitter to succeed (the jitter is in the message)."""


class CholeskyError(FloatingPointError):
    """A matrix stayed not positive definite for every jitter tried."""


def robust_cholesky(matrix: torch.Tensor, name: str = "matrix",
                    jitters=(1e-10, 1e-8, 1e-6, 1e-4), return_jitter: bool = False):
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
    return_jitter : bool
        Also return the absolute jitter added (0.0 if none).

    Returns
    -------
    torch.Tensor
        ``(n, n)`` lower-triangular factor, never NaN.
    float
        Only with ``return_jitter``: the absolute diagonal jitter used.

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
        return (factor, 0.0) if return_jitter else factor
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
            return (factor, j * scale) if return_jitter else factor
    raise CholeskyError(f"{name} is not positive definite: Cholesky failed with absolute "
                        f"jitters {[f'{t:.3g}' for t in tried]} on the diagonal")


@contextlib.contextmanager
def recording_warnings(record: NumericalRecord, reemit: bool = True, collect: list | None = None):
    """Record the numerical warnings (``RuntimeWarning`` subclasses) raised inside the block.

    linear_operator reports CG short of tolerance only as a ``NumericalWarning``;
    catching it here keeps it in ``record`` instead of losing it. With
    ``reemit`` each caught warning (numerical or not) is issued again on exit
    (same category, message and origin; also when the block raised) so the
    user's filters still see it; otherwise the caught warnings are appended to
    ``collect`` and the caller reports them (see :func:`reemit_summary`).
    """
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Numerical trouble is always recorded; other warnings keep the user's filters.
            warnings.simplefilter("always", RuntimeWarning)
            yield record
    finally:
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                record.add_warning(w)
            if reemit:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            elif collect is not None:
                collect.append(w)


def reemit_summary(caught: list, what: str) -> None:
    """Re-issue the first warning of each category in ``caught`` once, with the count.

    Used where one warning per evaluation would repeat hundreds of times (L-BFGS).
    """
    first: dict = {}
    for w in caught:
        first.setdefault(w.category, [w, 0])[1] += 1
    for category, (w, count) in first.items():
        message = f"{w.message} [{count} warning(s) of this kind during {what}; recorded in the result]"
        warnings.warn_explicit(message, category, w.filename, w.lineno)
