"""Classical reconstructions: Tikhonov (CG) and total variation (Chambolle–Pock)."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .._validation import check_int, check_positive, check_tensor
from .base import LinearOperator
from .cg import conjugate_gradient


def _check_problem(op, y):
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
    check_tensor("y", y, shape=(None, *op.range_shape), allow_complex=op.complex_range)
    if op.complex_range != y.is_complex():
        kind = "complex" if op.complex_range else "real"
        raise TypeError(f"y must be {kind} for {type(op).__name__}, got dtype {y.dtype}")


def tikhonov(op: LinearOperator, y: torch.Tensor, weight: float, tol: float = 1e-8,
             max_iter: int = 1000) -> torch.Tensor:
    """Minimise ``||A x - y||² + weight ||x||²`` by CG on the normal equations.

    Solved in float64 as ``(AᵀA + weight I) x = Aᵀ y``; returned in the real
    dtype of ``y``.

    Parameters
    ----------
    op : LinearOperator
    y : torch.Tensor
        ``(B, *op.range_shape)``.
    weight : float
        Regularisation weight, > 0.
    tol, max_iter
        CG stopping rule (a :class:`CGConvergenceWarning` if not met).

    Returns
    -------
    torch.Tensor
        ``(B, *op.domain_shape)``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity, tikhonov
    >>> y = torch.ones(1, 1, 2, 2)
    >>> tikhonov(Identity((1, 2, 2)), y, weight=1.0)[0, 0, 0, 0].item()
    0.5
    """
    _check_problem(op, y)
    weight = check_positive("weight", weight)
    out_dtype = y.real.dtype if y.is_complex() else y.dtype
    y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
    rhs = op.adjoint(y64)
    result = conjugate_gradient(lambda v: op.normal(v) + weight * v, rhs, tol=tol,
                                max_iter=max_iter)
    return result.x.to(out_dtype)


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with Neumann boundary: ``(B, C, H, W) -> (B, 2, C, H, W)``."""
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([dy, dx], dim=1)


