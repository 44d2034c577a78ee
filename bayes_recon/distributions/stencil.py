"""The local stencil of a structured Gaussian and matrix-free products with its factor.

Conventions (shared by every module of :mod:`bayes_recon.distributions`)
-----------------------------------------------------------------------
*Pixel order.* An image of event shape ``(C, H, W)`` is a vector of length
``N = C·H·W`` in row-major order over ``(C, H, W)``: index
``i = c·H·W + h·W + w`` — exactly ``x.flatten(-3)``.

*Spatial offsets.* A radius ``r`` gives ``F = ((2r+1)² − 1) / 2 = 2r(r+1)``
raster-forward offsets ``(dy, dx)``, in this order: the rest of the centre row
to the right, ``(0, 1) … (0, r)``; then each of the ``r`` rows below,
``dy = 1 … r``, spanning ``dx = −r … r``. Every offset points to a later index
in the pixel order, so the factor below is upper triangular.

*Cross-channel pairs.* For ``C > 1`` there are ``P = C(C−1)/2`` same-pixel
weights per pixel, one per channel pair ``(c, c')`` with ``c < c'`` in
lexicographic order ``(0,1), (0,2), …, (0,C−1), (1,2), …``. Channel ``c'``
comes after ``c`` in the pixel order, so these entries are upper triangular too.

*The off_diag tensor* has shape ``(*batch, K, H, W)`` with
``K = C·F + P`` (:func:`num_offdiag`): slot ``c·F + k`` is the weight of
channel ``c`` on spatial offset ``k``; slot ``C·F + p`` is the weight of pair
``p``. This is the layout a convolutional decoder head produces directly.

*The factor U* (upper triangular, ``N × N``)::

    (U v)[c, h, w] = exp(l[c, h, w]) · v[c, h, w]
                   + Σ_k  off[c·F + k, h, w] · v[c, h + dy_k, w + dx_k]
                   + Σ_{c' > c} off[C·F + p(c, c'), h, w] · v[c', h, w]

i.e. the weight stored *at pixel i* sits in *row i* of ``U`` and multiplies
the later pixel ``i + o_k``. Neighbours outside the image are dropped (the
weight stored at a border pixel for an outside neighbour has no effect). The
precision is ``Λ = Uᵀ U``.

Products with ``U`` and ``Uᵀ`` use shifted slices of a zero-padded image
(one fused multiply-add per offset), so they cost O(N·K) and are
differentiable by ordinary autograd.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = [
    "spatial_offsets",
    "num_spatial_offdiag",
    "num_cross_channel",
    "num_offdiag",
    "cross_channel_pairs",
    "cholesky_matvec",
    "cholesky_t_matvec",
    "pattern_outer",
]


@lru_cache(maxsize=None)
def spatial_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """Raster-forward offsets ``(dy, dx)`` of a radius-``radius`` stencil, in slot order.

    Examples
    --------
    >>> spatial_offsets(1)
    ((0, 1), (1, -1), (1, 0), (1, 1))
    """
    right = [(0, dx) for dx in range(1, radius + 1)]
    below = [(dy, dx) for dy in range(1, radius + 1) for dx in range(-radius, radius + 1)]
    return tuple(right + below)


def num_spatial_offdiag(radius: int) -> int:
    """``F = ((2r+1)² − 1) / 2``: spatial off-diagonal weights per pixel and channel."""
    return ((2 * radius + 1) ** 2 - 1) // 2


def num_cross_channel(channels: int) -> int:
    """``P = C(C−1)/2``: same-pixel cross-channel weights per pixel."""
    return channels * (channels - 1) // 2


def num_offdiag(radius: int, channels: int = 1) -> int:
    """``K = C·F + C(C−1)/2``: channels of the ``off_diag`` tensor.

    Examples
    --------
    >>> num_offdiag(2), num_offdiag(1, channels=3)
    (12, 15)
    """
    return channels * num_spatial_offdiag(radius) + num_cross_channel(channels)


@lru_cache(maxsize=None)
def cross_channel_pairs(channels: int) -> tuple[tuple[int, int], ...]:
    """Channel pairs ``(c, c')``, ``c < c'``, in slot order."""
    return tuple((a, b) for a in range(channels) for b in range(a + 1, channels))


def _pair_index(channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = cross_channel_pairs(channels)
    first = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=device)
    second = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=device)
    return first, second


def _split(off_diag: torch.Tensor, channels: int, radius: int):
    """View ``off_diag (*b, K, H, W)`` as spatial ``(*b, C, F, H, W)`` and cross ``(*b, P, H, W)``."""
    f = num_spatial_offdiag(radius)
    h, w = off_diag.shape[-2:]
    spatial = off_diag[..., : channels * f, :, :].reshape(*off_diag.shape[:-3], channels, f, h, w)
    cross = off_diag[..., channels * f :, :, :]
    return spatial, cross


def cholesky_matvec(
    v: torch.Tensor, log_diag: torch.Tensor, off_diag: torch.Tensor, radius: int
) -> torch.Tensor:
    """``U v`` for the factor described in the module docstring, differentiable.

    Parameters
    ----------
    v : torch.Tensor
        ``(*sample, *batch, C, H, W)``; leading dimensions broadcast against the
        parameters' batch dimensions in the usual right-aligned way.
    log_diag : torch.Tensor
        ``(*batch, C, H, W)``.
    off_diag : torch.Tensor
        ``(*batch, K, H, W)`` with ``K = num_offdiag(radius, C)``.
    radius : int

    Returns
    -------
    torch.Tensor
        ``(*sample, *batch, C, H, W)``.

    Notes
    -----
    The backward pass is hand-written (``∂/∂v = Uᵀ g``; the weight of entry
    ``(i, j)`` gets ``Σ g_i v_j``): autograd through the shifted slices would
    zero-fill a full-size gradient buffer per offset, O(N·K²) instead of O(N·K).
    It is itself differentiable (double backward works).
    """
    return _UMatvec.apply(v, log_diag, off_diag, radius)


def _u_matvec(v, log_diag, off_diag, radius):
    c, h, w = log_diag.shape[-3:]
    out = torch.exp(log_diag) * v
    if radius > 0:
        spatial, cross = _split(off_diag, c, radius)
        vp = F.pad(v, (radius, radius, 0, radius))
        for k, (dy, dx) in enumerate(spatial_offsets(radius)):
            shifted = vp[..., dy : dy + h, radius + dx : radius + dx + w]
            out = torch.addcmul(out, spatial[..., k, :, :], shifted)
    else:
        cross = off_diag
    if c > 1:
        first, second = _pair_index(c, v.device)
        prod = cross * v.index_select(-3, second)
        out = out.index_add(-3, first, prod)
    return out


def cholesky_t_matvec(
    g: torch.Tensor, log_diag: torch.Tensor, off_diag: torch.Tensor, radius: int
) -> torch.Tensor:
    """``Uᵀ g``; shapes as in :func:`cholesky_matvec`, differentiable.

    ``(Uᵀ g)_j = exp(l_j) g_j + Σ_k (w_k ⊙ g)_{j − o_k}``: each weighted copy of
    ``g`` is added into a padded buffer shifted by ``+o_k``; what lands in the
    padding belongs to neighbours outside the image and is cropped away.
    """
    return _UTMatvec.apply(g, log_diag, off_diag, radius)


def _ut_matvec(g, log_diag, off_diag, radius):
    c, h, w = log_diag.shape[-3:]
    out = torch.exp(log_diag) * g
    if radius > 0:
        spatial, cross = _split(off_diag, c, radius)
        shape = torch.broadcast_shapes(g.shape, log_diag.shape)
        buf = g.new_zeros(*shape[:-2], h + radius, w + 2 * radius)
        for k, (dy, dx) in enumerate(spatial_offsets(radius)):
            buf[..., dy : dy + h, radius + dx : radius + dx + w] += spatial[..., k, :, :] * g
        out = out + buf[..., :h, radius : radius + w]
    else:
        cross = off_diag
    if c > 1:
        first, second = _pair_index(c, g.device)
        prod = cross * g.index_select(-3, first)
        out = out.index_add(-3, second, prod)
    return out


def _param_grads(left, right, log_diag, off_diag, radius, needs):
    """Pattern gradients reduced to the parameters' shapes (see :func:`pattern_outer`)."""
    if not (needs[1] or needs[2]):
        return None, None
    shape = torch.broadcast_shapes(left.shape, right.shape, log_diag.shape)
    left, right = left.expand(shape), right.expand(shape)
    gl, go = pattern_outer(left, right, log_diag.expand(shape[len(shape) - log_diag.dim():]),
                           radius, len(shape) - log_diag.dim())
    gl = gl.sum_to_size(log_diag.shape) if needs[1] else None
    go = go.sum_to_size(off_diag.shape) if needs[2] else None
    return gl, go


class _UMatvec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, log_diag, off_diag, radius):
        ctx.radius = radius
        ctx.save_for_backward(v, log_diag, off_diag)
        return _u_matvec(v, log_diag, off_diag, radius)

    @staticmethod
    def backward(ctx, grad):
        v, log_diag, off_diag = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_v = None
        if needs[0]:
            grad_v = cholesky_t_matvec(grad, log_diag, off_diag, ctx.radius).sum_to_size(v.shape)
        gl, go = _param_grads(grad, v, log_diag, off_diag, ctx.radius, needs)
        return grad_v, gl, go, None


