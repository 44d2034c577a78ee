"""Sub-sampled Fourier MRI of a real image, with radial and Cartesian masks.

k-space is *centred*: masks are ``(H, W)`` boolean arrays with the DC
coefficient at ``(H // 2, W // 2)``, as after ``torch.fft.fftshift``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import check_int, check_positive, image_size_pair
from ._buffers import CachedIndex
from .base import LinearOperator


def radial_mask(image_size, n_spokes: int) -> torch.Tensor:
    """Mask of ``n_spokes`` straight lines through the k-space centre.

    Spokes are at angles ``pi * k / n_spokes`` (k = 0 .. n_spokes-1) and are
    rasterised onto the Cartesian grid by nearest-neighbour sampling at
    half-pixel steps.

    Parameters
    ----------
    image_size : int or (H, W)
    n_spokes : int
        Number of full diameters, >= 1.

    Returns
    -------
    torch.Tensor
        Boolean ``(H, W)``, centred.

    Examples
    --------
    >>> from bayes_recon.operators import radial_mask
    >>> m = radial_mask(32, 8)
    >>> m.shape, bool(m[16, 16])
    (torch.Size([32, 32]), True)
    """
    h, w = image_size_pair("image_size", image_size)
    check_int("n_spokes", n_spokes, minimum=1)
    radius = math.hypot(h, w) / 2
    t = np.arange(-radius, radius + 0.5, 0.5)
    theta = np.pi * np.arange(n_spokes) / n_spokes
    rows = np.rint(h // 2 + np.outer(np.sin(theta), t)).astype(int).ravel()
    cols = np.rint(w // 2 + np.outer(np.cos(theta), t)).astype(int).ravel()
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    mask = np.zeros((h, w), dtype=bool)
    mask[rows[keep], cols[keep]] = True
    return torch.from_numpy(mask)


def cartesian_mask(image_size, acceleration: float, center_fraction: float = 0.08,
                   seed: int = 0) -> torch.Tensor:
    """Random phase-encode lines (columns) plus a fully sampled centre band.

    Parameters
    ----------
    image_size : int or (H, W)
    acceleration : float
        Total columns / sampled columns, >= 1.
    center_fraction : float
        Fraction of central columns always sampled, in (0, 1].
    seed : int

    Returns
    -------
    torch.Tensor
        Boolean ``(H, W)``, centred; whole columns are True or False.
    """
    h, w = image_size_pair("image_size", image_size)
    acceleration = check_positive("acceleration", acceleration)
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    center_fraction = check_positive("center_fraction", center_fraction)
    if center_fraction > 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
    n_center = max(1, int(round(center_fraction * w)))
    n_total = max(n_center, int(round(w / acceleration)))
    start = w // 2 - n_center // 2
    columns = np.zeros(w, dtype=bool)
    columns[start:start + n_center] = True
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(~columns)
    chosen = rng.choice(others, size=min(n_total - n_center, others.size), replace=False)
    columns[chosen] = True
    return torch.from_numpy(np.broadcast_to(columns, (h, w)).copy())


class MRI(LinearOperator):
    """``A x = (F x)[mask]``: orthonormal 2-D FFT of a real image, sub-sampled.

    Maps real ``(B, C, H, W)`` to complex ``(B, C, m)`` with ``m = mask.sum()``
    (values in row-major order of the centred mask). The adjoint is taken with
    respect to the real inner product ``Re <A x, y>``, so
    ``A^T y = Re(F^H zero_fill(y))``; with a fully sampled mask it is the exact
    inverse.

    Parameters
    ----------
    image_size : int or (H, W)
    mask : torch.Tensor
        Boolean ``(H, W)``, centred (see :func:`radial_mask`).
    channels : int
    """

    def __init__(self, image_size, mask: torch.Tensor, channels: int = 1):
        h, w = image_size_pair("image_size", image_size)
        check_int("channels", channels, minimum=1)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a boolean torch.Tensor, got {got}")
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"mask must have shape {(h, w)}, got {tuple(mask.shape)}")
        m = int(mask.sum())
        if m < 1:
            raise ValueError("mask must sample at least one k-space point, got all False")
        super().__init__((channels, h, w), (channels, m), complex_range=True)
        self.mask = mask.detach().cpu()
        self._index = CachedIndex(torch.nonzero(self.mask.reshape(-1)).squeeze(1))

    def _forward(self, x):
        k = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))
        return k.flatten(-2).index_select(-1, self._index.on(x))

    def _adjoint(self, y):
        b, c, _ = y.shape
        h, w = self.domain_shape[1:]
        full = y.new_zeros(b, c, h * w).index_copy(-1, self._index.on(y), y)
        full = torch.fft.ifftshift(full.reshape(b, c, h, w), dim=(-2, -1))
        return torch.fft.ifft2(full, norm="ortho").real

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """The zero-filled reconstruction ``A^T y`` (the usual MRI baseline)."""
        return self.adjoint(y)

    def extra_repr(self):
        return f"sampled={self.range_shape[-1]}/{self.mask.numel()}"
