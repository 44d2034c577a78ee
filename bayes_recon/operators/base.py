"""The ``LinearOperator`` base class: a batched, differentiable forward model ``A``.

Every forward model maps real images of shape ``(B, *domain_shape)`` to
measurements of shape ``(B, *range_shape)`` (real or complex) and has an exact
adjoint with respect to the *real* inner product

    <A x, y> = sum(Re(conj(A x) * y))  ==  <x, A^T y> = sum(x * A^T y).

Subclasses implement ``_forward`` and ``_adjoint`` on validated inputs; the
base class does validation, the transposed view ``T``, the cached spectral norm
and a dense matrix for small problems.
"""

from __future__ import annotations

import abc
import math

import torch

from .._validation import check_int, check_tensor


class LinearOperator(abc.ABC):
    """A linear forward model ``A`` with an exact adjoint.

    Attributes
    ----------
    domain_shape : tuple of int
        Event shape of an image, ``(C, H, W)``.
    range_shape : tuple of int
        Event shape of a measurement.
    complex_range : bool
        Whether measurements are complex (e.g. MRI k-space).

    Notes
    -----
    ``op(x)`` takes ``x`` of shape ``(B, *domain_shape)`` and returns
    ``(B, *range_shape)``; ``op.adjoint(y)`` the reverse. Both follow the device
    and dtype of their input, are differentiable, and reject non-finite input
    or a shape that does not match (no silent broadcasting).
    """

    domain_shape: tuple[int, ...]
    range_shape: tuple[int, ...]
    complex_range: bool = False

    def __init__(self, domain_shape, range_shape, complex_range: bool = False):
        self.domain_shape = tuple(int(s) for s in domain_shape)
        self.range_shape = tuple(int(s) for s in range_shape)
        self.complex_range = bool(complex_range)
        self._norm: float | None = None

    # ------------------------------------------------------------------ API
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``A``: ``(B, *domain_shape)`` -> ``(B, *range_shape)``."""
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``A``: ``(B, *domain_shape)`` -> ``(B, *range_shape)``."""
        check_tensor("x", x, shape=(None, *self.domain_shape))
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply ``A^T``: ``(B, *range_shape)`` -> ``(B, *domain_shape)`` (real)."""
        check_tensor("y", y, shape=(None, *self.range_shape), allow_complex=self.complex_range)
        if self.complex_range and not y.is_complex():
            raise TypeError(
                f"y must be a complex tensor for {type(self).__name__}, got dtype {y.dtype}"
            )
        if not self.complex_range and y.is_complex():
            raise TypeError(f"y must be a real tensor for {type(self).__name__}, got {y.dtype}")
        return self._adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``A^T A``: ``(B, *domain_shape)`` -> ``(B, *domain_shape)``."""
        return self.adjoint(self.forward(x))

    @property
    def T(self) -> "LinearOperator":
        """The adjoint as an operator of its own (``op.T.T`` is ``op``)."""
        return AdjointOperator(self)

    @property
    def domain_size(self) -> int:
        """Number of unknowns ``n = prod(domain_shape)``."""
        return math.prod(self.domain_shape)

    @property
    def range_size(self) -> int:
        """Number of real measurements ``m`` (complex entries count twice)."""
        return math.prod(self.range_shape) * (2 if self.complex_range else 1)

    def norm(self, iterations: int = 200, tol: float = 1e-10, seed: int = 0) -> float:
        """Spectral norm ``||A||_2`` by power iteration on ``A^T A`` (cached, float64)."""
        if self._norm is None:
            check_int("iterations", iterations, minimum=1)
            gen = torch.Generator().manual_seed(seed)
            dtype = torch.float64
            device = self._buffer_device()
            x = torch.randn((1, *self.domain_shape), generator=gen, dtype=dtype).to(device)
            x = x / x.norm()
            value = 0.0
            for _ in range(iterations):
                z = self._adjoint(self._forward(x))
                new = float(z.norm())
                if new == 0.0:
                    break
                x = z / new
                if abs(new - value) <= tol * new:
                    value = new
                    break
                value = new
            self._norm = math.sqrt(value)
        return self._norm

    def to_dense(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """The matrix of ``A`` as ``(m, n)``, for small problems (tests, exact paths).

        Complex ranges are stacked as ``[Re; Im]`` so that the matrix is real and
        its transpose is the adjoint.
        """
        device = self._buffer_device() if device is None else device
        n = self.domain_size
        eye = torch.eye(n, dtype=dtype, device=device).reshape(n, *self.domain_shape)
        cols = self._forward(eye).reshape(n, -1)
        if self.complex_range:
            cols = torch.cat([cols.real, cols.imag], dim=1)
        return cols.T.contiguous()

    def gram_diagonal(self, dtype: torch.dtype = torch.float64, device=None,
                      chunk_size: int = 256) -> torch.Tensor:
        """``diag(A Aᵀ)`` ``(range_size,)``: the squared norm of each measurement's row.

        Complex ranges are stacked ``[Re; Im]`` as in :meth:`to_dense`. The generic
        version applies the adjoint to unit measurements, ``chunk_size`` at a time
        (``range_size`` adjoints); operators that store their matrix override it.

        Examples
        --------
        >>> import torch
        >>> from bayes_recon.operators import Blur
        >>> op = Blur(8, torch.ones(3, 3) / 9)
        >>> d = op.gram_diagonal()
        >>> bool(torch.allclose(d, (op.to_dense() ** 2).sum(1)))
        True
        """
        check_int("chunk_size", chunk_size, minimum=1)
        device = self._buffer_device() if device is None else device
        m = self.range_size
        half = math.prod(self.range_shape)
        out = torch.empty(m, dtype=dtype, device=device)
        for start in range(0, m, chunk_size):
            k = min(chunk_size, m - start)
            rows = torch.zeros(k, m, dtype=dtype, device=device)
            rows[torch.arange(k, device=device), torch.arange(start, start + k, device=device)] = 1.0
            y = torch.complex(rows[:, :half], rows[:, half:]) if self.complex_range else rows
            cols = self._adjoint(y.reshape(k, *self.range_shape))
            out[start:start + k] = cols.reshape(k, -1).pow(2).sum(1)
        return out

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra = f", {extra}" if extra else ""
        return (
            f"{type(self).__name__}(domain_shape={self.domain_shape}, "
            f"range_shape={self.range_shape}{extra})"
        )

    # ------------------------------------------------------- to implement
    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` on a validated ``(B, *domain_shape)`` tensor."""

    @abc.abstractmethod
    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` on a validated ``(B, *range_shape)`` tensor."""

    def _buffer_device(self) -> torch.device:
        """Device on which the operator's own buffers live (CPU unless overridden)."""
        return torch.device("cpu")


class AdjointOperator(LinearOperator):
    """``A^T`` seen as an operator; only defined for real-range operators."""

    def __init__(self, op: LinearOperator):
        if op.complex_range:
            raise TypeError(
                f"op.T is only defined for real measurements; {type(op).__name__} "
                "has a complex range, use op.adjoint(y) instead"
            )
        super().__init__(op.range_shape, op.domain_shape)
        self.op = op

    @property
    def T(self) -> LinearOperator:
        return self.op

    def norm(self, *args, **kwargs) -> float:
        return self.op.norm(*args, **kwargs)

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    def _buffer_device(self):
        return self.op._buffer_device()


def adjointness_error(op: LinearOperator, trials: int = 5, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> float:
    """Relative adjointness error ``max |<Ax,y> - <x,A^T y>| / (||A|| ||x|| ||y||)``.

    Parameters
    ----------
    op : LinearOperator
    trials : int
        Number of random ``(x, y)`` pairs (standard normal, seeded).
    seed : int
    dtype : torch.dtype
        Real dtype of the test vectors (float64 by default).

    Returns
    -------
    float
        The worst relative error over the trials; ~1e-16 for an exact adjoint
        in float64, ~1e-7 in float32.

    Examples
    --------
    >>> from bayes_recon.operators import Identity, adjointness_error
    >>> adjointness_error(Identity((1, 4, 4))) < 1e-12
    True
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    check_int("trials", trials, minimum=1)
    gen = torch.Generator().manual_seed(seed)
    device = op._buffer_device()
    norm = op.norm()
    worst = 0.0
    for _ in range(trials):
        x = torch.randn((1, *op.domain_shape), generator=gen, dtype=dtype).to(device)
        y = torch.randn((1, *op.range_shape), generator=gen, dtype=dtype)
        if op.complex_range:
            y = torch.complex(y, torch.randn(y.shape, generator=gen, dtype=dtype))
        y = y.to(device)
        ax = op(x)
        lhs = (ax.conj() * y).real.sum() if op.complex_range else (ax * y).sum()
        rhs = (x * op.adjoint(y)).sum()
        scale = max(norm, 1e-30) * float(x.norm()) * float(y.abs().pow(2).sum().sqrt())
        worst = max(worst, abs(float(lhs - rhs)) / scale)
    return worst