def image_divergence(g: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of :func:`image_gradient`: ``(B, 2, C, H, W) -> (B, C, H, W)``."""
    gy, gx = g[:, 0], g[:, 1]
    div = torch.zeros_like(gy)
    div[..., :-1, :] += gy[..., :-1, :]
    div[..., 1:, :] -= gy[..., :-1, :]
    div[..., :, :-1] += gx[..., :, :-1]
    div[..., :, 1:] -= gx[..., :, :-1]
    return div


def total_variation(x: torch.Tensor, isotropic: bool = True, eps: float = 0.0) -> torch.Tensor:
    """Total variation per image, ``(B, C, H, W) -> (B,)``, on :func:`image_gradient`.

    The library's one TV (forward differences, Neumann boundary, summed over
    pixels and channels):

    * isotropic (default; the TV of :func:`tv_reconstruction`):
      ``sum_ij sqrt(dy_ij² + dx_ij² + eps)``;
    * anisotropic (``isotropic=False``; the DIP-CT papers' regulariser):
      ``sum_ij |dy_ij| + |dx_ij|``.

    ``eps > 0`` keeps the isotropic gradient finite where the image is flat
    (``sqrt`` has an infinite slope at 0); it adds ``sqrt(eps)`` per pixel.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1, 1, 4, 4); x[..., :, 2:] = 1.0   # one vertical edge, 4 rows long
    >>> total_variation(x), total_variation(x, isotropic=False)
    (tensor([4.]), tensor([4.]))
    >>> d = torch.zeros(1, 1, 2, 2); d[..., 0, 0] = 1.0     # both differences at (0, 0) are -1
    >>> round(total_variation(d).item(), 4), total_variation(d, isotropic=False).item()
    (1.4142, 2.0)
    """
    check_tensor("x", x, ndim=4)
    eps = float(eps)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    g = image_gradient(x)
    if not isotropic:
        return g.abs().flatten(1).sum(1)
    return (g.pow(2).sum(1) + eps).sqrt().flatten(1).sum(1)


def tv_reconstruction(
    op: LinearOperator,
    y: torch.Tensor,
    weight: float,
    iterations: int = 500,
    nonnegative: bool = True,
    x0: torch.Tensor | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Minimise ``½||A x - y||² + weight · TV(x)`` by Chambolle–Pock.

    Isotropic TV with forward differences; optional non-negativity. The problem
    is solved in the equivalent form with ``A / ||A||`` (so ``||K||² ≤ 1 + 8``
    for ``K = [A/||A||; ∇]``) and steps ``τ = σ = 0.99 / 3``.

    Parameters
    ----------
    op : LinearOperator
    y : torch.Tensor
        ``(B, *op.range_shape)``, real or complex as the operator says.
    weight : float
        TV weight, > 0.
    iterations : int
        Primal–dual iterations, >= 1.
    nonnegative : bool
        Project the image onto ``x >= 0``.
    x0 : torch.Tensor, optional
        ``(B, *op.domain_shape)`` starting image (zeros by default).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    torch.Tensor
        ``(B, *op.domain_shape)`` in the real dtype of ``y``.

    Examples
    --------
    >>> import torch
    >>> from bayes_recon.operators import Identity, tv_reconstruction
    >>> y = torch.zeros(1, 1, 8, 8); y[..., 2:6, 2:6] = 1.0
    >>> x = tv_reconstruction(Identity((1, 8, 8)), y, weight=0.01, progress=False)
    >>> float((x - y).abs().max()) < 0.1
    True
    """
    _check_problem(op, y)
    weight = check_positive("weight", weight)
    check_int("iterations", iterations, minimum=1)
    real_dtype = y.real.dtype if y.is_complex() else y.dtype
    if x0 is None:
        x = torch.zeros((y.shape[0], *op.domain_shape), dtype=real_dtype, device=y.device)
    else:
        x = check_tensor("x0", x0, shape=(y.shape[0], *op.domain_shape)).to(real_dtype).clone()
    # Rescale A to unit norm (and y, weight to match): the minimiser is unchanged,
    # and the data and TV blocks get comparable step sizes, which CT needs.
    a = op.norm()
    y = y / a
    weight = weight / a**2
    step = 0.99 / math.sqrt(1.0 + 8.0)
    x_bar = x.clone()
    p = torch.zeros_like(y)
    q = torch.zeros((y.shape[0], 2, *op.domain_shape), dtype=real_dtype, device=y.device)
    with torch.no_grad():
        for _ in tqdm(range(iterations), desc="TV (Chambolle–Pock)", disable=not progress,
                      leave=False):
            p = (p + step * (op._forward(x_bar) / a - y)) / (1.0 + step)
            q = q + step * image_gradient(x_bar)
            # Pixel-wise projection onto the l2 ball of radius `weight` (isotropic TV dual).
            q = q / (q.pow(2).sum(1, keepdim=True).sqrt() / weight).clamp_min(1.0)
            x_new = x - step * (op._adjoint(p) / a - image_divergence(q))
            if nonnegative:
                x_new = x_new.clamp_min(0.0)
            x_bar = 2 * x_new - x
            x = x_new
    return x


def rough_reconstruction(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """A fast first guess: FBP where the operator has one, else ``Aᵀ y / ||A||²``.

    For operators that are (partial) isometries up to scale (MRI, inpainting,
    identity, downsampling) this is the zero-filled / nearest-neighbour
    reconstruction; it is what networks and MAP solvers start from.

    Returns
    -------
    torch.Tensor
        ``(B, *op.domain_shape)`` in the real dtype of ``y``.
    """
    _check_problem(op, y)
    if hasattr(op, "fbp"):
        return op.fbp(y)
    return op.adjoint(y) / op.norm() ** 2


def rough_noise_std(op: LinearOperator, y: torch.Tensor) -> float:
    """RMS of the data residual of :func:`rough_reconstruction`: a (high) guess at σ.

    For setting regularisation weights when σ is unknown; an overestimate only makes
    those weights somewhat stronger.
    """
    with torch.no_grad():
        r = op(rough_reconstruction(op, y)) - y
    return float(r.abs().pow(2).mean().sqrt())