class _UTMatvec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, log_diag, off_diag, radius):
        ctx.radius = radius
        ctx.save_for_backward(g, log_diag, off_diag)
        return _ut_matvec(g, log_diag, off_diag, radius)

    @staticmethod
    def backward(ctx, grad):
        g, log_diag, off_diag = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_g = None
        if needs[0]:
            grad_g = cholesky_matvec(grad, log_diag, off_diag, ctx.radius).sum_to_size(g.shape)
        gl, go = _param_grads(g, grad, log_diag, off_diag, ctx.radius, needs)
        return grad_g, gl, go, None


def pattern_outer(
    left: torch.Tensor,
    right: torch.Tensor,
    log_diag: torch.Tensor,
    radius: int,
    sum_dims: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``Σ_s leftᵀ U right`` with respect to ``log_diag`` and ``off_diag``.

    Entry ``(i, j)`` of the sparsity pattern of ``U`` receives
    ``Σ_s left_i right_j``; the diagonal is multiplied by ``exp(l_i)``
    (chain rule through ``exp``). Used by the backward pass of the triangular
    solves (there with a minus sign).

    Parameters
    ----------
    left, right : torch.Tensor
        ``(*sample, *batch, C, H, W)``.
    log_diag : torch.Tensor
        ``(*batch, C, H, W)``.
    radius : int
    sum_dims : int
        Number of leading sample dimensions to sum over.

    Returns
    -------
    grad_log_diag : torch.Tensor
        ``(*batch, C, H, W)``.
    grad_off_diag : torch.Tensor
        ``(*batch, K, H, W)``.
    """
    dims = tuple(range(sum_dims))
    c, h, w = log_diag.shape[-3:]

    def total(t):
        return t.sum(dims) if dims else t

    grad_l = total(left * right) * torch.exp(log_diag)
    parts = []
    if radius > 0:
        rp = F.pad(right, (radius, radius, 0, radius))
        spatial = [
            total(left * rp[..., dy : dy + h, radius + dx : radius + dx + w])
            for dy, dx in spatial_offsets(radius)
        ]
        stacked = torch.stack(spatial, dim=-3)  # (*batch, C, F, H, W)
        parts.append(stacked.reshape(*stacked.shape[:-4], -1, h, w))
    if c > 1:
        first, second = _pair_index(c, left.device)
        parts.append(total(left.index_select(-3, first) * right.index_select(-3, second)))
    if parts:
        grad_off = torch.cat(parts, dim=-3)
    else:
        grad_off = grad_l.new_zeros(*grad_l.shape[:-3], 0, h, w)
    return grad_l, grad_off
